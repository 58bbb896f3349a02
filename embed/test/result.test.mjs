// A kernel's return value becomes result bytes by the headless worker's rules (JSON as
// JSON.stringify sees it); anything that would not survive unchanged is refused with a message
// that says where and what.
import assert from "node:assert/strict";
import { describe, test } from "node:test";
import { decode } from "@msgpack/msgpack";
import { encodeResultValue, ResultError } from "../src/result.js";
import { checkEncoded } from "../src/scan.js";

const LIMIT = 1024 * 1024;
const roundTrip = (value) => decode(encodeResultValue(value, LIMIT));

describe("values that are sent", () => {
  for (const value of [0, -3, 2.5, "text", "é😀", true, false, [1, "a", null], { a: { b: [1, 2] } }, { "": 1 }]) {
    test(`${JSON.stringify(value)} arrives unchanged`, () => assert.deepEqual(roundTrip(value), value));
  }

  test("null and undefined mean no result", () => {
    assert.equal(encodeResultValue(null, LIMIT), null);
    assert.equal(encodeResultValue(undefined, LIMIT), null);
  });

  test("class instances are sent as their own enumerable properties", () => {
    class Point {
      constructor() {
        this.x = 1;
        this.y = 2;
      }
      get norm() {
        return 5;
      }
    }
    assert.deepEqual(roundTrip(new Point()), { x: 1, y: 2 });
  });

  test("typed arrays are sent as plain arrays of numbers", () => {
    assert.deepEqual(roundTrip(Uint8Array.of(1, 2, 3)), [1, 2, 3]);
    assert.deepEqual(roundTrip({ v: new Float64Array([1.5, -2]) }), { v: [1.5, -2] });
  });

  test("toJSON is honoured: a Date becomes its ISO string", () => {
    assert.equal(roundTrip(new Date(0)), "1970-01-01T00:00:00.000Z");
    assert.deepEqual(roundTrip({ at: new Date(0) }), { at: "1970-01-01T00:00:00.000Z" });
  });

  test("boxed primitives are unwrapped", () => {
    assert.deepEqual(roundTrip([Object(1), Object("s"), Object(true)]), [1, "s", true]);
  });

  test("the bytes own their buffer exactly (ready to be transferred)", () => {
    const bytes = encodeResultValue([1, 2, 3], LIMIT);
    assert.equal(bytes.byteOffset, 0);
    assert.equal(bytes.buffer.byteLength, bytes.byteLength);
    assert.equal(checkEncoded(bytes), "");
  });

  test("a replaced array iterator in the kernel's realm does not corrupt the encoding", () => {
    const original = Array.prototype[Symbol.iterator];
    Array.prototype[Symbol.iterator] = function* () {
      yield "evil";
    };
    let bytes;
    try {
      bytes = encodeResultValue([1, 2, 3], LIMIT);
    } finally {
      Array.prototype[Symbol.iterator] = original;
    }
    assert.deepEqual(decode(bytes), [1, 2, 3]);
  });

  test("a polluted Object.prototype does not leak into the result", () => {
    Object.prototype.polluted = "yes";
    try {
      assert.deepEqual(Object.keys(decode(encodeResultValue({ a: 1 }, LIMIT))), ["a"]);
    } finally {
      delete Object.prototype.polluted;
    }
  });
});

describe("values that are refused", () => {
  const refused = {
    "a function": [() => 1, /the value is a function/],
    "a symbol": [Symbol("s"), /the value is a symbol/],
    "a BigInt": [10n, /BigInt/],
    NaN: [Number.NaN, /NaN \(not valid JSON\)/],
    Infinity: [{ x: Number.POSITIVE_INFINITY }, /property "x" is Infinity/],
    "a nested undefined": [[1, undefined], /element \[1\] is undefined/],
    "an undefined property": [{ a: 1, b: undefined }, /property "b" is undefined/],
    "a lone surrogate": [{ s: "a\ud800" }, /lone UTF-16 surrogate/],
    "a Map": [new Map([["a", 1]]), /a Map \(convert it with Object\.fromEntries\)/],
    "a Set": [{ s: new Set([1]) }, /property "s" is a Set/],
    "an ArrayBuffer": [new ArrayBuffer(2), /ArrayBuffer/],
    "a DataView": [new DataView(new ArrayBuffer(2)), /DataView/],
    "a nested function": [{ list: [1, { f() {} }] }, /property "f" is a function/],
  };
  for (const [name, [value, message]] of Object.entries(refused)) {
    test(`${name} is refused with a message saying where`, () => {
      assert.throws(
        () => encodeResultValue(value, LIMIT),
        (e) => e instanceof ResultError && /cannot be serialised/.test(e.message) && message.test(e.message),
      );
    });
  }

  test("a circular value is refused as too deep", () => {
    const a = [];
    a.push(a);
    assert.throws(() => encodeResultValue(a, LIMIT), /nested deeper than 100 levels/);
  });

  test("a toJSON that throws is reported", () => {
    assert.throws(() => encodeResultValue({ toJSON() { throw new TypeError("nope"); } }, LIMIT), /cannot be serialised: TypeError: nope/);
  });

  test("a result over the limit is refused before it is fully built", () => {
    assert.throws(() => encodeResultValue("x".repeat(2000), 1000), (e) => e instanceof ResultError && /too large.*1,000 bytes/.test(e.message));
    assert.throws(() => encodeResultValue(Array.from({ length: 5000 }, () => 1.5), 1000), /too large/);
  });

  test("a result exactly at the limit is sent", () => {
    const value = "x".repeat(995); // str16 header: 3 bytes → 998
    assert.equal(encodeResultValue(value, 998).length, 998);
    assert.throws(() => encodeResultValue(value, 997), /too large/);
  });
});
