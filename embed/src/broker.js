// Broker UI: the consent card, the status line and the controls of the embed frame.
//
// Runs in the broker document (the server's origin, under a strict CSP) and never runs campaign
// code. Until the visitor clicks "Contribute" this small script is all that loads: no socket, no
// sandbox, no kernel. The click loads session.js, which does the work; consent lasts as long as
// this page view (nothing is stored).

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
}

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
    const site = siteTicket();
    session = new Session({ campaign, level, wsUrl, runnerUrl: card.dataset.runner, onStatus: render, site });
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
const openers = { explain: what, full: more };

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
