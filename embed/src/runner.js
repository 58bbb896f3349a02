// Runner: the sandboxed document that owns the kernel workers.
//
// Served as /embed/runner inside the broker with `sandbox="allow-scripts"` and a CSP that allows
// only this script (by hash), blob: workers and no connections at all, so it has an opaque origin
// and no network. It builds one blob per campaign (worker bootstrap + kernel source), keeps
// `workers` Web Workers fed from its task queue, enforces the per-task time limit (watchdog) and
// the duty cycle, and checks everything a worker says before passing it on to the broker.
//
// broker → runner: start, tasks, throttle, stop. runner → broker: ready (or refused), alive, report
// (validate.js).
//
// The channel to the broker: the broker names a random nonce in this document's URL fragment, which
// nobody else can read. Once the runner has checked that its policy is in force, it sends `ready`
// with that nonce and one end of a MessageChannel to its parent, on the broker's origin; everything
// after that goes over the channel, and every message in either direction carries the nonce. A page
// that navigates this frame away (the host page may navigate its descendants) gets a document without
// the channel, so nothing the broker sends can reach it, and the broker drops whatever it says.

import { kernelBlobParts } from "./blob.js";
import { DutyCycle } from "./throttle.js";
import { checkBrokerMessage, checkWorkerAnswer, checkWorkerNote } from "./validate.js";

/* global __WORKER_SOURCE__ */
const WORKER_SOURCE = __WORKER_SOURCE__; // the bundled worker bootstrap (build.mjs inlines it)

// The document's own origin is opaque; its URL still names the server, which is the broker's origin.
const BROKER_ORIGIN = new URL(location.href).origin;
const broker = window.parent;
const NONCE = /^#[0-9a-f]{32}$/.test(location.hash) ? location.hash.slice(1) : "";
const channel = new MessageChannel();
const POLICY_CHECK_MS = 5000; // the policy's violation report must arrive within this
// Rests of the duty cycle are taken at least this long: each one stops the worker, and the next
// task pays for a fresh one (measured in Chromium: see docs/harness-security.md).
const REST_QUANTUM_MS = 1000;
// A worker left without a task this long is stopped too: nothing watches an idle worker's CPU.
const IDLE_MS = 500;

let config = null; // the current `start` message
let gen = 0; // which `start` results belong to; the broker drops stale ones
let blobUrl = null;
let lineOffset = 0;
let queue = []; // [taskId, ArrayBuffer] waiting for a worker
let slots = []; // one per worker
let watchdog = 0;

class Slot {
  constructor() {
    this.worker = null;
    this.tasks = []; // ids handed to the worker, oldest (the one computing) first
    this.since = 0; // when tasks[0] started, as far as the runner can tell
    this.resting = false; // sleeping off its duty cycle: no new task until the timer ends it
    this.restTimer = 0;
    this.idleTimer = 0;
    this.duty = new DutyCycle(config.duty, REST_QUANTUM_MS);
    this.backups = new Map(); // id → task, for tasks queued inside the worker behind another
    this.last = false; // stop the worker after its current task (the ones behind it were handed back)
  }
}

// --------------------------------------------------------------------------- reports out

let outbox = [];
let transfer = [];
let notes = new Map(); // "kind:id" → [id, kind, payload]: a kernel's ctx notes, only the newest of each per report
let startedSome = false; // a task started since the last report: the broker must learn of it
let reportDue = false;
const tick = new MessageChannel(); // a macrotask that timers cannot delay: one report per turn

// Tasks that started computing: if this process dies (a memory bomb, say), these are the ones the
// broker reports as failed; the others in hand never started and simply go back to the server.
function runningIds() {
  const ids = [];
  for (const slot of slots) if (slot.worker && slot.tasks.length) ids.push(slot.tasks[0]);
  return ids;
}

tick.port1.onmessage = () => {
  reportDue = false;
  if (!outbox.length && !startedSome && !notes.size) return;
  const items = outbox;
  const buffers = transfer;
  const noted = [...notes.values()];
  for (const note of noted) if (note[2] instanceof ArrayBuffer) buffers.push(note[2]);
  outbox = [];
  transfer = [];
  notes = new Map();
  startedSome = false;
  send({ type: "report", gen, items, running: runningIds(), notes: noted }, buffers);
};

function send(message, buffers = []) {
  channel.port1.postMessage({ ...message, nonce: NONCE }, buffers);
}

function report() {
  if (reportDue) return;
  reportDue = true;
  tick.port2.postMessage(0);
}

function emit(id, ok, payload, ms) {
  outbox.push([id, ok, payload, ms]);
  if (payload instanceof ArrayBuffer) transfer.push(payload);
  report();
}

// --------------------------------------------------------------------------- workers

