// Messages between broker, runner and kernel workers are checked by shape; a worker's answer must
// be for the task it holds and carry a well-formed result within the size limit.
import assert from "node:assert/strict";
import { describe, test } from "node:test";
import { encode } from "@msgpack/msgpack";
import { checkBrokerMessage, checkRunnerMessage, checkWorkerAnswer, checkWorkerNote } from "../src/validate.js";

const start = { type: "start", gen: 1, kernel: "({main(){}})", static: "", timeout: 5, maxResultBytes: 100, checkpointMaxBytes: 0, workers: 1, duty: 0.25, depth: 1 };
const buffer = (value) => encode(value).slice().buffer;

describe("worker → runner: ctx notes", () => {
  test("a progress and a checkpoint of the task computing pass", () => {
    const state = buffer({ step: 6 });
    assert.deepEqual(checkWorkerNote([7, 2, 0.25, 0], 7, 100), { id: 7, kind: 2, payload: 0.25 });
    assert.deepEqual(checkWorkerNote([7, 3, state, 0], 7, 100), { id: 7, kind: 3, payload: state });
  });

  test("an answer is no note", () => assert.equal(checkWorkerNote([7, 1, null, 0], 7, 100), null));

  test("a note about another task is dropped, not held against the worker", () => {
    assert.deepEqual(checkWorkerNote([8, 2, 0.5, 0], 7, 100), { drop: true });
  });

  test("a checkpoint over the limit or not msgpack is misbehaviour", () => {
    assert.match(checkWorkerNote([7, 3, new ArrayBuffer(101), 0], 7, 100).bad, /malformed checkpoint/);
    assert.match(checkWorkerNote([7, 3, Uint8Array.of(0x92, 0x01).buffer, 0], 7, 100).bad, /failed validation/);
    assert.match(checkWorkerNote([7, 2, 2, 0], 7, 100).bad, /malformed progress/);
  });
});

describe("broker → runner", () => {
  test("a start message passes", () => assert.deepEqual(checkBrokerMessage(start), start));

  const badStarts = {
    "no kernel": { ...start, kernel: undefined },
    "zero workers": { ...start, workers: 0 },
    "too many workers": { ...start, workers: 65 },
    "duty above 1": { ...start, duty: 1.5 },
    "depth 3": { ...start, depth: 3 },
    "negative timeout": { ...start, timeout: -1 },
    "fractional size limit": { ...start, maxResultBytes: 1.5 },
  };
  for (const [name, msg] of Object.entries(badStarts)) {
    test(`a start message with ${name} is dropped`, () => assert.equal(checkBrokerMessage(msg), null));
  }

  test("a reissued task carries its resume state as a third ArrayBuffer", () => {
    assert.ok(checkBrokerMessage({ type: "tasks", gen: 1, tasks: [[1, new ArrayBuffer(1), new ArrayBuffer(2)]] }));
    assert.equal(checkBrokerMessage({ type: "tasks", gen: 1, tasks: [[1, new ArrayBuffer(1), "state"]] }), null);
  });

  test("tasks carry [id, ArrayBuffer] pairs", () => {
    assert.ok(checkBrokerMessage({ type: "tasks", gen: 1, tasks: [[1, new ArrayBuffer(1)]] }));
    assert.equal(checkBrokerMessage({ type: "tasks", gen: 1, tasks: [[1, new Uint8Array(1)]] }), null);
    assert.equal(checkBrokerMessage({ type: "tasks", gen: 1, tasks: [["1", new ArrayBuffer(1)]] }), null);
  });

  test("throttle and stop", () => {
    assert.deepEqual(checkBrokerMessage({ type: "throttle", workers: 2, duty: 1, depth: 2 }), { type: "throttle", workers: 2, duty: 1, depth: 2 });
    assert.deepEqual(checkBrokerMessage({ type: "stop" }), { type: "stop" });
  });

  test("a throttle may name the tasks to keep, at most one per worker", () => {
    const throttle = { type: "throttle", workers: 1, duty: 0.25, depth: 1 };
    assert.deepEqual(checkBrokerMessage({ ...throttle, keep: [4] }), { ...throttle, keep: [4] });
    assert.equal(checkBrokerMessage({ ...throttle, keep: [4, 5] }), null);
    assert.equal(checkBrokerMessage({ ...throttle, keep: ["4"] }), null);
    assert.equal(checkBrokerMessage({ ...throttle, keep: 4 }), null);
  });

  test("anything else is dropped", () => {
    for (const msg of [null, "start", [start], { type: "eval", code: "x" }]) assert.equal(checkBrokerMessage(msg), null);
  });
});

