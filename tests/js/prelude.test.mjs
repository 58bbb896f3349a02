// The sandbox prelude (distribute/sandbox/prelude.js) in plain node: loaded into a fresh `vm`
// context as the sandbox child loads it into a fresh isolate, then driven through `__d` the way
// the child drives it. Every answer is one string: "R"/"N" + JSON, or "E" + JSON for a failure.
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { test } from "node:test";
import vm from "node:vm";

const PRELUDE = readFileSync(new URL("../../distribute/sandbox/prelude.js", import.meta.url), "utf8");
const BIG = 1 << 30; // size limits that never bite

function harness() {
  const context = vm.createContext({});
  vm.runInContext(PRELUDE, context);
  return { d: context.__d, context };
}

// "R{...}" -> ["R", {...}]; "R" -> ["R", null]
function answer(text) {
  assert.equal(typeof text, "string");
  return [text[0], text.length > 1 ? JSON.parse(text.slice(1)) : null];
}

function generator(source, limit = 1_000_000) {
  const { d } = harness();
  const opened = answer(d.genOpen(source, limit));
  return { d, opened };
}

test("__d cannot be replaced, redefined or changed by owner code", () => {
  const { d, context } = harness();
  // errors of another realm: matched by name
  const typeError = { name: "TypeError" };
  assert.throws(() => vm.runInContext('"use strict"; __d = {}', context), typeError);
  assert.throws(() => vm.runInContext("Object.defineProperty(globalThis, '__d', {value: 1})", context), typeError);
  assert.throws(() => vm.runInContext('"use strict"; __d.pull = null', context), typeError);
  assert.equal(context.__d, d);
  assert.ok(Object.isFrozen(d));
});

test("array mode: pull hands out n datasets per batch, then says done", () => {
  const { d, opened } = generator("({main() { return [1, 'two', {three: [3]}, null, true]; }})");
  assert.deepEqual(opened, ["R", { mode: "array", count: 5 }]);
  assert.deepEqual(answer(d.pull(2, 1000, BIG, BIG)), ["R", { done: false, items: [1, "two"] }]);
  assert.deepEqual(answer(d.pull(10, 1000, BIG, BIG)), ["R", { done: true, items: [{ three: [3] }, null, true] }]);
  assert.deepEqual(answer(d.pull(10, 1000, BIG, BIG)), ["R", { done: true, items: [] }]);
});

test("a batch stops early once its JSON passes the batch budget, and is not done then", () => {
  const { d } = generator("({main: function* () { for (let i = 0; i < 10; i++) yield 'x'.repeat(10); }})");
  // each item is 12 characters of JSON: the batch ends with the item that crosses 30
  const [, first] = answer(d.pull(100, 1000, BIG, 30));
  assert.equal(first.items.length, 3);
  assert.equal(first.done, false);
  let total = first.items.length;
  for (let batch = answer(d.pull(100, 1000, BIG, 30))[1]; ; batch = answer(d.pull(100, 1000, BIG, 30))[1]) {
    total += batch.items.length;
    if (batch.done) break;
  }
  assert.equal(total, 10);
});

test("a batch stops early when its time budget is spent", () => {
  const slow = "({main: function* () { for (;;) { const t = Date.now(); while (Date.now() - t < 5) {} yield 1; } }})";
  const { d } = generator(slow);
  const [, batch] = answer(d.pull(1000, 20, BIG, BIG));
  assert.ok(batch.items.length >= 1 && batch.items.length < 1000, `${batch.items.length} items`);
  assert.equal(batch.done, false);
});

test("iterator mode counts what it yields against the dataset limit", () => {
  const { d, opened } = generator("({main: function* () { for (let i = 0; ; i++) yield i; }})", 5);
  assert.deepEqual(opened, ["R", { mode: "iterator", count: null }]);
  assert.deepEqual(answer(d.pull(3, 1000, BIG, BIG)), ["R", { done: false, items: [0, 1, 2] }]);
  assert.deepEqual(answer(d.pull(10, 1000, BIG, BIG)), ["E", { kind: "count", count: 6 }]);
  // an array over the limit is refused when main() returns
  assert.deepEqual(generator("({main() { return [1, 2, 3]; }})", 2).opened, ["E", { kind: "count", count: 3 }]);
});

