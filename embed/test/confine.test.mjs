// The bootstrap removes capabilities the runner's policy does not govern, wherever they are defined.
import assert from "node:assert/strict";
import { test } from "node:test";
import { confine, remove, REMOVED_GLOBALS } from "../src/confine.js";

function scopeLike() {
  // Like a worker's global: own constructors, an accessor on a prototype, a navigator with a prototype getter.
  class WorkerNavigator {}
  Object.defineProperty(WorkerNavigator.prototype, "gpu", { get: () => ({ requestAdapter() {} }), configurable: true });
  class WorkerGlobalScope {}
  Object.defineProperty(WorkerGlobalScope.prototype, "fonts", { get: () => ({}), configurable: true });
  const scope = new WorkerGlobalScope();
  for (const name of ["Worker", "RTCPeerConnection", "WebTransport", "FontFace", "OffscreenCanvas", "fetch"]) {
    Object.defineProperty(scope, name, { value: function () {}, writable: true, configurable: true });
  }
  scope.navigator = new WorkerNavigator();
  return scope;
}

test("every listed global and navigator.gpu are gone, fetch stays", () => {
  const scope = scopeLike();
  assert.deepEqual(confine(scope), []);
  for (const name of REMOVED_GLOBALS) assert.equal(scope[name], undefined, name);
  assert.equal(scope.navigator.gpu, undefined);
  assert.equal(typeof scope.fetch, "function");
});

test("a property that cannot be deleted is shadowed", () => {
  const proto = {};
  Object.defineProperty(proto, "FontFace", { value: function () {}, configurable: false });
  const target = Object.create(proto);
  assert.equal(remove(target, "FontFace"), true);
  assert.equal(target.FontFace, undefined);
});

test("a property that can be neither deleted nor shadowed is reported", () => {
  const target = {};
  Object.defineProperty(target, "WebTransport", { value: function () {}, configurable: false });
  assert.equal(remove(target, "WebTransport"), false);
  assert.deepEqual(confine(Object.assign(target, { navigator: {} })), ["WebTransport"]);
});
