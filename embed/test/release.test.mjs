// Which tasks a browser hands back (release.js), and the frames it sends for them.
import assert from "node:assert/strict";
import { test } from "node:test";
import { decode } from "@msgpack/msgpack";

import { canRelease, heldIds, releaseFrames, surplus } from "../src/release.js";

test("only a server that announced the feature is sent a release", () => {
  assert.equal(canRelease(["release"]), true);
  assert.equal(canRelease([]), false);
  assert.equal(canRelease(undefined), false); // a v1 server's campaign frame
});

test("the tasks held are those given to the runner and those still waiting in the session", () => {
  const pending = [{ campaign: { id: 2 } }, { tasks: [[7, new Uint8Array()], [8, new Uint8Array()]] }];
  assert.deepEqual(heldIds(new Set([3, 4]), pending).sort(), [3, 4, 7, 8]);
});

test("shrinking keeps the tasks computing in the workers that stay and hands back all others", () => {
  const { keep, release } = surplus([1, 2, 3, 4, 5, 6], [1, 3, 5], 1);
  assert.deepEqual(keep, [1]);
  assert.deepEqual(release, [2, 3, 4, 5, 6]);
});

test("growing keeps every task computing and hands back the prefetched ones", () => {
  const { keep, release } = surplus([1, 2, 3], [1], 3);
  assert.deepEqual(keep, [1]);
  assert.deepEqual(release, [2, 3]);
});

test("a task the runner reported but the session no longer holds is not kept", () => {
  assert.deepEqual(surplus([2], [1, 2], 2), { keep: [2], release: [] });
});

test("release frames are final and hold at most 256 ids each", () => {
  const ids = Array.from({ length: 300 }, (_, i) => i);
  const frames = releaseFrames(ids, true).map((frame) => decode(frame));
  assert.deepEqual(frames.map((f) => f.ids.length), [256, 44]);
  assert.ok(frames.every((f) => f.t === "release" && f.final === true));
  assert.deepEqual(frames.flatMap((f) => f.ids), ids);
});

test("a final release with no ids is still sent: it tells the server to send no more", () => {
  assert.deepEqual(releaseFrames([], true).map((frame) => decode(frame)), [{ t: "release", ids: [], final: true }]);
  assert.deepEqual(releaseFrames([], false), []);
});
