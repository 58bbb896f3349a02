// Handing tasks back (the v1.1 `release` frame): which tasks a browser gives up, and the frames that
// say so. Pure: the session (session.js) owns the socket and calls these.
//
// The server takes a released task back at once and gives it to the next worker, with no error
// counted and without shrinking this browser's share of slots; a task left to its deadline would
// wait up to `task_timeout`. The session releases whenever it closes its socket on purpose (the page
// goes away or is hidden, Pause, Stop, a new sandbox), and when the throttle changes how many tasks
// it should hold: then the tasks computing in the workers that stay are kept and finished first.

import { encodeRelease, FEATURE_RELEASE, MAX_SLOTS } from "./protocol.js";

// Whether the server announced that it takes tasks back (a v1 server does not: then nothing is sent).
export function canRelease(features) {
  return Array.isArray(features) && features.includes(FEATURE_RELEASE);
}

// Every task id the connection holds: handed to the runner and not answered (`inflight`), and in
// `tasks` frames not yet passed on to it (`pending`, behind a campaign switch).
export function heldIds(inflight, pending) {
  const ids = new Set(inflight);
  for (const entry of pending) for (const [id] of entry.tasks ?? []) ids.add(id);
  return [...ids];
}

// The throttle changed to `workers` Web Workers: the tasks computing (`running`, as the runner last
// reported them) in at most that many workers are kept; every other held task is surplus.
export function surplus(held, running, workers) {
  const holding = new Set(held);
  const keep = running.filter((id) => holding.has(id)).slice(0, Math.max(0, workers));
  const kept = new Set(keep);
  return { keep, release: held.filter((id) => !kept.has(id)) };
}

// The frames that hand back `ids`, each within the protocol's MAX_SLOTS ids. `final` (on every
// frame): the connection wants no more tasks, which is worth a frame even with no ids.
export function releaseFrames(ids, final) {
  const frames = [];
  for (let i = 0; i < ids.length; i += MAX_SLOTS) frames.push(encodeRelease(ids.slice(i, i + MAX_SLOTS), final));
  if (!frames.length && final) frames.push(encodeRelease([], true));
  return frames;
}
