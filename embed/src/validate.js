// Shape checks for every postMessage that crosses a frame or thread boundary of the harness:
// broker → runner, runner → broker, and worker → runner (the one that carries untrusted output).
//
// Each check returns the message in a normalised form, or null when it is malformed. Callers drop
// malformed messages from trusted peers and treat one from a worker as kernel misbehaviour. Origin
// and source checks happen at the listeners (they need the event); these only look at data.

import { checkEncoded } from "./scan.js";

export const MAX_WORKERS = 64;
export const MAX_MESSAGE = 4096; // error message characters kept from a kernel
export const MAX_STACK = 16384; // stack trace characters kept from a kernel

const isObject = (v) => typeof v === "object" && v !== null && !Array.isArray(v);
const isId = (v) => Number.isSafeInteger(v) && v >= 0;
const isMs = (v) => typeof v === "number" && Number.isFinite(v) && v >= 0;
const isGen = (v) => Number.isSafeInteger(v) && v >= 0;

function throttleOf(msg) {
  const { workers, duty, depth } = msg;
  if (!Number.isInteger(workers) || workers < 1 || workers > MAX_WORKERS) return null;
  if (typeof duty !== "number" || !(duty > 0 && duty <= 1)) return null;
  if (depth !== 1 && depth !== 2) return null;
  return { workers, duty, depth };
}

// broker → runner
export function checkBrokerMessage(msg) {
  if (!isObject(msg)) return null;
  switch (msg.type) {
    case "start": {
      const throttle = throttleOf(msg);
      const { gen, kernel, timeout, maxResultBytes, checkpointMaxBytes = 0 } = msg;
      if (!throttle || !isGen(gen) || typeof kernel !== "string" || typeof msg.static !== "string") return null;
      if (typeof timeout !== "number" || !(timeout > 0) || !Number.isInteger(maxResultBytes) || maxResultBytes < 1) return null;
      if (!Number.isInteger(checkpointMaxBytes) || checkpointMaxBytes < 0) return null;
      return { type: "start", gen, kernel, static: msg.static, timeout, maxResultBytes, checkpointMaxBytes, ...throttle };
    }
    case "tasks": {
      if (!isGen(msg.gen) || !Array.isArray(msg.tasks)) return null;
      for (const task of msg.tasks) {
        if (!Array.isArray(task) || task.length < 2 || task.length > 3 || !isId(task[0]) || !(task[1] instanceof ArrayBuffer)) return null;
        if (task.length === 3 && !(task[2] instanceof ArrayBuffer)) return null; // the state it resumes from
      }
      return { type: "tasks", gen: msg.gen, tasks: msg.tasks };
    }
    case "throttle": {
      // `keep` (optional): the tasks to finish; every other one was handed back (see runner.js).
      const throttle = throttleOf(msg);
      if (!throttle) return null;
      if (msg.keep === undefined) return { type: "throttle", ...throttle };
      if (!Array.isArray(msg.keep) || msg.keep.length > throttle.workers || !msg.keep.every(isId)) return null;
      return { type: "throttle", ...throttle, keep: msg.keep };
    }
    case "stop":
      return { type: "stop" };
    default:
      return null;
  }
}

// The nonce the broker gives its runner (in the runner's URL fragment): every message between the
// two carries it, and one without it is dropped. 128 random bits, as 32 lowercase hex digits.
export function makeNonce(random = globalThis.crypto) {
  const bytes = new Uint8Array(16);
  random.getRandomValues(bytes);
  return Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
}

export function carriesNonce(msg, nonce) {
  return isObject(msg) && typeof nonce === "string" && nonce.length === 32 && msg.nonce === nonce;
}

