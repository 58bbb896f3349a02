// Kernel worker bootstrap: the first code in every kernel Worker, before the campaign's kernel.
//
// The runner builds each worker from one blob whose text is this bundle, then the kernel source
// wrapped in a function (see blob.js), so no eval is needed (the CSP forbids it). Per task it does
// only what the protocol needs: decode the dataset, call main, encode the result, post it
// (transferring the bytes). Like the headless worker, it accepts a main or loadStaticDataset that
// returns a promise, and settles it before the next task. Everything in this thread is untrusted
// once the kernel has run: the runner checks every message that comes out of it.
//
// Messages in: first {static, maxResultBytes, checkpointMaxBytes, lineOffset}; then [taskId, ArrayBuffer,
// resume ArrayBuffer?] per task. Messages out: [taskId, 1, ArrayBuffer | null, ms] or [taskId, 0, [message,
// stack], ms]; while a task runs, its kernel's ctx notes: [taskId, 2, fraction, 0] (ctx.progress) and
// [taskId, 3, ArrayBuffer, 0] (ctx.checkpoint; the runner coalesces them and the session rate-limits them).
//
// The kernel API: main(dataset, ctx). ctx.progress(fraction) with 0 <= fraction <= 1; ctx.checkpoint(state)
// with plain data of at most checkpointMaxBytes as msgpack (else it throws a RangeError that says why, and
// nothing is sent); ctx.resume is the state of the task's latest checkpoint when it is handed out again
// (undefined the first time). A main(dataset) kernel never sees ctx.

import { decode } from "@msgpack/msgpack";
import { confine } from "./confine.js";
import { encodeResultValue } from "./result.js";

// Taken before any kernel code runs, so a kernel that replaces the globals only fools itself.
const post = self.postMessage.bind(self);
const now = performance.now.bind(performance);
const here = String(self.location.href);

// Capabilities the runner's policy does not govern go before any kernel code runs (confine.js).
const unconfined = confine(self);

let makeKernel = null;
let kernel = null;
let ready = null; // settles when the kernel and its static dataset are loaded
let failure = null; // [message, stack] once loading failed: every task is answered with it
let limit = 0;
let checkpointLimit = 0; // 0: the server keeps no checkpoints, ctx.checkpoint does nothing
let lineOffset = 0;
let chain = null; // tasks run one after another, even when main returns a promise

// The blob's tail calls this with a function that evaluates the kernel expression.
export function start(thunk) {
  if (makeKernel === null) makeKernel = thunk;
}

// Our listener is registered first and stops the event, so a kernel's own message listeners
// never see (or steal) the harness's traffic.
self.addEventListener("message", (event) => {
  event.stopImmediatePropagation();
  if (ready === null) {
    ready = load(event.data);
    chain = ready;
  } else {
    const task = event.data;
    // A task whose run fails unexpectedly goes unanswered (the watchdog sees to it); the next still runs.
    chain = chain.then(() => run(task)).catch(() => {});
  }
});

const isThenable = (v) => v !== null && (typeof v === "object" || typeof v === "function") && typeof v.then === "function";

function shape(value) {
  if (value === null) return "null";
  if (Array.isArray(value)) return "an array";
  const type = typeof value;
  return type === "object" ? "an object" : type === "undefined" ? "undefined" : `a ${type}`;
}

