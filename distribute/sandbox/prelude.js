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
  const freeze = Object.freeze, RangeErrorC = RangeError;
  const MARK = Symbol("unserialisable");
  let target = null, items = null, iter = null, pos = 0, produced = 0, maxDatasets = 0;

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
    // main(dataset, ctx): here ctx.resume is the state a reissued task resumes from (JSON text, or
    // undefined); the sandbox sends nothing out while a kernel runs, so progress and checkpoints are
    // checked and dropped (the browser harness sends them to the server).
    run(datasetJson, resumeJson) {
      const onValue = v => (v === null || v === undefined ? "N" : "R" + encode(v));
      const ctx = freeze({
        progress(fraction) {
          if (typeof fraction !== "number" || !(fraction >= 0 && fraction <= 1)) {
            throw new RangeErrorC("ctx.progress takes a number from 0 to 1");
          }
        },
        checkpoint(state) {
          if (state === null || state === undefined) {
            throw new RangeErrorC("ctx.checkpoint refused the state: it is null or undefined");
          }
        },
        resume: resumeJson === undefined ? undefined : parse(resumeJson),
      });
      try { return settle(target.main(parse(datasetJson), ctx), onValue, "throw"); } catch (e) {
        return errorReply(e, "throw");
      }
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
