// Broker UI: the consent card, the status line and the controls of the embed frame.
//
// Runs in the broker document (the server's origin, under a strict CSP) and never runs campaign
// code. Until the visitor clicks "Contribute" this small script is all that loads: no socket, no
// sandbox, no kernel. The click loads session.js, which does the work; consent lasts as long as
// this page view, unless the visitor ticks "remember my choice on this site" (consent.js): then the
// next visit starts at once, and "Forget my choice" (always shown while remembered) withdraws it.

import { describeCredit, forget, localStore, persistentIdentity, remember, remembered } from "./consent.js";

const card = document.getElementById("card");
const el = (id) => document.getElementById(id);
const contribute = el("contribute");
const pause = el("pause");
const stop = el("stop");
const throttle = el("throttle");
const statusLine = el("status");
const about = el("about");
const more = el("more");
const what = el("what");
const rememberBox = el("remember");
const withdraw = el("withdraw");
const creditLine = el("credit");
const creditText = el("credit-text");
const keep = el("keep-credit");

let session = null;
let level = ["low", "medium", "high"].includes(card.dataset.throttle) ? card.dataset.throttle : "low";
throttle.value = level;

function plural(n) {
  return n === 1 ? "1 task done" : `${n} tasks done`;
}

function describe({ state, detail, done, campaign, progress = null }) {
  const count = plural(done);
  // The kernel's own ctx.progress, for the tasks in hand (their mean), while they run.
  const far = state === "running" && progress !== null ? ` · ${Math.floor(progress * 100)} % of the current task` : "";
  const what = campaign ? ` on “${campaign}”` : "";
  switch (state) {
    case "starting":
    case "connecting":
      return detail;
    case "waiting":
      return `Waiting for work · ${count}`;
    case "running":
      return `Running${what} · ${count}${far}`;
    case "paused":
      return `Paused · ${count}`;
    case "hidden":
      return `Paused while this page is hidden · ${count}`;
    case "stopped":
      return `Stopped · ${count}. Thank you!`;
    case "done":
      // "paused": the campaign stopped handing out work (its owner or auto-pause); no thanks for finished work.
      if (detail === "paused") return `Stopped: this campaign is paused, there is nothing to compute now · ${count}.`;
      if (detail === "cancelled") return `Stopped: this campaign was cancelled by its owner · ${count}.`;
      return `Finished: nothing left to compute · ${count}. Thank you!`;
    default:
      return detail || state;
  }
}

function render(status) {
  document.body.dataset.state = status.state;
  document.body.dataset.done = String(status.done);
  document.body.dataset.progress = status.progress == null ? "" : String(status.progress);
  document.body.dataset.computing = String(status.computing ?? 0); // tasks computing right now
  statusLine.textContent = describe(status);
  pause.textContent = status.state === "paused" ? "Resume" : "Pause";
  if (status.state === "done" && status.detail === "complete") tellHowItEnded(status.done);
  if (status.done !== lastDone) {
    lastDone = status.done;
    askCredit();
  }
}

// ---------------------------------------------------------------- remembered consent and credit

const storage = localStore(); // null where the browser blocks this frame's storage: one page view only
let lastDone = 0;
document.body.dataset.storage = storage ? "yes" : "blocked";
rememberBox.closest("label").hidden = !storage;

function showRemembered() {
  const kept = remembered(storage);
  document.body.dataset.remembered = String(kept);
  withdraw.hidden = !kept;
  rememberBox.closest("label").hidden = kept || !storage;
  rememberBox.checked = false;
}

// This browser's identity, as the session sends it: the one kept with a remembered choice, else
// this tab's (session.js keeps it in sessionStorage). Read without loading session.js.
function knownIdentity() {
  if (session?.identity) return session.identity;
  const kept = persistentIdentity(storage);
  if (kept) return kept;
  try {
    const id = globalThis.sessionStorage.getItem("distribute.worker-id");
    return id && /^[0-9a-f]{32}$/.test(id) ? id : null;
  } catch {
    return null;
  }
}

// The credit route takes the identity in a POST body, never in a URL (URLs are logged); at most
// one request at a time, and again 20 s later when more tasks were done meanwhile.
let asking = false;
let askAgain = false;
async function askCredit() {
  const identity = knownIdentity();
  if (!identity) return;
  if (asking) {
    askAgain = true;
    return;
  }
  asking = true;
  try {
    const response = await fetch("/embed/credit", {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ identity }),
      cache: "no-store",
    });
    if (response.ok) {
      const { seconds, campaigns } = await response.json();
      document.body.dataset.credit = String(seconds);
      creditText.textContent = describeCredit(seconds, campaigns);
      creditLine.hidden = !creditText.textContent;
    }
  } catch {
    // Offline: the last figure stays.
  } finally {
    setTimeout(() => {
      asking = false;
      if (askAgain) {
        askAgain = false;
        askCredit();
      }
    }, 20000);
  }
}

function keepChoice() {
  if (rememberBox.checked && session) remember(session.identity, storage);
  showRemembered();
}

rememberBox.addEventListener("change", () => {
  if (session) keepChoice(); // already contributing: the tick is the choice
});