async function load(setup) {
  limit = setup.maxResultBytes;
  checkpointLimit = setup.checkpointMaxBytes;
  lineOffset = setup.lineOffset;
  if (unconfined.length) {
    failure = [`this browser would not let the sandbox remove ${unconfined.join(", ")}, so the kernel does not run here`, ""];
    return;
  }
  try {
    kernel = makeKernel();
  } catch (error) {
    failure = describe(error, "the kernel threw while being evaluated: ");
    return;
  }
  if (kernel === null || (typeof kernel !== "object" && typeof kernel !== "function")) {
    failure = [`the kernel must evaluate to an object with main and loadStaticDataset functions; it evaluated to ${shape(kernel)}`, ""];
    return;
  }
  if (typeof kernel.main !== "function") {
    failure = [`the kernel's main is not a function (it is ${shape(kernel.main)})`, ""];
    return;
  }
  const loadStatic = kernel.loadStaticDataset;
  if (loadStatic === undefined) return;
  if (typeof loadStatic !== "function") {
    failure = [`the kernel's loadStaticDataset is not a function (it is ${shape(loadStatic)})`, ""];
    return;
  }
  try {
    const settled = kernel.loadStaticDataset(setup.static);
    if (isThenable(settled)) await settled;
  } catch (error) {
    failure = describe(error, "the kernel's loadStaticDataset threw: ");
  }
}

async function run(task) {
  const id = task[0];
  if (failure !== null) {
    post([id, 0, failure, 0]);
    return;
  }
  const started = now();
  let value;
  try {
    value = kernel.main(decode(new Uint8Array(task[1])), context(id, task[2]));
    if (isThenable(value)) value = await value;
  } catch (error) {
    post([id, 0, describe(error, ""), now() - started]);
    return;
  }
  const ms = now() - started;
  let bytes;
  try {
    bytes = encodeResultValue(value, limit);
  } catch (error) {
    // Our own message says what and where; the harness's stack would mean nothing to the owner.
    post([id, 0, [String(error.message), ""], ms]);
    return;
  }
  if (bytes === null) post([id, 1, null, ms]);
  else post([id, 1, bytes.buffer, ms], [bytes.buffer]);
}

// The kernel's ctx for one task: its notes name the task, so a late call (a timer left running) names
// a task the runner is no longer computing, and the runner drops it.
function context(id, resume) {
  const ctx = {
    progress(fraction) {
      if (typeof fraction !== "number" || !(fraction >= 0 && fraction <= 1)) {
        throw new RangeError("ctx.progress takes a number from 0 to 1");
      }
      post([id, 2, fraction, 0]);
    },
    checkpoint(state) {
      if (!checkpointLimit) return;
      let bytes;
      try {
        bytes = encodeResultValue(state, checkpointLimit);
      } catch (error) {
        throw new RangeError(`ctx.checkpoint refused the state: ${String(error.message).replace("the result", "it")}`);
      }
      if (bytes === null) throw new RangeError("ctx.checkpoint refused the state: it is null or undefined");
      post([id, 3, bytes.buffer, 0], [bytes.buffer]);
    },
    resume: resume instanceof ArrayBuffer ? decode(new Uint8Array(resume)) : undefined,
  };
  return Object.freeze(ctx);
}

// [message, stack] of anything a kernel may throw, with stack positions in kernel.js lines.
function describe(error, prefix) {
  let message;
  let stack = "";
  try {
    if (error instanceof Error) {
      message = String(error); // "TypeError: x is not a function", as the headless worker says it
    } else if (typeof error === "object" && error !== null && "message" in error) {
      message = String(error.message);
    } else {
      message = typeof error === "string" ? error : String(error);
    }
    if (typeof error === "object" && error !== null && typeof error.stack === "string") stack = kernelPositions(error.stack);
  } catch {
    message = "a value that cannot be displayed";
  }
  return [String(prefix + message).slice(0, 4096), String(stack).slice(0, 16384)];
}

// The blob URL means nothing to a campaign owner; kernel.js:LINE:COLUMN does. Frames of the
// bootstrap itself are dropped, as the headless worker drops its prelude's.
function kernelPositions(stack) {
  return stack
    .split(here)
    .join("kernel.js")
    .replace(/kernel\.js:(\d+):(\d+)/g, (whole, line, column) => {
      const kernelLine = Number(line) - lineOffset;
      return kernelLine >= 1 ? `kernel.js:${kernelLine}:${column}` : "distribute-harness";
    })
    .split("\n")
    .filter((line) => !line.includes("distribute-harness"))
    .join("\n");
}
