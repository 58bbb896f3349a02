// Protocol v1 in the browser must produce and accept exactly the frames of distribute/protocol.py.
// The golden frames below were made by that module (see the comment on GOLDEN).
import assert from "node:assert/strict";
import { describe, test } from "node:test";
import { decode, encode } from "@msgpack/msgpack";
import {
  CLOSE_PROTOCOL_ERROR,
  CLOSE_UNSUPPORTED_DATA,
  decodeServer,
  encodeCheckpoint,
  encodeError,
  encodeHello,
  encodePing,
  encodeProgress,
  encodeRelease,
  encodeResult,
  encodeResults,
  ProtocolError,
} from "../src/protocol.js";
import { checkEncoded } from "../src/scan.js";

// Made with distribute.protocol.encode / encode_tasks (Python), e.g.
// encode(Result(task=42, value={"primes": [2, 3, 5]}, compute_ms=1.5)).hex()
const GOLDEN = {
  hello: "86a174a568656c6c6fa17601a863616d706169676e07a5736c6f747303a6636c69656e7482a46b696e64a762726f77736572a4686f7374b368747470733a2f2f6578616d706c652e6f7267a46861766591a3616263",
  result: "84a174a6726573756c74a269642aa576616c756581a67072696d657393020305a26d73cb3ff8000000000000",
  results: "82a174a7726573756c7473a56974656d73929301920102cb3fe00000000000009302c0cb0000000000000000",
  error: "85a174a56572726f72a2696409a76d657373616765ac547970654572726f723a2078a5737461636ba76174206d61696ea26d73cb4000000000000000",
  ping: "82a174a470696e67a16e05",
  release: "83a174a772656c65617365a3696473920709a566696e616cc3", // Release(tasks=(7, 9), final=True)
  campaignFeatures: "89a174a863616d706169676ea2696403a46e616d65a65072696d6573a468617368a26831a66b65726e656cc0a6737461746963c0ac7461736b5f74696d656f7574cb403e000000000000b06d61785f726573756c745f6279746573ce00100000a8666561747572657391a772656c65617365",
  campaign: "88a174a863616d706169676ea2696403a46e616d65a65072696d6573a468617368a26831a66b65726e656cb5287b6d61696e2864297b72657475726e20647d7d29a6737461746963a0ac7461736b5f74696d656f7574cb403e000000000000b06d61785f726573756c745f6279746573ce00100000",
  tasks: "82a174a57461736b73a57461736b7392920a82a36d696e00a36d61786492cf00000100000000009301a161c0",
  idle: "82a174a469646c65a6726561736f6ea76e6f20776f726b",
  bye: "82a174a3627965a6726561736f6ea8636f6d706c657465",
  pong: "82a174a4706f6e67a16e05",
  // v1.1: a reissued task with its resume state, and the kernel's ctx frames
  resumed: "82a174a57461736b73a57461736b7391930581a16e01c40781a47374657006",
  progress: "83a174a870726f6772657373a2696405a166cb3fe0000000000000",
  checkpoint: "83a174aa636865636b706f696e74a2696405a57374617465c40781a47374657006",
};
const bytes = (hex) => Uint8Array.from(hex.match(/../g), (h) => parseInt(h, 16));
const hex = (u8) => Buffer.from(u8).toString("hex");

