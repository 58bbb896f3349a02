// Throttle levels map to workers and CPU share; the duty cycle keeps compute time at that share.
import assert from "node:assert/strict";
import { describe, test } from "node:test";
import { DutyCycle, plan } from "../src/throttle.js";

describe("plan", () => {
  test("low uses one worker at a quarter of the time", () => {
    assert.deepEqual(plan("low", 8), { level: "low", workers: 1, duty: 0.25, depth: 1, slots: 2 });
  });

  test("high uses every core but one, all the time, two tasks deep", () => {
    assert.deepEqual(plan("high", 8), { level: "high", workers: 7, duty: 1, depth: 2, slots: 21 });
  });

  test("medium uses half of the spare cores at half the time", () => {
    const p = plan("medium", 8);
    assert.equal(p.workers, 3);
    assert.equal(p.duty, 0.5);
  });

  test("every level keeps at least one worker on one or two cores", () => {
    for (const cores of [1, 2]) {
      for (const level of ["low", "medium", "high"]) assert.equal(plan(level, cores).workers, 1);
    }
  });

  test("an unknown core count counts as two", () => {
    assert.equal(plan("high", undefined).workers, 1);
  });

  test("an unknown level falls back to low", () => {
    assert.equal(plan("turbo", 8).level, "low");
  });

  test("slots cover what the workers hold plus one waiting per worker", () => {
    for (const level of ["low", "medium", "high"]) {
      const p = plan(level, 16);
      assert.equal(p.slots, p.workers * (p.depth + 1));
    }
  });

  test("slots never exceed the protocol's 256", () => {
    assert.ok(plan("high", 1024).slots <= 256);
  });
});

describe("DutyCycle", () => {
  // Runs tasks of `taskMs` for `total` ms of compute and returns busy / (busy + rest).
  function share(duty, taskMs, total = 60000) {
    const cycle = new DutyCycle(duty);
    let busy = 0;
    let rest = 0;
    while (busy < total) {
      busy += taskMs;
      rest += cycle.rest(taskMs);
    }
    rest += cycle.debt; // what is still owed is rested before the next task anyway
    return busy / (busy + rest);
  }

  for (const duty of [0.25, 0.5]) {
    for (const taskMs of [0.2, 3, 40, 5000]) {
      test(`keeps compute at ${duty} of wall time with ${taskMs} ms tasks`, () => {
        assert.ok(Math.abs(share(duty, taskMs) - duty) < 0.001);
      });
    }
  }

  test("full duty never rests", () => {
    const cycle = new DutyCycle(1);
    assert.equal(cycle.rest(1000), 0);
  });

  test("short rests add up to at least the quantum before the worker sleeps", () => {
    const cycle = new DutyCycle(0.5, 50);
    assert.equal(cycle.rest(10), 0);
    assert.equal(cycle.rest(10), 0);
    assert.equal(cycle.rest(10), 0);
    assert.equal(cycle.rest(10), 0);
    assert.equal(cycle.rest(10), 50);
  });

  test("a long task is followed by a proportional rest", () => {
    assert.equal(new DutyCycle(0.25).rest(1000), 3000);
  });

  test("zero or invalid busy times cost no rest", () => {
    const cycle = new DutyCycle(0.25);
    assert.equal(cycle.rest(0), 0);
    assert.equal(cycle.rest(Number.NaN), 0);
    assert.equal(cycle.rest(-5), 0);
  });
});