// runner → broker: `ready` once (or `refused`: its policy is not in force); `alive` every second (the broker restarts a runner that falls
// silent: its process crashed, say, from a kernel's memory bomb); `report` with answered tasks and
// the tasks now computing. `items` are [id, ok, payload, ms]: ok → payload is the result's msgpack
// bytes (an ArrayBuffer) or null for "no result"; not ok → payload is [message, stack].
export function checkRunnerMessage(msg, maxResultBytes = Infinity) {
  if (!isObject(msg)) return null;
  if (msg.type === "ready" || msg.type === "refused" || msg.type === "alive") return { type: msg.type };
  if (msg.type !== "report" || !isGen(msg.gen) || !Array.isArray(msg.items) || !Array.isArray(msg.running)) return null;
  if (msg.running.length > MAX_WORKERS || !msg.running.every(isId)) return null;
  for (const item of msg.items) {
    if (!Array.isArray(item) || item.length !== 4 || !isId(item[0]) || typeof item[1] !== "boolean" || !isMs(item[3])) {
      return null;
    }
    const payload = item[2];
    if (item[1]) {
      if (payload !== null && !(payload instanceof ArrayBuffer && payload.byteLength <= maxResultBytes)) return null;
    } else if (!isErrorPayload(payload)) {
      return null;
    }
  }
  const notes = msg.notes ?? [];
  if (!Array.isArray(notes) || !notes.every(isNote)) return null;
  return { type: "report", gen: msg.gen, items: msg.items, running: msg.running, notes };
}

// [id, 2, fraction] (ctx.progress) or [id, 3, ArrayBuffer] (ctx.checkpoint's msgpack state).
function isNote(note) {
  if (!Array.isArray(note) || note.length !== 3 || !isId(note[0])) return false;
  if (note[1] === 2) return typeof note[2] === "number" && note[2] >= 0 && note[2] <= 1;
  return note[1] === 3 && note[2] instanceof ArrayBuffer;
}

// worker → runner, while a task runs: a ctx note ([id, 2, fraction, 0] or [id, 3, ArrayBuffer, 0]).
// Returns null when `msg` is no note (it may be an answer), {bad: reason} for a malformed one, {drop}
// for one about a task the worker is not computing (a kernel's timer outliving its task), else
// {id, kind, payload}. A checkpoint must be valid msgpack of at most `maxBytes`.
export function checkWorkerNote(msg, expectedId, maxBytes) {
  if (!Array.isArray(msg) || msg.length !== 4 || (msg[1] !== 2 && msg[1] !== 3)) return null;
  const [id, kind, payload] = msg;
  if (kind === 2 && !(typeof payload === "number" && payload >= 0 && payload <= 1)) return { bad: "the kernel's worker sent a malformed progress" };
  if (kind === 3) {
    if (!(payload instanceof ArrayBuffer) || payload.byteLength > maxBytes) return { bad: "the kernel's worker sent a malformed checkpoint" };
    const reason = checkEncoded(new Uint8Array(payload));
    if (reason) return { bad: `checkpoint failed validation: ${reason}` };
  }
  if (id !== expectedId) return { drop: true };
  return { id, kind, payload };
}

function isErrorPayload(payload) {
  return Array.isArray(payload) && payload.length === 2 && typeof payload[0] === "string" && typeof payload[1] === "string";
}

// worker → runner: the only channel out of the kernel's thread. A valid answer is
// [id, 1, ArrayBuffer | null, ms] or [id, 0, [message, stack], ms] for the task the worker is
// computing (`expectedId`), with a well-formed result of at most `maxResultBytes`.
// Returns {id, ok, payload, ms} or {bad: reason}.
export function checkWorkerAnswer(msg, expectedId, maxResultBytes) {
  if (!Array.isArray(msg) || msg.length !== 4) return { bad: "the kernel's worker sent a message that is not an answer" };
  const [id, ok, payload, ms] = msg;
  if (id !== expectedId) return { bad: "the kernel's worker answered a task it was not computing" };
  if (!isMs(ms)) return { bad: "the kernel's worker sent a malformed answer" };
  if (ok === 1) {
    if (payload === null) return { id, ok: true, payload: null, ms };
    if (!(payload instanceof ArrayBuffer)) return { bad: "the kernel's worker sent a malformed result" };
    if (payload.byteLength > maxResultBytes) return { bad: `result is too big: more than ${maxResultBytes} bytes as msgpack` };
    const reason = checkEncoded(new Uint8Array(payload));
    if (reason) return { bad: `result failed validation: ${reason}` };
    return { id, ok: true, payload, ms };
  }
  if (ok === 0 && isErrorPayload(payload)) {
    return { id, ok: false, payload: [payload[0].slice(0, MAX_MESSAGE), payload[1].slice(0, MAX_STACK)], ms };
  }
  return { bad: "the kernel's worker sent a malformed answer" };
}
