// The msgpack scanner finds value boundaries exactly and applies the server's strictness rules.
import assert from "node:assert/strict";
import { describe, test } from "node:test";
import { encode } from "@msgpack/msgpack";
import { checkEncoded, isUtf8, readInt, ScanError, scanValue } from "../src/scan.js";

const samples = [
  null,
  true,
  false,
  0,
  127,
  128,
  -1,
  -33,
  255,
  65535,
  65536,
  2 ** 32,
  -(2 ** 31),
  -(2 ** 40),
  1.5,
  Number.NaN,
  "",
  "a".repeat(31),
  "a".repeat(32),
  "é".repeat(200),
  "x".repeat(70000),
  [],
  Array.from({ length: 20 }, (_, i) => i),
  Array.from({ length: 70000 }, () => 1),
  {},
  Object.fromEntries(Array.from({ length: 20 }, (_, i) => [`k${i}`, i])),
  { nested: { deeper: [1, { x: "y" }] } },
  new Uint8Array(10),
  new Uint8Array(300),
  new Uint8Array(70000),
];

describe("scanValue", () => {
  for (const value of samples) {
    const label = JSON.stringify(value)?.slice(0, 40) ?? String(value);
    test(`finds the end of ${label}`, () => {
      const bytes = encode(value);
      assert.equal(scanValue(bytes, 0), bytes.length);
    });
  }

  test("finds the end of a value in the middle of a buffer", () => {
    const a = encode({ a: [1, 2, 3] });
    const b = encode("next");
    const joined = new Uint8Array([...a, ...b]);
    assert.equal(scanValue(joined, 0), a.length);
    assert.equal(scanValue(joined, a.length), joined.length);
  });

  test("refuses truncated values", () => {
    for (const value of [{ a: 1 }, "long string here", [1, 2, 3], 2 ** 40, new Uint8Array(5)]) {
      const bytes = encode(value);
      assert.throws(() => scanValue(bytes.subarray(0, bytes.length - 1), 0), ScanError);
    }
  });

  test("refuses an array header that claims more elements than bytes remain", () => {
    assert.throws(() => scanValue(Uint8Array.of(0xdd, 0xff, 0xff, 0xff, 0xff), 0), ScanError);
  });
});

describe("strict values (what a client may send)", () => {
  test("a well-formed value passes", () => {
    assert.equal(checkEncoded(encode({ ok: [1, "two", null, 3.5, new Uint8Array(2)] })), "");
  });

  test("integer map keys are refused (the server decodes with strict_map_key)", () => {
    assert.match(checkEncoded(Uint8Array.of(0x81, 0x01, 0xa1, 0x61)), /keys must be strings/); // {1: "a"}
  });

  test("extension types are refused", () => {
    assert.match(checkEncoded(encode(new Date(0))), /extension/);
  });

  test("invalid UTF-8 in a string is refused", () => {
    // fixstr of 3 bytes: ED A0 80 is an encoded lone surrogate (what a naive encoder emits)
    assert.match(checkEncoded(Uint8Array.of(0xa3, 0xed, 0xa0, 0x80)), /UTF-8/);
  });

  test("trailing bytes are refused", () => {
    assert.match(checkEncoded(Uint8Array.of(0xc0, 0xc0)), /trailing/);
  });

  test("nesting deeper than the encoder allows is refused", () => {
    let value = 1;
    for (let i = 0; i < 150; i++) value = [value];
    assert.match(checkEncoded(encode(value, { maxDepth: 1000 })), /nested deeper/);
  });

  test("the unused byte 0xc1 is refused", () => {
    assert.match(checkEncoded(Uint8Array.of(0xc1)), /invalid msgpack byte/);
  });
});

describe("isUtf8", () => {
  const check = (...b) => isUtf8(Uint8Array.from(b), 0, b.length);
  test("accepts ASCII, 2-, 3- and 4-byte sequences", () => {
    const text = new TextEncoder().encode("aé€😀");
    assert.equal(isUtf8(text, 0, text.length), true);
  });
  test("refuses overlong encodings", () => assert.equal(check(0xc0, 0xaf), false));
  test("refuses surrogates", () => assert.equal(check(0xed, 0xa0, 0x80), false));
  test("refuses code points above U+10FFFF", () => assert.equal(check(0xf4, 0x90, 0x80, 0x80), false));
  test("refuses a sequence cut by the end", () => assert.equal(check(0xe2, 0x82), false));
  test("refuses a stray continuation byte", () => assert.equal(check(0x80), false));
});

describe("readInt", () => {
  test("reads every integer encoding", () => {
    for (const n of [0, 5, 127, 200, 60000, 70000, 2 ** 40, -5, -100, -30000, -(2 ** 31), -(2 ** 40)]) {
      const bytes = encode(n);
      assert.deepEqual(readInt(bytes, 0), [n, bytes.length]);
    }
  });
  test("refuses integers beyond 2^53 instead of rounding them", () => {
    assert.throws(() => readInt(encode(2n ** 60n, { useBigInt64: true }), 0), ScanError);
  });
  test("refuses a non-integer", () => {
    assert.throws(() => readInt(encode("1"), 0), ScanError);
  });
});