function spawn(slot) {
  let worker;
  try {
    worker = new Worker(blobUrl, { name: "kernel" });
  } catch (error) {
    return String(error?.message ?? error);
  }
  slot.worker = worker;
  slot.tasks = [];
  worker.onmessage = (event) => answered(slot, worker, event.data);
  worker.onmessageerror = () => misbehaved(slot, worker, "the kernel's worker sent a message that cannot be read");
  worker.onerror = (event) => {
    event.preventDefault();
    const where = event.lineno ? ` (kernel.js:${event.lineno - lineOffset}:${event.colno})` : "";
    misbehaved(slot, worker, `${event.message || "the kernel's worker failed"}${where}`);
  };
  const { maxResultBytes, checkpointMaxBytes } = config;
  worker.postMessage({ static: config.static, maxResultBytes, checkpointMaxBytes, lineOffset });
  return "";
}

function retire(slot) {
  if (slot.worker) slot.worker.terminate();
  slot.worker = null;
  // Tasks behind the one that was computing never started: they go back to the front of the queue.
  const waiting = slot.tasks.slice(1).map((id) => slot.backups.get(id));
  queue = waiting.concat(queue);
  slot.tasks = [];
  slot.backups.clear();
}

// Terminates the worker (a fresh one takes its place on demand) and reports the task it was on.
// The time it took counts towards the duty cycle, as a task's would.
function misbehaved(slot, worker, reason) {
  if (slot.worker !== worker) return; // already replaced: a late event from a terminated worker
  const id = slot.tasks[0];
  const ms = performance.now() - slot.since;
  retire(slot);
  if (id !== undefined) emit(id, false, [reason, ""], ms);
  rest(slot, slot.duty.rest(ms));
  pump();
}

// Sleeps off the duty cycle with the worker stopped: a kernel may leave work running after it
// returns (timers, promise loops), which no task's time limit watches and which would otherwise
// compute through every rest. The tasks it held but had not answered go back to the queue (at
// duty < 1 it holds none: one task at a time); a fresh worker takes over when the rest ends.
function rest(slot, ms) {
  if (!(ms > 0)) return;
  if (slot.worker) {
    slot.worker.terminate();
    slot.worker = null;
    queue = slot.tasks.map((id) => slot.backups.get(id)).filter(Boolean).concat(queue);
    slot.tasks = [];
    slot.backups.clear();
  }
  slot.resting = true;
  slot.restTimer = setTimeout(() => {
    // The timer ends the rest itself: comparing clocks would stall whenever a timer fires early.
    slot.resting = false;
    pump();
  }, ms);
}

// Stops a worker that has had no task for IDLE_MS (the queue ran dry), for the same reason.
function watchIdle(slot) {
  const idle = slot.worker && !slot.tasks.length && !slot.resting;
  if (!idle) {
    clearTimeout(slot.idleTimer);
    slot.idleTimer = 0;
  } else if (!slot.idleTimer) {
    slot.idleTimer = setTimeout(() => {
      slot.idleTimer = 0;
      if (slot.worker && !slot.tasks.length) retire(slot);
    }, IDLE_MS);
  }
}

function answered(slot, worker, data) {
  if (slot.worker !== worker) return;
  if (slot.tasks.length === 0) {
    misbehaved(slot, worker, "the kernel's worker sent a message while it had no task");
    return;
  }
  const note = checkWorkerNote(data, slot.tasks[0], config.checkpointMaxBytes);
  if (note) {
    if (note.bad) misbehaved(slot, worker, note.bad);
    else if (!note.drop) {
      notes.set(`${note.kind}:${note.id}`, [note.id, note.kind, note.payload]);
      report();
    }
    return;
  }
  const answer = checkWorkerAnswer(data, slot.tasks[0], config.maxResultBytes);
  if (answer.bad) {
    misbehaved(slot, worker, answer.bad);
    return;
  }
  const now = performance.now();
  const busy = now - slot.since;
  slot.tasks.shift();
  slot.backups.delete(answer.id);
  slot.since = now;
  if (slot.last) {
    // The tasks queued inside this worker were handed back: it must not start them.
    slot.last = false;
    worker.terminate();
    slot.worker = null;
    slot.tasks = [];
    slot.backups.clear();
  }
  if (slot.tasks.length) startedSome = true; // the one waiting inside the worker starts now
  // The worker's own timing is precise, but it is the kernel's word: never more than we saw.
  emit(answer.id, answer.ok, answer.payload, Math.min(answer.ms, busy));
  rest(slot, slot.duty.rest(busy));
  pump();
}

// Hands queued tasks to workers that have room and are not resting.
function pump() {
  if (!config) return;
  const now = performance.now();
  for (const slot of slots) {
    while (queue.length && slot.tasks.length < config.depth && !slot.resting) {
      const task = queue.shift();
      if (!slot.worker) {
        const failed = spawn(slot);
        if (failed) {
          emit(task[0], false, [`the sandbox could not start a worker: ${failed}`, ""], 0);
          continue;
        }
      }
      if (slot.tasks.length === 0) {
        // It starts at once: hand the bytes over without a copy.
        startedSome = true;
        report();
        slot.since = now;
        slot.tasks.push(task[0]);
        slot.worker.postMessage(task, [task[1]]);
      } else {
        // It waits behind another task, which may yet be killed: keep the bytes to requeue it.
        slot.tasks.push(task[0]);
        slot.backups.set(task[0], task);
        slot.worker.postMessage(task);
      }
    }
    watchIdle(slot);
  }
}

