// The runner's frame-ancestors must name every page above the broker: the broker lists them.
import assert from "node:assert/strict";
import { test } from "node:test";

import { ancestorOrigins } from "../src/session.js";

test("every ancestor origin, nearest first, where the browser lists them", () => {
  const loc = { ancestorOrigins: ["https://blog.example", "https://top.example"] };
  assert.deepEqual(ancestorOrigins({ referrer: "https://other.example/x" }, loc), ["https://blog.example", "https://top.example"]);
});

test("the referrer's origin where it does not", () => {
  assert.deepEqual(ancestorOrigins({ referrer: "https://blog.example/post/1" }, {}), ["https://blog.example"]);
});

test("none when neither is known", () => {
  assert.deepEqual(ancestorOrigins({ referrer: "" }, {}), []);
  assert.deepEqual(ancestorOrigins({ referrer: "not a url" }, {}), []);
});
