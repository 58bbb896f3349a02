import assert from "node:assert/strict";
import { webcrypto } from "node:crypto";
import { test } from "node:test";

import { IDENTITY_KEY, workerIdentity } from "../src/session.js";

function memoryStorage() {
  const items = new Map();
  return { getItem: (k) => items.get(k) ?? null, setItem: (k, v) => items.set(k, String(v)), items };
}

test("the identity is 128 random bits in hex, kept in the storage it is given", () => {
  const storage = memoryStorage();
  const id = workerIdentity(storage, webcrypto);
  assert.match(id, /^[0-9a-f]{32}$/);
  assert.equal(storage.items.get(IDENTITY_KEY), id);
  assert.equal(workerIdentity(storage, webcrypto), id);
});

test("two sessions (two storages) get different identities", () => {
  assert.notEqual(workerIdentity(memoryStorage(), webcrypto), workerIdentity(memoryStorage(), webcrypto));
});

test("a malformed stored value is replaced", () => {
  const storage = memoryStorage();
  storage.setItem(IDENTITY_KEY, "<script>");
  assert.match(workerIdentity(storage, webcrypto), /^[0-9a-f]{32}$/);
});

test("blocked storage still gives an identity", () => {
  const blocked = {
    getItem() {
      throw new Error("SecurityError");
    },
    setItem() {
      throw new Error("SecurityError");
    },
  };
  assert.match(workerIdentity(blocked, webcrypto), /^[0-9a-f]{32}$/);
});

test("a global sessionStorage that throws on access still gives an identity", () => {
  const saved = Object.getOwnPropertyDescriptor(globalThis, "sessionStorage");
  Object.defineProperty(globalThis, "sessionStorage", {
    configurable: true,
    get() {
      throw new Error("SecurityError");
    },
  });
  try {
    assert.match(workerIdentity(undefined, webcrypto), /^[0-9a-f]{32}$/);
  } finally {
    if (saved) Object.defineProperty(globalThis, "sessionStorage", saved);
    else delete globalThis.sessionStorage;
  }
});
