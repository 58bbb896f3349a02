// The worker blob evaluates every usual way of writing a kernel expression, and reports kernel
// line numbers exactly.
import assert from "node:assert/strict";
import { test } from "node:test";
import vm from "node:vm";
import { kernelBlobParts } from "../src/blob.js";

// A stand-in bootstrap: records the thunk like the real one, in one line.
const BOOTSTRAP = "var __distribute = { start(thunk) { globalThis.thunk = thunk; } };";

function evaluate(kernelSource) {
  const { parts } = kernelBlobParts(BOOTSTRAP, kernelSource);
  const context = vm.createContext({});
  vm.runInContext(parts.join(""), context);
  return context.thunk();
}

const styles = {
  "an immediately invoked function (the seed's style)": "(function () {\n  function main(d) { return d * 2; }\n  return { main: main, loadStaticDataset: function () {} };\n})()",
  "an object literal in parentheses": "({ main(d) { return d * 2; } })",
  "a trailing semicolon": "({ main(d) { return d * 2; } });",
  "leading comments": "// doubles\n/* block */\n({ main(d) { return d * 2; } })",
  "a trailing line comment": "({ main(d) { return d * 2; } }) // end",
};

for (const [name, source] of Object.entries(styles)) {
  test(`a kernel written as ${name} evaluates`, () => {
    assert.equal(evaluate(source).main(21), 42);
  });
}

test("the kernel is not evaluated until the bootstrap asks", () => {
  const { parts } = kernelBlobParts(BOOTSTRAP, "(globalThis.ran = true, { main() {} })");
  const context = vm.createContext({});
  vm.runInContext(parts.join(""), context);
  assert.equal(context.ran, undefined);
  context.thunk();
  assert.equal(context.ran, true);
});

test("lineOffset maps blob lines to kernel lines", () => {
  const { parts, lineOffset } = kernelBlobParts(BOOTSTRAP, "({\n  main() {\n    throw new Error('line 3');\n  }\n})");
  const context = vm.createContext({});
  vm.runInContext(parts.join(""), context, { filename: "blob" });
  const error = (() => {
    try {
      context.thunk().main();
    } catch (e) {
      return e;
    }
  })();
  const line = Number(/blob:(\d+):/.exec(error.stack)[1]);
  assert.equal(line - lineOffset, 3);
});
