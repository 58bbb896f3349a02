// Remembered consent and this browser's persistent identity, kept in the broker origin's localStorage.
//
// The broker runs on the server's origin inside the host page's iframe; browsers partition a frame's
// storage by the top-level site, so what is kept here holds for this site only, and another site that
// embeds the same broker starts with nothing. Without the visitor's "remember my choice on this site",
// nothing is written here and consent lasts one page view. Where storage is unavailable (blocked
// third-party storage, a sandboxed frame) remembering silently falls back to that one page view.

export const CONSENT_KEY = "distribute.consent";
export const PERSISTENT_ID_KEY = "distribute.volunteer-id";
const ID_PATTERN = /^[0-9a-f]{32}$/;

// The broker origin's localStorage, or null where reading it throws (blocked storage).
export function localStore() {
  try {
    const storage = globalThis.localStorage;
    // A probe: some browsers hand out a storage object whose writes throw (quota 0, private modes).
    storage.setItem("distribute.probe", "1");
    storage.removeItem("distribute.probe");
    return storage;
  } catch {
    return null;
  }
}

// Did the visitor ask this site to remember their consent? Only an exact "yes" counts.
export function remembered(storage = localStore()) {
  try {
    return storage?.getItem(CONSENT_KEY) === "yes";
  } catch {
    return false;
  }
}

// Keep the choice, and this page's identity with it so that credit adds up across visits.
// Returns whether the choice was kept (false: it lasts this page view only).
export function remember(identity, storage = localStore()) {
  if (!storage) return false;
  try {
    storage.setItem(CONSENT_KEY, "yes");
    if (ID_PATTERN.test(identity ?? "")) storage.setItem(PERSISTENT_ID_KEY, identity);
    return storage.getItem(CONSENT_KEY) === "yes";
  } catch {
    return false;
  }
}

// Withdraw: forget the choice and everything kept with it.
export function forget(storage = localStore()) {
  try {
    storage?.removeItem(CONSENT_KEY);
    storage?.removeItem(PERSISTENT_ID_KEY);
  } catch {
    /* nothing could be kept either */
  }
}

// The identity kept with a remembered choice, if any.
export function persistentIdentity(storage = localStore()) {
  try {
    const id = storage?.getItem(PERSISTENT_ID_KEY);
    return id && ID_PATTERN.test(id) ? id : null;
  } catch {
    return null;
  }
}

// "14 min to 3 campaigns": the card's words for a credit total (seconds) over some campaigns.
export function describeCredit(seconds, campaigns) {
  if (!(seconds > 0) || !(campaigns > 0)) return "";
  const minutes = seconds / 60;
  let amount;
  if (minutes < 1) amount = `${Math.max(1, Math.round(seconds))} s`;
  else if (minutes < 120) amount = `${Math.round(minutes)} min`;
  else amount = `${Math.round(minutes / 6) / 10} h`;
  const to = campaigns === 1 ? "1 campaign" : `${campaigns} campaigns`;
  return `You have given ${amount} to ${to}.`;
}