describe("runner → broker", () => {
  test("ready and alive", () => {
    assert.deepEqual(checkRunnerMessage({ type: "ready" }), { type: "ready" });
    assert.deepEqual(checkRunnerMessage({ type: "alive", extra: 1 }), { type: "alive" });
  });

  test("a report with values, no values and errors, and the tasks computing", () => {
    const msg = { type: "report", gen: 2, items: [[1, true, buffer(5), 1.5], [2, true, null, 0], [3, false, ["boom", "at main"], 2]], running: [4], notes: [] };
    assert.deepEqual(checkRunnerMessage(msg, 100), msg);
  });

  test("a report carries its kernels' progress and checkpoints", () => {
    const msg = { type: "report", gen: 2, items: [], running: [4], notes: [[4, 2, 0.5], [4, 3, buffer({ step: 6 })]] };
    assert.deepEqual(checkRunnerMessage(msg, 100), msg);
    assert.equal(checkRunnerMessage({ ...msg, notes: [[4, 2, 1.5]] }, 100), null);
    assert.equal(checkRunnerMessage({ ...msg, notes: [[4, 3, "state"]] }, 100), null);
  });

  test("a report of only the tasks computing", () => {
    assert.ok(checkRunnerMessage({ type: "report", gen: 1, items: [], running: [1, 2] }));
  });

  test("a report whose running list is not task ids is dropped", () => {
    assert.equal(checkRunnerMessage({ type: "report", gen: 1, items: [], running: ["1"] }), null);
    assert.equal(checkRunnerMessage({ type: "report", gen: 1, items: [] }), null);
  });

  test("a result over the size limit is dropped", () => {
    assert.equal(checkRunnerMessage({ type: "report", gen: 1, items: [[1, true, new ArrayBuffer(101), 0]], running: [] }, 100), null);
  });

  const badItems = {
    "a string id": ["1", true, null, 0],
    "a numeric ok flag": [1, 1, null, 0],
    "a negative ms": [1, true, null, -1],
    "an error without stack": [1, false, ["boom"], 0],
    "a value that is not bytes": [1, true, { a: 1 }, 0],
  };
  for (const [name, item] of Object.entries(badItems)) {
    test(`a report with ${name} is dropped`, () => assert.equal(checkRunnerMessage({ type: "report", gen: 1, items: [item], running: [] }, 100), null));
  }
});

describe("worker → runner", () => {
  test("an answer with a value for the task in hand", () => {
    const payload = buffer({ x: 1 });
    assert.deepEqual(checkWorkerAnswer([7, 1, payload, 3], 7, 100), { id: 7, ok: true, payload, ms: 3 });
  });

  test("an answer without value", () => {
    assert.deepEqual(checkWorkerAnswer([7, 1, null, 3], 7, 100), { id: 7, ok: true, payload: null, ms: 3 });
  });

  test("an error answer keeps bounded message and stack", () => {
    const answer = checkWorkerAnswer([7, 0, ["m".repeat(10000), "s".repeat(100000)], 3], 7, 100);
    assert.equal(answer.ok, false);
    assert.equal(answer.payload[0].length, 4096);
    assert.equal(answer.payload[1].length, 16384);
  });

  test("an answer for another task is misbehaviour", () => {
    assert.match(checkWorkerAnswer([8, 1, null, 3], 7, 100).bad, /not computing/);
  });

  test("a message that is not an answer is misbehaviour", () => {
    for (const msg of [{ type: "results", gen: 1, items: [] }, "hello", null, [7, 1, null]]) {
      assert.match(checkWorkerAnswer(msg, 7, 100).bad, /not an answer/);
    }
  });

  test("a result over the size limit is refused", () => {
    assert.match(checkWorkerAnswer([7, 1, new ArrayBuffer(101), 0], 7, 100).bad, /too big/);
  });

  test("malformed result bytes are refused", () => {
    assert.match(checkWorkerAnswer([7, 1, Uint8Array.of(0x92, 0x01).buffer, 0], 7, 100).bad, /failed validation/);
    assert.match(checkWorkerAnswer([7, 1, Uint8Array.of(0x81, 0x01, 0x01).buffer, 0], 7, 100).bad, /keys must be strings/);
  });

  test("a malformed ms or payload is misbehaviour", () => {
    assert.ok(checkWorkerAnswer([7, 1, null, -1], 7, 100).bad);
    assert.ok(checkWorkerAnswer([7, 1, "bytes", 1], 7, 100).bad);
    assert.ok(checkWorkerAnswer([7, 2, null, 1], 7, 100).bad);
    assert.ok(checkWorkerAnswer([7, 0, "boom", 1], 7, 100).bad);
  });
});

describe("the runner's nonce", () => {
  const nonce = "0123456789abcdef0123456789abcdef";

  test("is 32 hex digits, fresh each time", async () => {
    const { makeNonce } = await import("../src/validate.js");
    const a = makeNonce();
    assert.match(a, /^[0-9a-f]{32}$/);
    assert.notEqual(a, makeNonce());
  });

  test("a message carries it only with exactly that value", async () => {
    const { carriesNonce } = await import("../src/validate.js");
    assert.equal(carriesNonce({ type: "alive", nonce }, nonce), true);
    assert.equal(carriesNonce({ type: "alive" }, nonce), false);
    assert.equal(carriesNonce({ type: "alive", nonce: nonce.toUpperCase() }, nonce), false);
    assert.equal(carriesNonce({ type: "alive", nonce: "" }, ""), false);
    assert.equal(carriesNonce(null, nonce), false);
  });

  test("refused is a runner message", () => {
    assert.deepEqual(checkRunnerMessage({ type: "refused", nonce }), { type: "refused" });
  });
});