test("a dataset whose JSON is over the item limit is reported with its index and size", () => {
  const { d } = generator("({main() { return ['ok', 'x'.repeat(100)]; }})");
  assert.deepEqual(answer(d.pull(10, 1000, 50, BIG)), ["E", { kind: "size", index: 1, size: 102, json: true }]);
});

test("unserialisable datasets are named precisely; typed arrays travel as arrays", () => {
  const cases = {
    "{f: function () {}}": 'property "f" is a function',
    "[1, undefined]": "element [1] is undefined",
    "{x: NaN}": 'property "x" is NaN (not valid JSON)',
    "{n: 10n}": 'property "n" is a BigInt (convert it to a number or a string)',
    "{s: Symbol('s')}": 'property "s" is a symbol',
    "new Map()": "the value is a Map (convert it with Object.fromEntries)",
    "{b: new ArrayBuffer(2)}": 'property "b" is an ArrayBuffer (use a plain array or a typed array)',
    "{t: '\\uD800'}": 'property "t" is a string with a lone UTF-16 surrogate',
  };
  for (const [value, message] of Object.entries(cases)) {
    const { d } = generator(`({main() { return [0, ${value}]; }})`);
    assert.deepEqual(answer(d.pull(10, 1000, BIG, BIG)), ["E", { kind: "serialise", message, index: 1 }], value);
  }
  const { d } = generator("({main() { return [{bytes: new Uint8Array([1, 2, 3])}]; }})");
  assert.deepEqual(answer(d.pull(10, 1000, BIG, BIG)), ["R", { done: true, items: [{ bytes: [1, 2, 3] }] }]);
  const [kind, cycle] = answer(generator("({main() { const o = {}; o.o = o; return [o]; }})").d.pull(1, 1000, BIG, BIG));
  assert.equal(kind, "E");
  assert.equal(cycle.kind, "serialise");
  assert.match(cycle.message, /circular/);
});

test("skip advances without encoding, in both modes", () => {
  const lazy = generator("({main: function* () { for (let i = 0; i < 1000; i++) yield i; }})").d;
  assert.deepEqual(answer(lazy.skip(600, 1000)), ["R", { skipped: 600, done: false }]);
  assert.deepEqual(answer(lazy.pull(2, 1000, BIG, BIG)), ["R", { done: false, items: [600, 601] }]);
  assert.deepEqual(answer(lazy.skip(10_000, 1000)), ["R", { skipped: 398, done: true }]);
  const array = generator("({main() { return [1, 2, 3]; }})").d;
  assert.deepEqual(answer(array.skip(2, 1000)), ["R", { skipped: 2, done: false }]);
  assert.deepEqual(answer(array.pull(5, 1000, BIG, BIG)), ["R", { done: true, items: [3] }]);
});

test("what genOpen reports: syntax errors before anything runs, throws, and wrong shapes", () => {
  // the form tells the child how to locate the error: a bare object literal is parsed as an expression
  assert.deepEqual(generator("{main() { return [1, }}").opened, ["E", { kind: "syntax", form: "expression" }]);
  assert.deepEqual(generator("({main() { return [1, }})").opened, ["E", { kind: "syntax", form: "script" }]);
  const { context } = harness();
  context.__d.genOpen("globalThis.ran = true; ({main() { return [1, }})", 10);
  assert.equal(context.ran, undefined);
  const [kind, thrown] = generator("({main() { throw new TypeError('no datasets today'); }})").opened;
  assert.equal(kind, "E");
  assert.equal(thrown.kind, "throw");
  assert.equal(thrown.message, "TypeError: no datasets today");
  assert.match(thrown.stack, /generator\.js/);
  assert.equal(generator("(function () { throw new Error('early'); })()").opened[1].kind, "evaluate");
  assert.deepEqual(generator("42").opened, [
    "E",
    { kind: "shape", message: "the generator must evaluate to an object with a main function; it evaluated to a number" },
  ]);
  assert.match(generator("({main: async () => []})").opened[1].message, /returned a Promise/);
  // a bare object literal is accepted as the generator
  assert.deepEqual(generator("{main() { return []; }}").opened, ["R", { mode: "array", count: 0 }]);
});