describe("client frames", () => {
  test("hello decodes to the same map as the server's own encoding", () => {
    const frame = encodeHello({ campaign: 7, slots: 3, client: { kind: "browser", host: "https://example.org" }, have: ["abc"] });
    assert.deepEqual(decode(frame), decode(bytes(GOLDEN.hello)));
  });

  test("hello for any campaign sends campaign nil", () => {
    assert.equal(decode(encodeHello({ slots: 1 })).campaign, null);
  });

  test("hello keeps only str and number client values, at most 16", () => {
    const client = { kind: "browser", nested: { a: 1 }, flag: true, n: 2 };
    for (let i = 0; i < 30; i++) client[`k${i}`] = "v";
    const sent = decode(encodeHello({ slots: 1, client })).client;
    assert.equal(sent.kind, "browser");
    assert.equal(sent.n, 2);
    assert.ok(!("nested" in sent) && !("flag" in sent));
    assert.ok(Object.keys(sent).length <= 16);
  });

  test("hello refuses slots outside 1..256", () => {
    assert.throws(() => encodeHello({ slots: 0 }), RangeError);
    assert.throws(() => encodeHello({ slots: 257 }), RangeError);
  });

  test("a result frame splices the encoded value in, byte for byte as the server encodes it", () => {
    const frame = encodeResult(42, encode({ primes: [2, 3, 5] }), 1.5);
    assert.equal(hex(frame), GOLDEN.result);
  });

  test("a result without value sends nil", () => {
    assert.deepEqual(decode(encodeResult(3, null, 2.5)), { t: "result", id: 3, value: null, ms: 2.5 });
  });

  test("a results frame carries [id, value, ms] items", () => {
    const frame = encodeResults([
      [1, encode([1, 2]), 0.5],
      [2, null, 0],
    ]);
    assert.deepEqual(decode(frame), decode(bytes(GOLDEN.results)));
  });

  test("a results frame with 16 or more items uses an array16 header", () => {
    const items = Array.from({ length: 300 > 256 ? 256 : 300 }, (_, i) => [i, encode(i), 1]);
    const body = decode(encodeResults(items));
    assert.equal(body.items.length, 256);
    assert.deepEqual(body.items[255], [255, 255, 1]);
  });

  test("a results frame refuses zero or more than 256 items", () => {
    assert.throws(() => encodeResults([]), RangeError);
    assert.throws(() => encodeResults(Array.from({ length: 257 }, (_, i) => [i, null, 0])), RangeError);
  });

  test("an error frame matches the server's", () => {
    assert.deepEqual(decode(encodeError(9, "TypeError: x", "at main", 2)), decode(bytes(GOLDEN.error)));
  });

  test("error text with lone surrogates is sent as valid UTF-8", () => {
    const frame = encodeError(1, "bad \ud800 text", "\udfff", 0);
    const body = decode(frame);
    assert.equal(body.message, "bad \ufffd text");
    assert.equal(checkEncoded(frame), ""); // every str in the frame is valid UTF-8
  });

  test("error text is clipped so the frame stays small", () => {
    const body = decode(encodeError(1, "m".repeat(100000), "s".repeat(100000), 0));
    assert.ok(body.message.length <= 4096);
    assert.ok(body.message.length + body.stack.length <= 64 * 1024);
  });

  test("negative or non-finite compute times are sent as 0", () => {
    assert.equal(decode(encodeResult(1, null, -5)).ms, 0);
    assert.equal(decode(encodeResult(1, null, NaN)).ms, 0);
  });

  test("progress and checkpoint frames match the server's", () => {
    assert.equal(hex(encodeProgress(5, 0.5)), GOLDEN.progress);
    assert.equal(hex(encodeCheckpoint(5, encode({ step: 6 }))), GOLDEN.checkpoint);
  });

  test("ping matches the server's", () => {
    assert.equal(hex(encodePing(5)), GOLDEN.ping);
  });
});

describe("release (v1.1)", () => {
  test("a release frame matches the server's", () => {
    assert.equal(hex(encodeRelease([7, 9], true)), GOLDEN.release);
  });

  test("a release is not final unless said", () => {
    assert.deepEqual(decode(encodeRelease([1])), { t: "release", ids: [1], final: false });
  });

  test("a release frame refuses more than 256 ids", () => {
    assert.throws(() => encodeRelease(Array.from({ length: 257 }, (_, i) => i)), RangeError);
  });
});