function checkDeadlines() {
  const limit = config.timeout * 1000;
  const now = performance.now();
  for (const slot of slots) {
    if (slot.worker && slot.tasks.length && now - slot.since > limit) {
      // Worded as the headless worker words it, so owners see one message whichever worker ran it.
      misbehaved(slot, slot.worker, `task exceeded the time limit of ${config.timeout} s`);
    }
  }
}

// --------------------------------------------------------------------------- commands

function stopAll() {
  for (const slot of slots) {
    if (slot.worker) slot.worker.terminate();
    clearTimeout(slot.restTimer);
    clearTimeout(slot.idleTimer);
  }
  slots = [];
  queue = [];
  outbox = [];
  transfer = [];
  notes = new Map();
  startedSome = false;
  clearInterval(watchdog);
  if (blobUrl) URL.revokeObjectURL(blobUrl);
  blobUrl = null;
  config = null;
}

// Only ever grows, but for `keep` below.
function makeSlots(count) {
  while (slots.length < count) slots.push(new Slot());
}

// The broker handed back every task it gave us but those in `keep` (the ones computing in the
// workers that stay, at most `workers`): the others are dropped, computing or not, and their workers
// stopped. The kept ones finish; then the broker reconnects (stop, start) with the new size.
function keepOnly(keep, workers) {
  const kept = new Set(keep);
  queue = [];
  const stay = [];
  const gone = [];
  for (const slot of slots) {
    if (slot.worker && slot.tasks.length && kept.has(slot.tasks[0])) {
      for (const id of slot.tasks.slice(1)) slot.backups.delete(id);
      slot.last = slot.tasks.length > 1;
      slot.tasks.length = 1;
      stay.push(slot);
    } else {
      if (slot.worker) slot.worker.terminate();
      clearTimeout(slot.restTimer);
      clearTimeout(slot.idleTimer);
      gone.push(slot);
    }
  }
  slots = stay.concat(gone.slice(0, Math.max(0, workers - stay.length)).map(() => new Slot()));
}

function start(msg) {
  stopAll();
  config = msg;
  gen = msg.gen;
  const blob = kernelBlobParts(WORKER_SOURCE, msg.kernel);
  lineOffset = blob.lineOffset;
  blobUrl = URL.createObjectURL(new Blob(blob.parts, { type: "text/javascript" }));
  makeSlots(msg.workers);
  // Check often enough that a task overruns its limit by at most a tenth of it (or a second).
  watchdog = setInterval(checkDeadlines, Math.min(1000, Math.max(50, msg.timeout * 100)));
}

function command(event) {
  if (!event.data || event.data.nonce !== NONCE) return;
  const msg = checkBrokerMessage(event.data);
  if (!msg) return;
  switch (msg.type) {
    case "start":
      start(msg);
      break;
    case "tasks":
      if (config && msg.gen === gen) {
        queue.push(...msg.tasks);
        pump();
      }
      break;
    case "throttle":
      if (config) {
        Object.assign(config, { workers: msg.workers, duty: msg.duty, depth: msg.depth });
        if (msg.keep) keepOnly(msg.keep, msg.workers);
        for (const slot of slots) slot.duty = new DutyCycle(msg.duty, REST_QUANTUM_MS);
        makeSlots(msg.workers);
        pump();
      }
      break;
    case "stop":
      stopAll();
      break;
  }
}

// --------------------------------------------------------------------------- start-up

// The kernels' confinement rests on this document's policy (sent as a header; a proxy could drop it,
// a browser could ignore it). Before anything runs, a request the policy forbids must be refused
// and reported as a violation of connect-src; and the sandbox must have made the origin opaque.
function policyInForce() {
  if (self.origin !== "null") return Promise.resolve(false);
  return new Promise((resolve) => {
    const finish = (ok) => {
      document.removeEventListener("securitypolicyviolation", violated);
      clearTimeout(timer);
      resolve(ok);
    };
    const violated = (event) => {
      if (event.effectiveDirective === "connect-src") finish(true);
    };
    document.addEventListener("securitypolicyviolation", violated);
    const timer = setTimeout(() => finish(false), POLICY_CHECK_MS);
    fetch(new URL("/embed/policy-check", BROKER_ORIGIN), { mode: "no-cors", cache: "no-store" }).then(
      () => finish(false), // it went through: no policy
      () => {}, // refused: the violation event says why
    );
  });
}

// Opened without the broker's nonce (directly, or by a page that navigated the frame here): inert.
if (NONCE) {
  policyInForce().then((ok) => {
    if (!ok) {
      broker.postMessage({ type: "refused", nonce: NONCE }, BROKER_ORIGIN);
      return;
    }
    channel.port1.onmessage = command;
    broker.postMessage({ type: "ready", nonce: NONCE }, BROKER_ORIGIN, [channel.port2]);
    // A heartbeat: a runner whose process crashed says nothing, and the broker starts a new one.
    setInterval(() => send({ type: "alive" }), 1000);
  });
}