test("kernels: loadStaticDataset once, then main per dataset; null and undefined answer N", () => {
  const { d } = harness();
  const kernel = "({loadStaticDataset(t) { this.k = JSON.parse(t).k; }, main(d) { return d.x ? d.x * this.k : d.none; }})";
  assert.equal(d.kernelOpen(kernel, '{"k": 3}'), "R");
  assert.deepEqual(answer(d.run('{"x": 5}')), ["R", 15]);
  assert.equal(d.run("{}"), "N");
  assert.deepEqual(answer(d.run('{"x": {}}')), ["E", { kind: "serialise", message: "the value is NaN (not valid JSON)" }]);
  const shape = (source) => answer(harness().d.kernelOpen(source, ""));
  assert.deepEqual(shape("({loadStaticDataset() {}})"), [
    "E",
    { kind: "shape", message: "the kernel's main is not a function (it is undefined)" },
  ]);
  assert.deepEqual(shape("({main() {}, loadStaticDataset: 3})"), [
    "E",
    { kind: "shape", message: "the kernel's loadStaticDataset is not a function (it is a number)" },
  ]);
  assert.deepEqual(shape("'k'"), [
    "E",
    {
      kind: "shape",
      message: "the kernel must evaluate to an object with main and loadStaticDataset functions; it evaluated to a string",
    },
  ]);
  const [kind, error] = shape("({main() {}, loadStaticDataset() { throw new Error('no static'); }})");
  assert.deepEqual([kind, error.kind, error.message], ["E", "static", "Error: no static"]);
});

test("async kernels settle into the same answers", async () => {
  const { d } = harness();
  assert.equal(d.kernelOpen("({main: async (d) => { await null; if (d.bad) throw new Error('bad'); return [d.x]; }})", ""), "R");
  assert.deepEqual(answer(await d.run('{"x": 1}')), ["R", [1]]);
  const [kind, error] = answer(await d.run('{"bad": true}'));
  assert.deepEqual([kind, error.kind, error.message], ["E", "throw", "Error: bad"]);
});

test("owner code that replaces JSON or Array cannot confuse the harness", () => {
  const { d } = generator("JSON.stringify = () => 'x'; Array.isArray = () => false; ({main() { return [[1], {a: 2}]; }})");
  assert.deepEqual(answer(d.pull(10, 1000, BIG, BIG)), ["R", { done: true, items: [[1], { a: 2 }] }]);
});

test("compiles checks a function body without running it", () => {
  const { d, context } = harness();
  assert.deepEqual(answer(d.compiles("var kernel =\n({main(d) { return d; }})\n;\nreturn kernel;\n")), ["R", { error: null }]);
  assert.deepEqual(answer(d.compiles("globalThis.ran = true; while (true) {}")), ["R", { error: null }]);
  assert.equal(context.ran, undefined);
  assert.deepEqual(answer(d.compiles("return [1, ;")), ["R", { error: "SyntaxError: Unexpected token ';'" }]);
});

test("owner code that replaces Array.prototype methods or Math.min cannot change a batch or a skip", () => {
  const tamper =
    "var join = Array.prototype.join;" +
    "Array.prototype.join = function () { return join.call(new Array(20000).fill('0'), ','); };" +
    "Array.prototype.push = function () { return 0; }; Math.min = function () { return 1e9; };";
  const lazy = generator(`({main: function* () { ${tamper} for (let i = 0; ; i++) yield i; }})`, 5);
  assert.deepEqual(answer(lazy.d.pull(2, 1000, BIG, BIG)), ["R", { done: false, items: [0, 1] }]);
  assert.deepEqual(answer(lazy.d.pull(2, 1000, BIG, BIG)), ["R", { done: false, items: [2, 3] }]);
  assert.deepEqual(answer(lazy.d.pull(10, 1000, BIG, BIG)), ["E", { kind: "count", count: 6 }]);
  const array = generator(`({main() { ${tamper} return [0, 1, 2, 3, 4, 5, 6]; }})`);
  assert.deepEqual(answer(array.d.skip(2, 1000)), ["R", { skipped: 2, done: false }]);
  assert.deepEqual(answer(array.d.pull(3, 1000, BIG, BIG)), ["R", { done: false, items: [2, 3, 4] }]);
});