describe("server frames", () => {
  test("a tasks frame gives each dataset's bytes without decoding them", () => {
    const msg = decodeServer(bytes(GOLDEN.tasks));
    assert.equal(msg.t, "tasks");
    assert.deepEqual(
      msg.tasks.map(([id]) => id),
      [10, 2 ** 40],
    );
    assert.deepEqual(decode(msg.tasks[0][1]), { min: 0, max: 100 });
    assert.deepEqual(decode(msg.tasks[1][1]), [1, "a", null]);
  });

  test("a tasks frame given as an ArrayBuffer decodes the same", () => {
    const u8 = bytes(GOLDEN.tasks);
    assert.equal(decodeServer(u8.buffer).tasks.length, 2);
  });

  test("a campaign frame", () => {
    const msg = decodeServer(bytes(GOLDEN.campaign));
    assert.deepEqual(msg, {
      t: "campaign",
      id: 3,
      name: "Primes",
      hash: "h1",
      kernel: "({main(d){return d}})",
      static: "",
      taskTimeout: 30,
      maxResultBytes: 1048576,
      features: [], // a v1 server lists none
      progress: false,
      checkpointMaxBytes: 0,
      checkpointInterval: 0,
    });
  });

  test("a reissued task carries the state it resumes from (v1.1)", () => {
    const [[id, dataset, state]] = decodeServer(bytes(GOLDEN.resumed)).tasks;
    assert.equal(id, 5);
    assert.deepEqual(decode(dataset), { n: 1 });
    assert.deepEqual(decode(state), { step: 6 });
  });

  test("a new task resumes from nothing", () => {
    assert.equal(decodeServer(bytes(GOLDEN.tasks)).tasks[0][2], null);
  });

  test("a campaign frame announces progress and checkpoints with their limits", () => {
    const frame = encode({ t: "campaign", id: 3, name: "P", hash: "h", kernel: null, static: null, task_timeout: 5, max_result_bytes: 10,
      features: ["release", "progress", "checkpoint"], checkpoint_max_bytes: 65536, checkpoint_interval: 10 });
    const msg = decodeServer(frame);
    assert.deepEqual([msg.progress, msg.checkpointMaxBytes, msg.checkpointInterval], [true, 65536, 10]);
  });

  test("checkpoints are off when the server does not list them, whatever limit it names", () => {
    const frame = encode({ t: "campaign", id: 3, name: "P", hash: "h", kernel: null, static: null, task_timeout: 5, max_result_bytes: 10,
      features: ["release"], checkpoint_max_bytes: 65536 });
    assert.equal(decodeServer(frame).checkpointMaxBytes, 0);
  });

  test("a v1.1 campaign frame lists the server's features", () => {
    assert.deepEqual(decodeServer(bytes(GOLDEN.campaignFeatures)).features, ["release"]);
  });

  test("features that are not short strings are left out, not a protocol error", () => {
    const base = { t: "campaign", id: 3, name: "P", hash: "h", kernel: null, static: null, task_timeout: 5, max_result_bytes: 10 };
    assert.deepEqual(decodeServer(encode({ ...base, features: "release" })).features, []);
    assert.deepEqual(decodeServer(encode({ ...base, features: [1, "release", "x".repeat(65)] })).features, ["release"]);
  });

  test("a campaign frame without kernel (the client has the hash)", () => {
    const frame = encode({ t: "campaign", id: 3, name: "P", hash: "h", kernel: null, static: null, task_timeout: 5, max_result_bytes: 10 });
    const msg = decodeServer(frame);
    assert.equal(msg.kernel, null);
    assert.equal(msg.static, null);
  });

  test("idle, bye and pong", () => {
    assert.deepEqual(decodeServer(bytes(GOLDEN.idle)), { t: "idle", reason: "no work" });
    assert.deepEqual(decodeServer(bytes(GOLDEN.bye)), { t: "bye", reason: "complete" });
    assert.deepEqual(decodeServer(bytes(GOLDEN.pong)), { t: "pong", n: 5 });
  });

  test("a text frame is refused with 1003", () => {
    assert.throws(() => decodeServer("hello"), (e) => e instanceof ProtocolError && e.code === CLOSE_UNSUPPORTED_DATA);
  });

  const malformed = {
    "not a map": encode([1, 2]),
    "no type": encode({ x: 1 }),
    "unknown type": encode({ t: "surprise" }),
    truncated: bytes(GOLDEN.tasks).subarray(0, 20),
    "trailing bytes": Uint8Array.from([...bytes(GOLDEN.idle), 0xc0]),
    "task not a pair": encode({ t: "tasks", tasks: [[1]] }),
    "negative task id": encode({ t: "tasks", tasks: [[-1, 0]] }),
    "task id beyond 2^53": encode({ t: "tasks", tasks: [[2n ** 60n, 0]] }, { useBigInt64: true }),
    "campaign without timeout": encode({ t: "campaign", id: 1, name: "", hash: "h", kernel: "", static: "", max_result_bytes: 1 }),
    "campaign with id 0": encode({ t: "campaign", id: 0, name: "", hash: "h", kernel: "", static: "", task_timeout: 1, max_result_bytes: 1 }),
    "invalid byte 0xc1": Uint8Array.of(0xc1),
  };
  for (const [name, frame] of Object.entries(malformed)) {
    test(`a malformed frame (${name}) is a protocol error with 1002`, () => {
      assert.throws(() => decodeServer(frame), (e) => e instanceof ProtocolError && e.code === CLOSE_PROTOCOL_ERROR);
    });
  }
});

test("hello carries a site ticket only when there is one", () => {
  assert.equal(decode(encodeHello({ slots: 2, site: "abc.def" })).site, "abc.def");
  assert.equal("site" in decode(encodeHello({ slots: 2 })), false);
  assert.equal("site" in decode(encodeHello({ slots: 2, site: "x".repeat(2049) })), false);
});
