// The harness installed in every fresh isolate of the sandbox child (distribute/sandbox/child.py).
//
// `__d` (frozen, non-writable, non-configurable) evaluates owner sources without running them twice
// (the Function constructor only parses, so syntax errors are reported before any owner code runs),
// calls generators and kernels, and returns every answer as one string: "R"/"N" + JSON on success,
// "E" + JSON describing the failure otherwise. Values are checked by a strict JSON replacer
// (functions, symbols, BigInt, undefined, NaN, cycles, Maps and Sets are refused with a message
// naming the property); plain JSON data takes a fast path without the replacer. Builtins are
// captured up front, and no prototype method is called on the harness's own values, so owner code that
// replaces JSON, Array or Array.prototype cannot confuse the harness (it could only hurt its own job:
// the child and then the parent re-check counts and sizes in Python).
//
// Plain script, no modules and no host APIs: it runs in mini-racer and, for its tests
// (tests/js/prelude.test.mjs), in a node `vm` context.
Object.defineProperty(globalThis, "__d", {value: (function () {
  "use strict";
  const stringify = JSON.stringify, parse = JSON.parse, isArray = Array.isArray, isView = ArrayBuffer.isView;
  const arrayFrom = Array.from, now = Date.now, evalIndirect = eval, FunctionC = Function;
  const SyntaxErrorC = SyntaxError, MapC = Map, SetC = Set, ArrayBufferC = ArrayBuffer, DataViewC = DataView;
  const PromiseC = Promise, iterSym = Symbol.iterator, asyncIterSym = Symbol.asyncIterator;
  const getProto = Object.getPrototypeOf, objectProto = Object.prototype, arrayProto = Array.prototype;
  const freeze = Object.freeze, RangeErrorC = RangeError, keys = Object.keys, floor = Math.floor;
  const SharedArrayBufferC = SharedArrayBuffer, Uint8ArrayC = Uint8Array, Int32ArrayC = Int32Array;
  const Float64ArrayC = Float64Array, atomicAdd = Atomics.add, isInteger = Number.isInteger;
  const MARK = Symbol("unserialisable"), TOO_BIG = Symbol("too big"), TOO_DEEP = Symbol("too deep");
  const MAX_DEPTH = 100;  // as results: distribute/plain.py, embed/src/scan.js
  // A checkpoint is copied into the mailbox at most every BOX_GAP_MS: a kernel checkpointing in a tight loop
  // would otherwise rewrite it faster than the child can copy it out whole (it retries only when it polls).
  const BOX_GAP_MS = 20, dateNow = Date.now;
  let boxWritten = -Infinity;
  let target = null, items = null, iter = null, pos = 0, produced = 0, maxDatasets = 0;
  // The mailbox of ctx.progress and ctx.checkpoint (see `mailbox` below); null until the child asks for it.
  let box = null, boxSeq = null, boxFraction = null, boxBytes = null, scratch = null, checkpointLimit = 0;
  let runs = 0;  // counts run(): a ctx left behind by an earlier task (a timer, a promise) writes nothing
  const f64 = new Float64ArrayC(1), f64Bytes = new Uint8ArrayC(f64.buffer);

  function describe(value) {
    if (value === null) return "null";
    if (isArray(value)) return "an array";
    const t = typeof value;
    return t === "object" ? "an object" : t === "undefined" ? "undefined" : "a " + t;
  }
  function isObject(value) {
    return value !== null && (typeof value === "object" || typeof value === "function");
  }
  function fail(holder, key, what) {
    let where = "the value";
    if (key !== "") where = isArray(holder) ? "element [" + key + "]" : "property " + stringify(String(key));
    const e = new Error(where + " is " + what);
    e[MARK] = true;
    throw e;
  }
  function replacer(key, value) {
    switch (typeof value) {
      case "string":
        if (!value.isWellFormed()) fail(this, key, "a string with a lone UTF-16 surrogate");
        return value;
      case "number":
        if (value !== value || value === Infinity || value === -Infinity) fail(this, key, value + " (not valid JSON)");
        return value;
      case "boolean": return value;
      case "undefined": fail(this, key, "undefined");
      case "function": fail(this, key, "a function");
      case "symbol": fail(this, key, "a symbol");
      case "bigint": fail(this, key, "a BigInt (convert it to a number or a string)");
    }
    if (value === null) return value;
    if (value instanceof DataViewC) fail(this, key, "a DataView");
    if (isView(value)) return arrayFrom(value);  // typed arrays travel as plain arrays
    if (value instanceof ArrayBufferC) fail(this, key, "an ArrayBuffer (use a plain array or a typed array)");
    if (value instanceof MapC) fail(this, key, "a Map (convert it with Object.fromEntries)");
    if (value instanceof SetC) fail(this, key, "a Set (convert it with Array.from)");
    return value;
  }
  // True for plain JSON data (the common case), which then skips the replacer: it costs ~2x.
  function plain(value, depth) {
    switch (typeof value) {
      case "string": return value.isWellFormed();
      case "number": return value - value === 0;  // finite
      case "boolean": return true;
      case "object": {
        if (value === null) return true;
        if (depth > 32) return false;
        const proto = getProto(value);
        if (proto === arrayProto) {
          for (let i = 0; i < value.length; i++) if (!plain(value[i], depth + 1)) return false;
          return true;
        }
        if (proto !== objectProto && proto !== null) return false;
        if (typeof value.toJSON === "function") return false;
        for (const key in value) if (!plain(value[key], depth + 1)) return false;
        return true;
      }
    }
    return false;
  }
  // JSON text of one value, or throws {serialise: message}.
  function encode(value) {
    try {
      return plain(value, 0) ? stringify(value) : stringify(value, replacer);
    } catch (e) {
      if (isObject(e) && e[MARK]) throw {serialise: e.message};
      throw {serialise: String(isObject(e) && e.message !== undefined ? e.message : e)};
    }
  }
  // msgpack of a plain JSON value (what JSON.parse returns) into `out` from `at`; returns the end, or
  // throws TOO_BIG once it would pass out.length (TOO_DEEP past MAX_DEPTH nested arrays and objects).
  // Bytes go in by index: no prototype method is called.
  function pack(value, out, at, depth) {
    const room = n => { if (at + n > out.length) throw TOO_BIG; };
    const bytes = (n, v) => {  // v as n big-endian bytes (n <= 4, v >= 0)
      room(n);
      for (let i = n - 1; i >= 0; i--) { out[at + i] = v & 255; v = floor(v / 256); }
      at += n;
    };
    if (value === null) { bytes(1, 0xc0); return at; }
    switch (typeof value) {
      case "boolean": bytes(1, value ? 0xc3 : 0xc2); return at;
      case "number":
        if (isInteger(value) && value >= -9223372036854775808 && value < 18446744073709551616) {
          if (value >= 0 && value < 128) bytes(1, value);
          else if (value < 0 && value >= -32) bytes(1, 256 + value);
          else if (value >= 0 && value < 65536) { bytes(1, value < 256 ? 0xcc : 0xcd); bytes(value < 256 ? 1 : 2, value); }
          else if (value >= 0 && value < 4294967296) { bytes(1, 0xce); bytes(4, value); }
          else if (value >= -2147483648 && value < 0) { bytes(1, 0xd2); bytes(4, value + 4294967296); }
          else {  // 64 bits: the high word in two's complement, then the low word
            const high = floor(value / 4294967296);
            bytes(1, value >= 0 ? 0xcf : 0xd3); bytes(4, high < 0 ? high + 4294967296 : high);
            bytes(4, value - high * 4294967296);
          }
          return at;
        }
        f64[0] = value; bytes(1, 0xcb); room(8);
        for (let i = 0; i < 8; i++) out[at + i] = f64Bytes[7 - i];  // V8 runs little-endian here
        return at + 8;
      case "string": {
        let size = 0;  // UTF-8 length (the string is well formed: encode() checked it)
        for (let i = 0; i < value.length; i++) {
          const c = value.charCodeAt(i);
          size += c < 0x80 ? 1 : c < 0x800 ? 2 : c >= 0xd800 && c < 0xdc00 ? (i++, 4) : 3;
        }
        if (size < 32) bytes(1, 0xa0 + size);
        else if (size < 256) { bytes(1, 0xd9); bytes(1, size); }
        else if (size < 65536) { bytes(1, 0xda); bytes(2, size); }
        else { bytes(1, 0xdb); bytes(4, size); }
        room(size);
        for (let i = 0; i < value.length; i++) {
          let c = value.charCodeAt(i);
          if (c < 0x80) out[at++] = c;
          else if (c < 0x800) { out[at++] = 0xc0 | (c >> 6); out[at++] = 0x80 | (c & 63); }
          else if (c >= 0xd800 && c < 0xdc00) {
            c = 0x10000 + ((c - 0xd800) << 10) + (value.charCodeAt(++i) - 0xdc00);
            out[at++] = 0xf0 | (c >> 18); out[at++] = 0x80 | ((c >> 12) & 63);
            out[at++] = 0x80 | ((c >> 6) & 63); out[at++] = 0x80 | (c & 63);
          } else { out[at++] = 0xe0 | (c >> 12); out[at++] = 0x80 | ((c >> 6) & 63); out[at++] = 0x80 | (c & 63); }
        }
        return at;
      }
    }
    if (depth > MAX_DEPTH) throw TOO_DEEP;
    const array = isArray(value), names = array ? null : keys(value), n = array ? value.length : names.length;
    if (n < 16) bytes(1, (array ? 0x90 : 0x80) + n);
    else if (n < 65536) { bytes(1, array ? 0xdc : 0xde); bytes(2, n); }
    else { bytes(1, array ? 0xdd : 0xdf); bytes(4, n); }
    for (let i = 0; i < n; i++) {
      if (!array) at = pack(names[i], out, at, depth);
      at = pack(array ? value[i] : value[names[i]], out, at, depth + 1);
    }
    return at;
  }
  function thousands(n) {  // 65536 as "65,536", as the browser harness words its limit
    let text = "" + n, out = "";
    for (let i = 0; i < text.length; i++) out += (i > 0 && (text.length - i) % 3 === 0 ? "," : "") + text[i];
    return out;
  }
  // ctx for one task. The mailbox is one SharedArrayBuffer the child reads while the kernel runs:
  // Int32 [0] checkpoint count (odd while one is being written), [1] its length, [2] progress count;
  // Float64 at byte 16: the fraction; from byte 24: the latest checkpoint's msgpack. Nothing is called back: the child polls it and decides
  // what leaves (and the parent re-checks all of it).
  function context(resumeJson) {
    const run = ++runs;
    boxWritten = -Infinity;  // a new task: its first checkpoint is written at once
    return freeze({
      progress(fraction) {
        if (typeof fraction !== "number" || !(fraction >= 0 && fraction <= 1)) {
          throw new RangeErrorC("ctx.progress takes a number from 0 to 1");
        }
        if (box !== null && run === runs) { boxFraction[0] = fraction; atomicAdd(boxSeq, 2, 1); }
      },
      checkpoint(state) {
        if (state === null || state === undefined) {
          throw new RangeErrorC("ctx.checkpoint refused the state: it is null or undefined");
        }
        if (box === null || checkpointLimit === 0 || run !== runs) return;  // kept by no server, or too late
        let end;
        try { end = pack(parse(encode(state)), scratch, 0, 1); } catch (e) {
          if (e === TOO_BIG) {
            throw new RangeErrorC("ctx.checkpoint refused the state: it is too large: it is over the limit of " +
                                  thousands(checkpointLimit) + " bytes");
          }
          if (e === TOO_DEEP) {
            throw new RangeErrorC("ctx.checkpoint refused the state: it cannot be serialised: it is nested deeper " +
                                  "than " + MAX_DEPTH + " levels (is it circular?)");
          }
          const why = isObject(e) && typeof e.serialise === "string" ? e.serialise : String(e);
          throw new RangeErrorC("ctx.checkpoint refused the state: " + why);
        }
        const now = dateNow();
        if (now - boxWritten < BOX_GAP_MS) return;  // checked and encoded, but the one in the box stays
        boxWritten = now;
        atomicAdd(boxSeq, 0, 1);  // odd while the copy is written: a reader that sees it waits
        boxSeq[1] = end;
        for (let i = 0; i < end; i++) boxBytes[i] = scratch[i];
        atomicAdd(boxSeq, 0, 1);
      },
      resume: resumeJson === undefined ? undefined : parse(resumeJson),
    });
  }
  function reply(fields) { return "E" + stringify(fields); }
  function errorReply(e, kind) {
    if (isObject(e) && typeof e.serialise === "string") return reply({kind: "serialise", message: e.serialise});
    let message, stack = "";
    try {
      message = e instanceof Error ? String(e) : typeof e === "string" ? e : stringify(e);
      if (message === undefined) message = String(e);
      if (isObject(e) && typeof e.stack === "string") stack = e.stack;
    } catch (_) { message = "a value that cannot be displayed"; }
    return reply({kind: kind, message: message, stack: stack});
  }
  function shapeError(message) { return reply({kind: "shape", message: message}); }
  function badStep(step) {
    return shapeError("the iterator's next() returned " + describe(step) + " instead of {value, done}");
  }
  // Async results (a kernel's main or loadStaticDataset may return a Promise) settle into the same replies.
  function settle(value, onValue, kind) {
    if (!isObject(value) || typeof value.then !== "function") return onValue(value);
    const guarded = v => { try { return onValue(v); } catch (e) { return errorReply(e, kind); } };
    return PromiseC.resolve(value).then(guarded, e => errorReply(e, kind));
  }
  // Evaluate owner source. The Function constructor only parses, so the form is decided (and a
  // syntax error reported) before any owner code runs. Bare object literals `{main: ...}` are accepted.
  function load(src, name) {
    const tag = "\n//# sourceURL=" + name, literal = /^\s*\{/.test(src);
    let code;
    try { new FunctionC(src); code = src; } catch (e) {
      if (!(e instanceof SyntaxErrorC)) throw e;
      try { new FunctionC("return (" + src + "\n)"); code = "(" + src + "\n)"; } catch (e2) {
        return {syntax: literal ? "expression" : "script"};
      }
    }
    let value = evalIndirect(code + tag);
    if (value === undefined && code === src && literal) value = evalIndirect("(" + src + "\n)" + tag);
    return {value: value};
  }
  // An owner's generator or kernel: {value} (an object with a main function), or {answer} to return.
  function loadWithMain(src, what, expected) {
    let loaded;
    try { loaded = load(src, what + ".js"); } catch (e) { return {answer: errorReply(e, "evaluate")}; }
    if (loaded.syntax) return {answer: reply({kind: "syntax", form: loaded.syntax})};
    const value = loaded.value;
    if (!isObject(value)) {
      return {answer: shapeError("the " + what + " must evaluate to an object with " + expected +
                                 "; it evaluated to " + describe(value))};
    }
    if (typeof value.main !== "function") {
      return {answer: shapeError("the " + what + "'s main is not a function (it is " + describe(value.main) + ")")};
    }
    return {value: value};
  }
  function startIterator(result) {
    if (typeof result.next === "function") return result;
    if (typeof result[iterSym] === "function") return result[iterSym]();
    return null;
  }
  function nextIndex() {
    // Array mode reads the array; iterator mode counts what the iterator yielded.
    return items !== null ? pos : produced;
  }

  return Object.freeze({
    genOpen(src, limit) {
      target = items = iter = null; pos = produced = 0; maxDatasets = limit;
      const loaded = loadWithMain(src, "generator", "a main function");
      if (loaded.answer !== undefined) return loaded.answer;
      const g = loaded.value;
      let result;
      try { result = g.main(); } catch (e) { return errorReply(e, "throw"); }
      if (isArray(result)) {
        if (result.length > maxDatasets) return reply({kind: "count", count: result.length});
        items = result;
        return "R" + stringify({mode: "array", count: result.length});
      }
      if (isObject(result)) {
        if (typeof result.then === "function" || typeof result[asyncIterSym] === "function") {
          return shapeError("the generator's main() returned a Promise or an async iterator; it must return an " +
                            "array or a (synchronous) iterator such as a function* generator");
        }
        try { iter = startIterator(result); } catch (e) { return errorReply(e, "throw"); }
        if (isObject(iter) && typeof iter.next === "function") return "R" + stringify({mode: "iterator", count: null});
      }
      return shapeError("the generator's main() must return an array or an iterator (such as a function* " +
                        "generator); it returned " + describe(result));
    },
    // Up to n datasets as one JSON text; stops early on the time budget or once the batch's JSON exceeds
    // maxBatchJson (not exhausted then). A dataset whose JSON exceeds maxItemJson fails the run.
    // Built with plain string concatenation and counters: no method of Array.prototype, which owner code
    // may have replaced (the parent re-checks the count and the sizes anyway).
    pull(n, budgetMs, maxItemJson, maxBatchJson) {
      const stopAt = now() + budgetMs;
      let size = 0, done = false, count = 0, body = "";
      try {
        while (count < n) {
          const index = nextIndex();
          let value;
          if (items !== null) {
            if (pos >= items.length) { done = true; break; }
            value = items[pos++];
          } else {
            const step = iter.next();
            if (!isObject(step)) return badStep(step);
            if (step.done) { done = true; items = []; iter = null; pos = 0; break; }
            if (++produced > maxDatasets) return reply({kind: "count", count: produced});
            value = step.value;
          }
          let text;
          try { text = encode(value); } catch (e) { return reply({kind: "serialise", message: e.serialise, index}); }
          if (text.length > maxItemJson) return reply({kind: "size", index, size: text.length, json: true});
          body = count === 0 ? text : body + "," + text;
          count++;
          size += text.length;
          if (size > maxBatchJson || now() > stopAt) break;
        }
        if (items !== null && pos >= items.length) done = true;
      } catch (e) { return errorReply(e, "throw"); }
      return "R{\"done\":" + (done ? "true" : "false") + ",\"items\":[" + body + "]}";
    },
    skip(n, budgetMs) {
      const stopAt = now() + budgetMs;
      let skipped = 0, done = false;
      try {
        if (items !== null) {
          const left = items.length - pos;
          skipped = n < left ? n : left;
          pos += skipped;
          done = pos >= items.length;
        }
        while (items === null && skipped < n) {
          const step = iter.next();
          if (!isObject(step)) return badStep(step);
          if (step.done) { done = true; items = []; iter = null; pos = 0; break; }
          if (++produced > maxDatasets) return reply({kind: "count", count: produced});
          skipped++;
          if ((skipped & 255) === 0 && now() > stopAt) break;
        }
      } catch (e) { return errorReply(e, "throw"); }
      return "R" + stringify({skipped: skipped, done: done});
    },
    kernelOpen(src, staticText) {
      const loaded = loadWithMain(src, "kernel", "main and loadStaticDataset functions");
      if (loaded.answer !== undefined) return loaded.answer;
      const k = loaded.value;
      const lsd = k.loadStaticDataset;
      if (lsd !== undefined && typeof lsd !== "function") {
        return shapeError("the kernel's loadStaticDataset is not a function (it is " + describe(lsd) + ")");
      }
      target = k;
      if (lsd === undefined) return "R";
      try { return settle(k.loadStaticDataset(staticText), () => "R", "static"); } catch (e) {
        return errorReply(e, "static");
      }
    },
    // main(dataset, ctx): ctx.resume is the state a reissued task resumes from (JSON text, or undefined);
    // ctx.progress and ctx.checkpoint write into the mailbox, when the child made one.
    run(datasetJson, resumeJson) {
      const onValue = v => (v === null || v === undefined ? "N" : "R" + encode(v));
      try { return settle(target.main(parse(datasetJson), context(resumeJson)), onValue, "throw"); } catch (e) {
        return errorReply(e, "throw");
      }
    },
    // The mailbox of this isolate's kernels, made once, before any owner code runs (a second call, which
    // only owner code could make, gets null): checkpoints of at most `limit` bytes of msgpack (0: none).
    mailbox(limit) {
      if (box !== null) return null;
      checkpointLimit = limit;
      scratch = new Uint8ArrayC(limit);
      box = new SharedArrayBufferC(24 + limit);
      boxSeq = new Int32ArrayC(box, 0, 4);
      boxFraction = new Float64ArrayC(box, 16, 1);
      boxBytes = new Uint8ArrayC(box, 24, limit);
      return box;
    },
    // Whether a function body compiles, never running it (the upload check of kernels and comparators):
    // {"error": null} or {"error": "SyntaxError: ..."}, the text a browser would report.
    compiles(body) {
      try { new FunctionC(body); } catch (e) {
        let message;
        try { message = String(e); } catch (_) { message = "a value that cannot be displayed"; }
        return "R" + stringify({error: message});
      }
      return "R" + stringify({error: null});
    },
  });
})(), writable: false, configurable: false, enumerable: false});
//# sourceURL=distribute-prelude.js
