import assert from "node:assert/strict";
import { test } from "node:test";

import {
  CONSENT_KEY,
  PERSISTENT_ID_KEY,
  describeCredit,
  forget,
  localStore,
  persistentIdentity,
  remember,
  remembered,
} from "../src/consent.js";

function memoryStorage() {
  const items = new Map();
  return {
    getItem: (k) => items.get(k) ?? null,
    setItem: (k, v) => items.set(k, String(v)),
    removeItem: (k) => items.delete(k),
    items,
  };
}

const blocked = {
  getItem() {
    throw new Error("SecurityError");
  },
  setItem() {
    throw new Error("SecurityError");
  },
  removeItem() {
    throw new Error("SecurityError");
  },
};

const ID = "0123456789abcdef0123456789abcdef";

test("nothing is remembered until the visitor asks", () => {
  const storage = memoryStorage();
  assert.equal(remembered(storage), false);
  assert.equal(persistentIdentity(storage), null);
  assert.equal(storage.items.size, 0);
});

test("remembering keeps the choice and the identity, and forgetting erases both", () => {
  const storage = memoryStorage();
  assert.equal(remember(ID, storage), true);
  assert.equal(remembered(storage), true);
  assert.equal(persistentIdentity(storage), ID);
  forget(storage);
  assert.equal(remembered(storage), false);
  assert.equal(persistentIdentity(storage), null);
  assert.equal(storage.items.size, 0);
});

test("only an exact stored yes counts, and a malformed identity is not used", () => {
  const storage = memoryStorage();
  storage.setItem(CONSENT_KEY, "true");
  storage.setItem(PERSISTENT_ID_KEY, "<script>");
  assert.equal(remembered(storage), false);
  assert.equal(persistentIdentity(storage), null);
});

test("blocked storage falls back to one page view: nothing is remembered, nothing throws", () => {
  assert.equal(remember(ID, blocked), false);
  assert.equal(remembered(blocked), false);
  assert.equal(persistentIdentity(blocked), null);
  forget(blocked);
  assert.equal(remember(ID, null), false);
  assert.equal(remembered(null), false);
});

test("a global localStorage that throws on access gives no storage", () => {
  const saved = Object.getOwnPropertyDescriptor(globalThis, "localStorage");
  Object.defineProperty(globalThis, "localStorage", {
    configurable: true,
    get() {
      throw new Error("SecurityError");
    },
  });
  try {
    assert.equal(localStore(), null);
  } finally {
    if (saved) Object.defineProperty(globalThis, "localStorage", saved);
    else delete globalThis.localStorage;
  }
});

test("the card words credit in seconds, minutes or hours, and says nothing of none", () => {
  assert.equal(describeCredit(0, 0), "");
  assert.equal(describeCredit(12, 0), "");
  assert.equal(describeCredit(12.4, 1), "You have given 12 s to 1 campaign.");
  assert.equal(describeCredit(14 * 60 + 10, 3), "You have given 14 min to 3 campaigns.");
  assert.equal(describeCredit(3 * 3600, 2), "You have given 3 h to 2 campaigns.");
});
