// Worker wire protocol v1 (and the v1.1 `release` frame), browser side: the same frames as
// distribute/protocol.py (read that module for the rules; docs/protocol.md for the prose).
//
// Every frame is one binary WebSocket message holding a msgpack map with a type key `t`.
// Client → server: hello, result, results, error, ping (v1.1: release, progress, checkpoint, each sent
// only when the campaign frame lists its feature). Server → client: campaign, tasks, idle, bye, pong; a
// `tasks` entry may carry a third element (v1.1): the msgpack state a reissued task resumes from. Like the server, the hot path never re-encodes a dataset or a result: `tasks` frames
// are cut into per-dataset byte ranges (the worker decodes them), and results arrive here already
// encoded by the worker (and checked by the runner), so they are spliced into `result(s)` frames.

import { decode, encode } from "@msgpack/msgpack";
import { readHeader, readInt, readStr, ScanError, scanValue } from "./scan.js";

export const VERSION = 1;
export const MAX_SLOTS = 256; // most tasks one connection may hold, and most items in a `results` frame
export const MAX_TEXT = 64 * 1024; // the server keeps no longer error message or stack
export const FEATURE_RELEASE = "release"; // v1.1: the server takes tasks back unfinished
const MAX_FEATURES = 16;

// WebSocket close codes (RFC 6455 §7.4.1), as in protocol.py.
export const CLOSE_NORMAL = 1000;
export const CLOSE_GOING_AWAY = 1001;
export const CLOSE_PROTOCOL_ERROR = 1002;
export const CLOSE_UNSUPPORTED_DATA = 1003;
export const CLOSE_POLICY_VIOLATION = 1008;
export const CLOSE_TOO_BIG = 1009;

export class ProtocolError extends Error {
  constructor(message, code = CLOSE_PROTOCOL_ERROR) {
    super(message);
    this.name = "ProtocolError";
    this.code = code;
  }
}

// --------------------------------------------------------------------------- client → server

// The server keeps only str/int/float values of `client`, at most 16 keys.
function clientInfo(client) {
  const out = {};
  for (const [key, value] of Object.entries(client || {}).slice(0, 16)) {
    if (typeof value === "string") out[key] = wellFormed(value).slice(0, 256);
    else if (typeof value === "number" && Number.isFinite(value)) out[key] = value;
  }
  return out;
}

// `site` (v1.1): the ticket of a verified site's broker page; left out when there is none.
export function encodeHello({ campaign = null, slots = 1, client = {}, have = [], site = null } = {}) {
  if (!Number.isInteger(slots) || slots < 1 || slots > MAX_SLOTS) throw new RangeError(`slots must be 1..${MAX_SLOTS}`);
  if (campaign !== null && !(Number.isInteger(campaign) && campaign >= 1)) throw new RangeError("campaign must be a positive integer or null");
  const hello = { t: "hello", v: VERSION, campaign, slots, client: clientInfo(client), have: have.slice(0, 16) };
  if (typeof site === "string" && site && site.length <= 2048) hello.site = site;
  return encode(hello);
}

export const FEATURE_PROGRESS = "progress";
export const FEATURE_CHECKPOINT = "checkpoint";

export function encodeProgress(id, fraction) {
  return encode({ t: "progress", id, f: Math.min(1, Math.max(0, Number(fraction) || 0)) });
}

// `state` is the checkpoint's msgpack bytes (a Uint8Array): sent as binary, never re-encoded.
export function encodeCheckpoint(id, state) {
  return encode({ t: "checkpoint", id, state });
}

// Tasks handed back unfinished (v1.1); `final`: send this connection no more tasks. At most MAX_SLOTS ids.
export function encodeRelease(ids, final = false) {
  if (ids.length > MAX_SLOTS) throw new RangeError(`a release frame holds at most ${MAX_SLOTS} ids`);
  return encode({ t: "release", ids: [...ids], final: Boolean(final) });
}

export function encodePing(nonce = 0) {
  return encode({ t: "ping", n: nonce });
}

// Lone surrogates would become invalid UTF-8, which makes the server reject the whole frame.
export function wellFormed(text) {
  return text.isWellFormed() ? text : text.toWellFormed();
}

function clip(text, limit) {
  return wellFormed(String(text ?? "").slice(0, limit));
}

export function encodeError(id, message, stack = "", ms = 0) {
  return encode({ t: "error", id, message: clip(message, 4096), stack: clip(stack, MAX_TEXT - 4096), ms: cleanMs(ms) });
}

function cleanMs(ms) {
  return Number.isFinite(ms) && ms >= 0 ? Math.min(ms, 1e11) : 0;
}

const NIL = Uint8Array.of(0xc0);
const RESULT_HEAD = concat([Uint8Array.of(0x84), encode("t"), encode("result"), encode("id")]);
const RESULTS_HEAD = concat([Uint8Array.of(0x82), encode("t"), encode("results"), encode("items")]);
const VALUE_KEY = encode("value");
const MS_KEY = encode("ms");

function concat(parts) {
  let length = 0;
  for (const part of parts) length += part.length;
  const out = new Uint8Array(length);
  let offset = 0;
  for (const part of parts) {
    out.set(part, offset);
    offset += part.length;
  }
  return out;
}

function arrayHeader(n) {
  if (n < 16) return Uint8Array.of(0x90 | n);
  return Uint8Array.of(0xdc, n >> 8, n & 0xff);
}

// `value` is the result's msgpack encoding (a Uint8Array) or null for "no result".
export function encodeResult(id, value, ms = 0) {
  return concat([RESULT_HEAD, encode(id), VALUE_KEY, value ?? NIL, MS_KEY, encode(cleanMs(ms))]);
}

