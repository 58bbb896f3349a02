// Encodes a kernel's return value as the msgpack bytes of a result, inside the worker.
//
// Encoding where the value was made keeps big values off the page's main threads (only bytes are
// transferred) and lets an oversized result fail early, in the kernel's own thread.
//
// The rules are the headless worker's (distribute/_sandbox_child.py), so a campaign's results do
// not depend on which kind of worker computed them: the value as JSON.stringify sees it (toJSON
// is honoured, so a Date becomes its ISO string; boxed primitives are unwrapped; objects are their
// own enumerable string keys), typed arrays travel as plain arrays of numbers, and these are
// refused rather than silently changed: undefined inside the value, NaN and ±Infinity, strings
// with lone UTF-16 surrogates, functions, symbols, BigInt, ArrayBuffer, DataView, Map and Set.

import { Encoder } from "@msgpack/msgpack";

export const MAX_DEPTH = 100;

// Taken when the bootstrap loads, before any kernel code: a kernel that replaces these in its own
// realm cannot change how its results are encoded (the runner re-checks the bytes anyway).
const ownKeys = Object.keys;
const isArray = Array.isArray;
const isView = ArrayBuffer.isView;
const isFinite = Number.isFinite;
const isWellFormed = Function.prototype.call.bind(String.prototype.isWellFormed);
const toWellFormed = Function.prototype.call.bind(String.prototype.toWellFormed);
const valueOf = { Number: Function.prototype.call.bind(Number.prototype.valueOf), String: Function.prototype.call.bind(String.prototype.valueOf), Boolean: Function.prototype.call.bind(Boolean.prototype.valueOf) };

export class ResultError extends Error {
  constructor(message) {
    super(message);
    this.name = "ResultError";
  }
}

function where(key, inArray) {
  if (key === "") return "the value";
  return inArray ? `element [${key}]` : `property ${JSON.stringify(String(key))}`;
}

function refuse(key, inArray, what) {
  throw new ResultError(`the result cannot be serialised: ${where(key, inArray)} is ${what}`);
}

function tooBig(limit) {
  throw new ResultError(`the result is too large: it is over the limit of ${limit.toLocaleString("en")} bytes`);
}

class ResultEncoder extends Encoder {
  constructor() {
    super({ maxDepth: MAX_DEPTH });
    this.limit = 0;
  }

  // Fails as soon as the output would pass the limit, before allocating for it. (`size` may
  // overestimate a string header by a few bytes; encodeResultValue checks the exact length.)
  ensureBufferSizeToWrite(size) {
    if (this.pos + size > this.limit + 8) tooBig(this.limit);
    super.ensureBufferSizeToWrite(size);
  }

  doEncode(value, depth) {
    this.put(value, "", false, depth);
  }

  put(value, key, inArray, depth) {
    if (depth > MAX_DEPTH) throw new ResultError(`the result cannot be serialised: it is nested deeper than ${MAX_DEPTH} levels (is it circular?)`);
    if ((typeof value === "object" && value !== null) || typeof value === "function") {
      if (typeof value.toJSON === "function") value = value.toJSON(key);
      if (value instanceof Number) value = valueOf.Number(value);
      else if (value instanceof String) value = valueOf.String(value);
      else if (value instanceof Boolean) value = valueOf.Boolean(value);
    }
    switch (typeof value) {
      case "string":
        if (!isWellFormed(value)) refuse(key, inArray, "a string with a lone UTF-16 surrogate");
        this.encodeString(value);
        return;
      case "number":
        if (!isFinite(value)) refuse(key, inArray, `${value} (not valid JSON)`);
        this.encodeNumber(value);
        return;
      case "boolean":
        this.encodeBoolean(value);
        return;
      case "undefined":
        refuse(key, inArray, "undefined");
        return;
      case "function":
        refuse(key, inArray, "a function");
        return;
      case "symbol":
        refuse(key, inArray, "a symbol");
        return;
      case "bigint":
        refuse(key, inArray, "a BigInt (convert it to a number or a string)");
        return;
    }
    if (value === null) {
      this.encodeNil();
    } else if (value instanceof DataView) {
      refuse(key, inArray, "a DataView");
    } else if (isView(value)) {
      this.putArray(value, depth); // typed arrays travel as plain arrays
    } else if (value instanceof ArrayBuffer) {
      refuse(key, inArray, "an ArrayBuffer (use a plain array or a typed array)");
    } else if (value instanceof Map) {
      refuse(key, inArray, "a Map (convert it with Object.fromEntries)");
    } else if (value instanceof Set) {
      refuse(key, inArray, "a Set (convert it with Array.from)");
    } else if (isArray(value)) {
      this.putArray(value, depth);
    } else {
      this.putMap(value, depth);
    }
  }

  // An index loop: immune to a replaced array iterator, and faster than for…of.
  putArray(array, depth) {
    const size = array.length;
    if (size < 16) this.writeU8(0x90 + size);
    else if (size < 0x10000) {
      this.writeU8(0xdc);
      this.writeU16(size);
    } else {
      this.writeU8(0xdd);
      this.writeU32(size);
    }
    for (let i = 0; i < size; i++) this.put(array[i], String(i), true, depth + 1);
  }

  putMap(object, depth) {
    const keys = ownKeys(object);
    const size = keys.length;
    if (size < 16) this.writeU8(0x80 + size);
    else if (size < 0x10000) {
      this.writeU8(0xde);
      this.writeU16(size);
    } else {
      this.writeU8(0xdf);
      this.writeU32(size);
    }
    for (const key of keys) {
      if (!isWellFormed(key)) refuse(toWellFormed(key), false, "named with a lone UTF-16 surrogate");
      this.encodeString(key);
      this.put(object[key], key, false, depth + 1);
    }
  }
}

let encoder = null; // one per worker: its buffer grows to the largest result and is reused

// msgpack bytes of `value` (a fresh Uint8Array that owns its buffer, ready to be transferred), or
// null when the value means "no result" (null or undefined). Throws ResultError.
export function encodeResultValue(value, limit) {
  if (value === null || value === undefined) return null;
  if (!encoder) encoder = new ResultEncoder();
  encoder.limit = limit;
  let bytes;
  try {
    bytes = encoder.encode(value);
  } catch (error) {
    if (error instanceof ResultError) throw error;
    // a toJSON or getter that throws, a stack overflow, …
    const message = error instanceof Error ? `${error.name}: ${error.message}` : String(error);
    throw new ResultError(`the result cannot be serialised: ${message}`);
  }
  if (bytes.length > limit) tooBig(limit);
  return bytes;
}