withdraw.addEventListener("click", () => {
  session?.stop();
  session = null;
  forget(storage);
  showRemembered();
  // A campaign with nothing to give keeps its card; otherwise the card asks again.
  if (["complete", "ended", "halted"].includes(document.body.dataset.state)) return;
  render({ state: "idle", detail: "", done: Number(document.body.dataset.done) || 0 });
  statusLine.textContent = "Your choice is forgotten: nothing runs until you click Contribute.";
  contribute.focus();
});

// "complete" on the wire means nothing is left to hand out; datasets may have failed on the way.
// The card asks the server which, so that it never thanks a visitor for a success that was not one.
async function tellHowItEnded(done) {
  if (!/^\d+$/.test(card.dataset.campaign)) return;
  try {
    const response = await fetch(`/embed/${card.dataset.campaign}/state`, { cache: "no-store" });
    const { state } = await response.json();
    if (state === "ended" && document.body.dataset.state === "done") {
      document.body.dataset.state = "ended";
      statusLine.textContent = `Ended · ${plural(done)}. Some of this campaign's datasets failed; its owner can see why.`;
    }
  } catch {
    // Offline or gone: the plain "Finished" line stays.
  }
}

// A verified site's ticket counts only on the site's own pages. The server gave it after comparing the
// Referer with the site's origin; where the browser names the page framing this one
// (location.ancestorOrigins), it must be that origin too, or the broker runs anonymously.
function siteTicket() {
  const ticket = card.dataset.site || "";
  const ancestors = location.ancestorOrigins;
  if (!ticket || (ancestors && ancestors.length && ancestors[0] !== card.dataset.siteOrigin)) return null;
  return ticket;
}

async function begin() {
  contribute.disabled = true;
  render({ state: "starting", detail: "Loading…", done: 0 });
  try {
    const { Session } = await import("./session.js");
    const campaign = card.dataset.campaign === "any" ? null : Number(card.dataset.campaign);
    const wsUrl = card.dataset.ws || new URL("/ws", location.href).href.replace(/^http/, "ws");
    const identity = persistentIdentity(storage) ?? undefined;
    const site = siteTicket();
    session = new Session({ campaign, level, wsUrl, runnerUrl: card.dataset.runner, onStatus: render, identity, site });
    keepChoice();
    await session.start();
  } catch (error) {
    render({ state: "error", detail: `Could not start: ${error?.message ?? error}`, done: 0 });
  } finally {
    contribute.disabled = false;
  }
}

contribute.addEventListener("click", () => {
  if (session) session.stop();
  session = null;
  begin();
  // The button hides while the session runs: focus goes where the news is, not back to the body.
  statusLine.focus();
});

// "What is this?" and "More" each replace the card's body with a panel and a Back button, so the
// text is read whole in the frame's own height instead of in a small scroll box.
const openers = { explain: what, full: more, keep };

function show(view) {
  const from = card.dataset.view;
  card.dataset.view = view;
  for (const [name, opener] of Object.entries(openers)) {
    el(name).hidden = name !== view;
    opener.setAttribute("aria-expanded", String(name === view));
  }
  if (view !== "card") el(view).querySelector(".back").focus();
  else openers[from]?.focus();
}

what.addEventListener("click", () => show("explain"));
keep.addEventListener("click", async () => {
  // "Keep my credit": a short-lived claim code for this browser's identity, to paste into the
  // console's volunteer page. The frame may not open windows, so the visitor goes there themselves.
  show("keep");
  const identity = knownIdentity();
  const text = el("keep-text");
  const code = el("keep-code");
  code.value = "";
  try {
    const response = await fetch("/embed/claim-code", {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ identity }),
      cache: "no-store",
    });
    if (!response.ok) throw new Error(String(response.status));
    const answer = await response.json();
    text.textContent =
      `Sign in or create an account at ${answer.url} and paste this code there within ${answer.minutes} minutes. ` +
      "Anyone with the code can take this credit: keep it to yourself.";
    code.value = answer.code;
    code.select();
  } catch {
    text.textContent = "No code now: try again in a moment.";
  }
});
more.addEventListener("click", () => show("full"));
for (const back of card.querySelectorAll(".panel .back")) back.addEventListener("click", () => show("card"));
document.addEventListener("keydown", (event) => {
  if (event.key === "Escape" && card.dataset.view !== "card") show("card");
});

// "More" only when the clamped description does not fit: the card never cuts text silently.
function offerMore() {
  more.hidden = about.scrollHeight <= about.clientHeight + 1 && about.scrollWidth <= about.clientWidth + 1;
}
offerMore();
addEventListener("resize", offerMore);
// The card's layout can settle after this script runs (its style sheet, fonts, the credit line and the
// remember option appearing): measure again whenever the description's box changes.
new ResizeObserver(offerMore).observe(about);
document.fonts?.ready.then(offerMore);

pause.addEventListener("click", () => {
  if (!session) return;
  if (session.state === "paused") session.resume();
  else session.pause();
});

stop.addEventListener("click", () => session?.stop());

throttle.addEventListener("change", () => {
  level = throttle.value;
  session?.setLevel(level);
});

showRemembered();
askCredit();
// A remembered choice is this visit's consent: work starts without a click, unless the campaign has
// nothing to give (its card says so).
if (remembered(storage) && document.body.dataset.state === "idle") begin();