// `items` are [id, value bytes or null, ms]; at most MAX_SLOTS of them.
export function encodeResults(items) {
  if (items.length < 1 || items.length > MAX_SLOTS) throw new RangeError(`a results frame holds 1..${MAX_SLOTS} items`);
  const parts = [RESULTS_HEAD, arrayHeader(items.length)];
  for (const [id, value, ms] of items) parts.push(Uint8Array.of(0x93), encode(id), value ?? NIL, encode(cleanMs(ms)));
  return concat(parts);
}

// --------------------------------------------------------------------------- server → client

function fail(message) {
  throw new ProtocolError(message);
}

function parseTasks(bytes, pos) {
  const [count, start] = readHeader(bytes, pos, "array");
  if (count > MAX_SLOTS) fail("too many tasks in one frame");
  const tasks = new Array(count);
  let at = start;
  for (let i = 0; i < count; i++) {
    const [size, next] = readHeader(bytes, at, "array");
    if (size !== 2 && size !== 3) fail("each task must be [id, dataset] or [id, dataset, resume state]");
    const [id, dataStart] = readInt(bytes, next);
    if (id < 0) fail("a task id must not be negative");
    const end = scanValue(bytes, dataStart, false);
    tasks[i] = [id, bytes.subarray(dataStart, end), null];
    at = end;
    if (size === 3) {
      const stateEnd = scanValue(bytes, at, false);
      const state = decode(bytes.subarray(at, stateEnd));
      if (!(state instanceof Uint8Array)) fail("a task's resume state must be binary");
      tasks[i][2] = state;
      at = stateEnd;
    }
  }
  return [tasks, at];
}

const isInt = (v) => Number.isInteger(v);

// v1.1 `features` (absent from a v1 server: none). A v1 client ignores what it does not know, so
// this one does too: only short strings are kept.
function featuresOf(value) {
  if (!Array.isArray(value)) return [];
  return value.slice(0, MAX_FEATURES).filter((name) => typeof name === "string" && name.length <= 64);
}
const isText = (v) => typeof v === "string";
const isNumber = (v) => typeof v === "number" && Number.isFinite(v);

// Decodes one server frame. A `tasks` frame gives {t: "tasks", tasks: [[id, Uint8Array], ...]}
// where each Uint8Array is a view of the dataset's msgpack bytes inside `frame`.
export function decodeServer(frame) {
  if (!(frame instanceof ArrayBuffer || ArrayBuffer.isView(frame))) {
    throw new ProtocolError("frames must be binary msgpack, not text", CLOSE_UNSUPPORTED_DATA);
  }
  const bytes = frame instanceof Uint8Array ? frame : new Uint8Array(frame.buffer ?? frame, frame.byteOffset ?? 0, frame.byteLength);
  const body = Object.create(null); // a key named __proto__ must stay a plain key
  try {
    let [count, pos] = readHeader(bytes, 0, "map");
    for (; count > 0; count--) {
      let key;
      [key, pos] = readStr(bytes, pos);
      if (key === "tasks") {
        [body.tasks, pos] = parseTasks(bytes, pos);
      } else {
        const end = scanValue(bytes, pos, false);
        body[key] = decode(bytes.subarray(pos, end));
        pos = end;
      }
    }
    if (pos !== bytes.length) fail("trailing bytes after the frame");
  } catch (error) {
    if (error instanceof ProtocolError) throw error;
    if (error instanceof ScanError || error instanceof RangeError || error?.name === "DecodeError") {
      fail(`undecodable frame: ${error.message}`);
    }
    throw error;
  }
  return checkServer(body);
}

function checkServer(body) {
  const kind = body.t;
  if (!isText(kind)) fail("a frame must be a map with a string key 't'");
  switch (kind) {
    case "tasks":
      if (!Array.isArray(body.tasks)) fail("'tasks' must be a list");
      return { t: kind, tasks: body.tasks };
    case "campaign": {
      const { id, name = "", hash, kernel = null, static: staticText = null, task_timeout: timeout, max_result_bytes: maxBytes } = body;
      const { features = [], checkpoint_max_bytes: checkpointMaxBytes = 0, checkpoint_interval: checkpointInterval = 0 } = body;
      if (!isInt(id) || id < 1) fail("'id' must be a positive integer");
      if (!isText(name) || !isText(hash)) fail("'name' and 'hash' must be strings");
      if (!(kernel === null || isText(kernel)) || !(staticText === null || isText(staticText))) {
        fail("'kernel' and 'static' must be strings or nil");
      }
      if (!isNumber(timeout) || timeout <= 0) fail("'task_timeout' must be a positive number");
      if (!isInt(maxBytes) || maxBytes <= 0) fail("'max_result_bytes' must be a positive integer");
      const names = featuresOf(features); // unknown or malformed names are left out: later servers may add more
      if (!isInt(checkpointMaxBytes) || checkpointMaxBytes < 0 || !isNumber(checkpointInterval) || checkpointInterval < 0) {
        fail("'checkpoint_max_bytes' and 'checkpoint_interval' must be non-negative numbers");
      }
      const checkpoints = names.includes(FEATURE_CHECKPOINT) ? checkpointMaxBytes : 0;
      return {
        t: kind,
        id,
        name,
        hash,
        kernel,
        static: staticText,
        taskTimeout: timeout,
        maxResultBytes: maxBytes,
        features: names,
        progress: names.includes(FEATURE_PROGRESS),
        checkpointMaxBytes: checkpoints,
        checkpointInterval,
      };
    }
    case "idle":
    case "bye":
      return { t: kind, reason: isText(body.reason) ? body.reason : "" };
    case "pong":
      return { t: kind, n: isInt(body.n) ? body.n : 0 };
    default:
      fail(`unknown message type ${JSON.stringify(kind.slice(0, 32))}`);
  }
}
