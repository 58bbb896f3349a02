// Session: everything the broker does after the visitor clicks "Contribute" — loaded only then.
//
// Holds the one WebSocket to the server (protocol.js), the sandboxed runner frame (runner.js), and
// the FIFO of what the server sent: campaign switches and tasks, in order. It never runs campaign
// code: kernels and datasets pass through as strings and bytes. Per task it does a scan of the
// `tasks` frame, one postMessage to the runner, and one splice of the result into a frame.
//
// Pausing (button or hidden page) closes the socket and stops the workers: the server hands the
// unfinished tasks to somebody else at once, and the visitor's CPU is free immediately. Resuming
// reconnects; kernels already received are kept by content hash (`have`), so they are not resent.
//
// Every deliberate close (Pause, Stop, a hidden page, the page going away, a new sandbox) first
// hands back all the tasks held, with a final `release` frame, where the server supports it
// (release.js): they reach the next worker at once, and the visitor's address is not charged with
// tasks it dropped. A throttle change that needs a new connection keeps the tasks computing in the
// workers that stay, hands back the rest, and reconnects once those are answered.

import {
  CLOSE_NORMAL,
  CLOSE_PROTOCOL_ERROR,
  decodeServer,
  encodeCheckpoint,
  encodeError,
  encodeHello,
  encodePing,
  encodeProgress,
  encodeResult,
  encodeResults,
  MAX_SLOTS,
  ProtocolError,
} from "./protocol.js";
import { canRelease, heldIds, releaseFrames, surplus } from "./release.js";
import { plan } from "./throttle.js";
import { carriesNonce, checkRunnerMessage, makeNonce } from "./validate.js";

const RUNNER_TIMEOUT_MS = 15000; // the runner frame must say "ready" within this
const RUNNER_SILENCE_MS = 5000; // a runner that sends no heartbeat for this long has crashed
const PING_MS = 25000; // keeps idle connections alive through proxies
const RETRY_MS = [1000, 2000, 5000, 10000, 30000, 60000];
const ANY_RETRY_MS = 60000; // "any" with nothing to do: ask again this much later
const MAX_CACHED = 16; // kernels kept by hash, as many as `hello.have` may list
const NOTES_MS = 250; // ctx notes go out at most this often: 4 progress frames per task and second
const REFUSED =
  "This browser did not apply the sandbox's security policy, so nothing will run here. Thank you anyway!";

// The embedding page's origin: recorded by the server with every result from this browser.
export function hostOrigin(doc = document, loc = location) {
  try {
    if (loc.ancestorOrigins && loc.ancestorOrigins.length) return loc.ancestorOrigins[0];
    if (doc.referrer) return new URL(doc.referrer).origin;
  } catch {
    /* an unparsable referrer: unknown host */
  }
  return "";
}

// The origins of every page above the broker, nearest first: the runner's frame-ancestors must
// name them all (browsers check each ancestor). Without location.ancestorOrigins, the host's origin.
export function ancestorOrigins(doc = document, loc = location) {
  try {
    if (loc.ancestorOrigins && loc.ancestorOrigins.length) return Array.from(loc.ancestorOrigins);
  } catch {
    /* not available */
  }
  const host = hostOrigin(doc, loc);
  return host ? [host] : [];
}

// This browser's worker identity for result verification: a random id kept in the broker origin's
// sessionStorage, so it survives reconnects (pause, resume, a dropped socket) and reloads in this tab,
// and is never seen by the embedding page. The server treats it only as a hint (it also compares
// addresses). Without usable storage the id lasts as long as the page.
export const IDENTITY_KEY = "distribute.worker-id";

export function workerIdentity(given = undefined, random = globalThis.crypto) {
  let storage = given;
  try {
    // Reading `sessionStorage` itself throws where storage is blocked (sandboxed or opaque origins).
    storage ??= globalThis.sessionStorage;
    const known = storage?.getItem(IDENTITY_KEY);
    if (known && /^[0-9a-f]{32}$/.test(known)) return known;
  } catch {
    /* storage blocked: fall through to a fresh id */
  }
  const bytes = new Uint8Array(16);
  random.getRandomValues(bytes);
  const id = Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
  try {
    storage?.setItem(IDENTITY_KEY, id);
  } catch {
    /* not kept: this page's id only */
  }
  return id;
}

export class Session {
  // options: {campaign: id | null, level, wsUrl, runnerUrl, onStatus(status), identity?}
  constructor(options) {
    this.campaign = options.campaign;
    this.site = options.site || null; // a verified site's ticket (broker.js checked the framing page's origin)
    this.wsUrl = options.wsUrl;
    this.runnerUrl = options.runnerUrl;
    this.onStatus = options.onStatus;
    this.cores = navigator.hardwareConcurrency || 2;
    this.plan = plan(options.level, this.cores);
    this.host = hostOrigin();
    this.identity = options.identity ?? workerIdentity(); // a remembered choice keeps its own (consent.js)
    this.state = "starting";
    this.detail = "";
    this.done = 0;
    this.current = null; // the campaign frame the runner is set up for
    this.cache = new Map(); // hash → {kernel, static}
    this.pending = []; // {campaign} | {tasks}, in the order the server sent them
    this.inflight = new Set(); // task ids handed to the runner and not answered
    this.running = []; // of those, the ones the runner last said were computing
    this.notes = new Map(); // task id → {fraction, sentFraction, state, sentAt}: its kernel's ctx, rate-limited
    this.notesTimer = 0;
    this.heardFromRunner = 0;
    this.livenessTimer = 0;
    this.gen = 0;
    this.ws = null;
    this.frame = null;
    this.runner = null;
    this.nonce = ""; // the current runner's secret (see runner.js)
    this.port = null; // the channel the runner opened; null until it is ready
    this.userPaused = false;
    this.retries = 0;
    this.retryTimer = 0;
    this.pingTimer = 0;
    this.onMessage = (event) => this.fromWindow(event);
    this.onVisibility = () => this.visibilityChanged();
    this.onPageHide = () => this.pageHidden();
    this.onPageShow = (event) => event.persisted && this.visibilityChanged();
    this.releasable = false; // this connection's server takes tasks back (`release`)
    this.draining = false; // handed back all but the kept tasks: reconnect once they are answered
  }

  status(state, detail = "") {
    this.state = state;
    this.detail = detail;
    const progress = this.progress();
    const computing = this.running.length;
    this.onStatus({ state, detail, done: this.done, computing, campaign: this.current?.name ?? "", level: this.plan.level, progress });
  }

  // ------------------------------------------------------------------------- lifecycle

  async start() {
    this.userPaused = false;
    window.addEventListener("message", this.onMessage);
    document.addEventListener("visibilitychange", this.onVisibility);
    window.addEventListener("pagehide", this.onPageHide);
    window.addEventListener("pageshow", this.onPageShow);
    this.livenessTimer = setInterval(() => this.checkRunner(), 1000);
    this.status("starting", "Starting the sandbox…");
    if (!(await this.startRunner())) return;
    if (!this.userPaused) this.connect(); // unless Pause or Stop came while the sandbox loaded
  }

  stop() {
    this.userPaused = true;
    this.disconnect();
    window.removeEventListener("message", this.onMessage);
    document.removeEventListener("visibilitychange", this.onVisibility);
    window.removeEventListener("pagehide", this.onPageHide);
    window.removeEventListener("pageshow", this.onPageShow);
    clearInterval(this.livenessTimer);
    this.dropRunner();
    this.status("stopped");
  }

  pause() {
    this.userPaused = true;
    this.disconnect();
    this.status("paused");
  }

  resume() {
    this.userPaused = false;
    this.retries = 0;
    if (this.runnerReady) return; // the sandbox is still loading: start() connects when it is ready
    this.connect();
  }

  setLevel(level) {
    const next = plan(level, this.cores);
    const reconnect = next.slots !== this.plan.slots || next.workers < this.plan.workers;
    this.plan = next;
    if (this.ws && reconnect) {
      // The server sized this connection by `slots`: ask again with the new size.
      if (!this.regroup()) {
        this.disconnect();
        this.connect();
      }
    } else if (this.ws && this.current) {
      this.post({ type: "throttle", workers: next.workers, duty: next.duty, depth: next.depth });
    }
    this.status(this.state, this.detail);
  }

  // The page is being unloaded (its tab closed, the host page navigated away, or this frame removed),
  // or stored in the back/forward cache. The release is sent right here, synchronously, on the open
  // socket: nothing later in this document is sure to run. A page restored from the cache becomes
  // visible again and reconnects (visibilityChanged).
  pageHidden() {
    if (this.ws || this.retryTimer) {
      this.disconnect(CLOSE_NORMAL, "left the page");
      this.status("hidden");
    }
  }

  // A hidden page stops computing (it is paused, not merely in the background): its tasks are
  // handed back like on Pause. On mobile, hidden is often the last event a page gets before it is
  // discarded, so nothing is left to a pagehide that may never come.
  visibilityChanged() {
    if (document.visibilityState === "hidden") {
      if (this.ws || this.retryTimer) {
        this.disconnect();
        this.status("hidden");
      }
    } else if (this.state === "hidden" && !this.userPaused) {
      this.connect();
    }
  }

  // ------------------------------------------------------------------------- runner frame

  // Starts a runner and waits until it is ready; false (with the status said) if it could not.
  async startRunner() {
    try {
      await this.makeRunner();
      return true;
    } catch (error) {
      if (!this.frame) return false; // stopped meanwhile
      this.dropRunner(); // connect() does nothing without a runner: no work comes to this browser
      this.status("error", String(error.message ?? error));
      return false;
    }
  }

  makeRunner() {
    return new Promise((resolve, reject) => {
      const frame = document.createElement("iframe");
      frame.setAttribute("sandbox", "allow-scripts");
      frame.setAttribute("title", "sandbox");
      frame.setAttribute("aria-hidden", "true");
      frame.setAttribute("tabindex", "-1");
      frame.className = "runner";
      const timer = setTimeout(() => reject(new Error("The sandbox did not start.")), RUNNER_TIMEOUT_MS);
      this.runnerReady = (failure) => {
        clearTimeout(timer);
        if (failure) reject(failure);
        else resolve();
      };
      // The document we load is the only one ever to be our runner: any later load in this frame is
      // a navigation by somebody else (the host page may navigate its descendants).
      let loads = 0;
      frame.addEventListener("load", () => {
        loads += 1;
        if (loads > 1) this.runnerNavigated(frame);
      });
      this.nonce = makeNonce();
      const url = new URL(this.runnerUrl, location.href);
      for (const origin of ancestorOrigins()) url.searchParams.append("ancestor", origin); // its frame-ancestors
      url.hash = this.nonce;
      frame.src = url.href;
      document.body.appendChild(frame);
      this.frame = frame;
      this.runner = frame.contentWindow;
    });
  }

  dropRunner() {
    this.port?.close();
    this.port = null;
    this.frame?.remove();
    this.frame = null;
    this.runner = null;
    this.nonce = "";
  }

  post(message, transfer = []) {
    // Only over the channel the runner opened: a document that replaced the runner never has it.
    this.port?.postMessage({ ...message, nonce: this.nonce }, transfer);
  }

  // On the window: only the runner's `ready` (with the channel) or `refused`, from our runner frame,
  // carrying our nonce. Anything else that reaches this page is ignored.
  fromWindow(event) {
    if (!this.runner || event.source !== this.runner || event.origin !== "null") return;
    if (!this.runnerReady || !carriesNonce(event.data, this.nonce)) return;
    const msg = checkRunnerMessage(event.data);
    if (msg?.type === "refused") {
      this.runnerReady(new Error(REFUSED));
      this.runnerReady = null;
    } else if (msg?.type === "ready" && event.ports.length === 1) {
      this.port = event.ports[0];
      const port = this.port;
      port.onmessage = (portEvent) => this.fromRunner(port, portEvent);
      this.heardFromRunner = performance.now();
      this.runnerReady();
      this.runnerReady = null;
    }
  }

  fromRunner(port, event) {
    if (port !== this.port || !carriesNonce(event.data, this.nonce)) return;
    const msg = checkRunnerMessage(event.data, this.current?.maxResultBytes ?? 0);
    if (!msg) return;
    this.heardFromRunner = performance.now();
    if (msg.type !== "report" || msg.gen !== this.gen || !this.ws) return; // stale: before a reconnect or switch
    const counted = this.running.length;
    this.running = msg.running;
    if (msg.notes.length) this.takeNotes(msg.notes);
    if (msg.items.length) this.sendAnswers(msg.items);
    else if (counted !== this.running.length) this.status(this.state, this.detail);
    if (this.draining) {
      if (!this.inflight.size) this.reconnect();
      return;
    }
    this.drain();
  }

  // The runner lives in a process of its own (a sandboxed frame); when a kernel crashes that
  // process (a memory bomb, say), its heartbeat stops. The tasks it was computing are reported as
  // failed, so that the server stops handing out a dataset that kills browsers; the rest go back
  // to the server by reconnecting; and a fresh runner takes over.
  checkRunner() {
    if (!this.ws || !this.current || this.runnerReady) return;
    if (performance.now() - this.heardFromRunner < RUNNER_SILENCE_MS) return;
    this.restartRunner(true);
  }

  // Somebody navigated the runner frame: the document in it is no longer ours. Replace it at once;
  // its tasks go back to the server (by reconnecting) and none is charged: the kernel did nothing.
  runnerNavigated(frame) {
    if (frame !== this.frame) return;
    if (this.runnerReady) {
      // Still starting: the start fails, and says so (Contribute starts again).
      this.runnerReady(new Error("The sandbox was interfered with while it started; click Contribute to try again."));
      this.runnerReady = null;
      return;
    }
    this.restartRunner(false);
  }

  async restartRunner(crashed) {
    if (crashed) {
      for (const id of this.running) {
        if (!this.inflight.delete(id)) continue;
        this.done += 1;
        this.send(encodeError(id, "the sandbox crashed while computing this task (did the kernel run out of memory?)", "", 0));
      }
    }
    this.disconnect(CLOSE_NORMAL, "sandbox restarted");
    this.dropRunner();
    this.status("starting", "Restarting the sandbox…");
    if (!(await this.startRunner())) return;
    if (this.userPaused) this.status("paused");
    else if (document.visibilityState === "hidden") this.status("hidden");
    else this.connect();
  }

  // ------------------------------------------------------------------------- handing back

  // Sends a final `release` for `ids` (at once, on the open socket) and forgets them: answers the
  // runner still sends for them are dropped, as the server no longer counts on this connection for
  // them. False when the server does not take tasks back (or the socket is not open).
  handBack(ids) {
    if (!this.releasable || this.ws?.readyState !== WebSocket.OPEN) return false;
    for (const frame of releaseFrames(ids, true)) this.ws.send(frame);
    for (const id of ids) this.inflight.delete(id);
    return true;
  }

  // The throttle changed the number of tasks this browser should hold, and a live connection cannot
  // be resized. The tasks computing in the workers that stay are finished; all others are handed
  // back now (the ones computing in workers that stop, and every prefetched one); the final release
  // keeps the server from sending more; once the kept tasks are answered, the session reconnects
  // with the new size. False when the server does not take tasks back: then reconnect at once.
  regroup() {
    if (!this.current) return false;
    const { keep, release } = surplus(heldIds(this.inflight, this.pending), this.running, this.plan.workers);
    if (!this.handBack(release)) return false;
    this.pending = [];
    this.draining = true;
    this.running = keep;
    const { workers, duty, depth } = this.plan;
    this.post({ type: "throttle", workers, duty, depth, keep });
    if (!this.inflight.size) this.reconnect();
    return true;
  }

  reconnect() {
    this.disconnect();
    this.connect();
  }

  sendAnswers(items) {
    const results = [];
    for (const [id, ok, payload, ms] of items) {
      this.notes.delete(id); // answered: a checkpoint still waiting is of no use any more
      if (!this.inflight.delete(id)) continue; // not ours to answer
      this.done += 1;
      if (ok) results.push([id, payload && new Uint8Array(payload), ms]);
      else this.send(encodeError(id, payload[0], payload[1], ms));
    }
    for (let i = 0; i < results.length; i += MAX_SLOTS) {
      const batch = results.slice(i, i + MAX_SLOTS);
      this.send(batch.length === 1 ? encodeResult(...batch[0]) : encodeResults(batch));
    }
    if (items.length) this.status("running");
  }

  // ------------------------------------------------------------------------- ctx.progress, ctx.checkpoint

  // The runner passes on its kernels' notes as they come; they leave for the server at most every
  // NOTES_MS (progress) and every campaign's checkpoint_interval per task (a newer checkpoint replaces
  // the one waiting, which goes out when the interval ends).
  takeNotes(notes) {
    for (const [id, kind, payload] of notes) {
      if (!this.inflight.has(id)) continue;
      let note = this.notes.get(id);
      if (!note) this.notes.set(id, (note = { fraction: 0, sentFraction: 0, state: null, sentAt: -Infinity }));
      if (kind === 2) note.fraction = payload;
      else note.state = new Uint8Array(payload);
    }
    if (!this.notesTimer) this.notesTimer = setTimeout(() => this.sendNotes(), NOTES_MS);
  }

  sendNotes() {
    this.notesTimer = 0;
    const campaign = this.current;
    if (!campaign || !this.ws) return;
    const now = performance.now();
    let waiting = false;
    for (const [id, note] of this.notes) {
      if (campaign.progress && note.fraction !== note.sentFraction) {
        note.sentFraction = note.fraction;
        this.send(encodeProgress(id, note.fraction));
      }
      if (note.state && campaign.checkpointMaxBytes) {
        if (now - note.sentAt >= campaign.checkpointInterval * 1000) {
          this.send(encodeCheckpoint(id, note.state));
          note.state = null;
          note.sentAt = now;
        } else {
          waiting = true;
        }
      }
    }
    if (waiting) this.notesTimer = setTimeout(() => this.sendNotes(), NOTES_MS);
    this.status(this.state, this.detail); // the card shows the progress
  }

  // The mean progress of the tasks in hand that reported any, or null when none did.
  progress() {
    let sum = 0;
    let count = 0;
    for (const [id, note] of this.notes) {
      if (this.inflight.has(id)) {
        sum += note.fraction;
        count += 1;
      }
    }
    return count ? sum / count : null;
  }

  // ------------------------------------------------------------------------- connection

  connect() {
    clearTimeout(this.retryTimer);
    this.retryTimer = 0;
    if (!this.port) return; // no runner (it failed, or it is being replaced and connects when ready)
    if (document.visibilityState === "hidden") {
      this.status("hidden");
      return;
    }
    this.status("connecting", "Connecting…");
    this.heardFromRunner = performance.now();
    const ws = new WebSocket(this.wsUrl);
    ws.binaryType = "arraybuffer";
    ws.onopen = () => {
      ws.send(
        encodeHello({
          campaign: this.campaign,
          slots: this.plan.slots,
          client: {
            kind: "browser",
            host: this.host,
            id: this.identity,
            cores: this.cores,
            throttle: this.plan.level,
            workers: this.plan.workers,
          },
          have: [...this.cache.keys()],
          site: this.site,
        }),
      );
      this.status("waiting", "Waiting for work…");
      this.pingTimer = setInterval(() => this.send(encodePing(Date.now() % 1e9)), PING_MS);
    };
    ws.onmessage = (event) => this.fromServer(event.data);
    ws.onclose = (event) => this.closed(event);
    this.ws = ws;
  }

  // Closes the socket and forgets all work in hand, handing it back first: the server requeues
  // what we held (without the release feature, when it sees the socket close).
  disconnect(code = CLOSE_NORMAL, reason = "paused") {
    clearTimeout(this.retryTimer);
    this.retryTimer = 0;
    clearInterval(this.pingTimer);
    const held = heldIds(this.inflight, this.pending);
    if (held.length) this.handBack(held);
    if (this.ws) {
      this.ws.onclose = this.ws.onmessage = this.ws.onopen = null;
      try {
        this.ws.close(code, reason);
      } catch {
        /* already closing */
      }
      this.ws = null;
    }
    this.reset();
  }

  reset() {
    this.pending = [];
    this.notes.clear();
    this.inflight.clear();
    this.running = [];
    this.current = null;
    this.releasable = false;
    this.draining = false;
    this.gen += 1;
    this.post({ type: "stop" });
  }

  // Browsers let a page close a socket only with 1000 or 3000–4999: a protocol error the server
  // made is sent as 4000 + its RFC 6455 code (4002, 4003). The close event then reconnects.
  abort(code, reason) {
    try {
      this.ws?.close(4000 + code, reason.slice(0, 60));
    } catch {
      this.ws?.close(); // a reason over 123 bytes of UTF-8
    }
  }

  send(frame) {
    if (this.ws && this.ws.readyState === WebSocket.OPEN) this.ws.send(frame);
  }

  closed(event) {
    clearInterval(this.pingTimer);
    this.ws = null;
    this.reset();
    if (this.state === "done") {
      if (this.campaign === null) this.retryLater(ANY_RETRY_MS, "No work right now; checking again later.");
      return;
    }
    const delay = RETRY_MS[Math.min(this.retries, RETRY_MS.length - 1)];
    this.retries += 1;
    const why = event.reason ? ` (${event.reason})` : "";
    this.retryLater(delay * (0.75 + Math.random() / 2), `Connection lost${why}; retrying…`);
  }

  retryLater(delay, message) {
    if (this.state !== "done") this.status("retrying", message);
    this.retryTimer = setTimeout(() => this.connect(), delay);
  }

  fromServer(data) {
    let msg;
    try {
      msg = decodeServer(data);
    } catch (error) {
      if (!(error instanceof ProtocolError)) throw error;
      this.abort(error.code, error.message);
      return;
    }
    switch (msg.t) {
      case "campaign":
        this.campaignFrame(msg);
        break;
      case "tasks":
        this.retries = 0;
        if (this.draining) {
          this.handBack(msg.tasks.map(([id]) => id)); // sent before the server read our final release
          break;
        }
        this.pending.push({ tasks: msg.tasks });
        this.drain();
        break;
      case "idle":
        if (this.inflight.size === 0) this.status("waiting", "Waiting for work…");
        break;
      case "bye":
        this.status("done", msg.reason);
        break;
      case "pong":
        break;
    }
  }

  campaignFrame(msg) {
    this.releasable = canRelease(msg.features);
    let code = msg.kernel !== null && msg.static !== null ? { kernel: msg.kernel, static: msg.static } : this.cache.get(msg.hash);
    if (!code) {
      // The server thinks we hold a kernel we do not: start over without claiming any.
      this.cache.clear();
      this.ws?.close(CLOSE_NORMAL, "unknown campaign hash");
      return;
    }
    this.cache.delete(msg.hash);
    this.cache.set(msg.hash, code);
    while (this.cache.size > MAX_CACHED) this.cache.delete(this.cache.keys().next().value);
    this.pending.push({ campaign: { ...msg, ...code } });
    this.drain();
  }

  // Passes what the server sent on to the runner, in order. A campaign switch waits until the
  // runner has answered every task of the previous campaign.
  drain() {
    while (this.pending.length) {
      const head = this.pending[0];
      if (head.campaign) {
        if (this.inflight.size) return;
        this.pending.shift();
        this.gen += 1;
        this.current = head.campaign;
        const { kernel, static: staticText, taskTimeout, maxResultBytes, checkpointMaxBytes } = head.campaign;
        const { workers, duty, depth } = this.plan;
        const timeout = taskTimeout;
        this.post({ type: "start", gen: this.gen, kernel, static: staticText, timeout, maxResultBytes, checkpointMaxBytes, workers, duty, depth });
        this.status("running");
      } else {
        this.pending.shift();
        if (!this.current) {
          this.abort(CLOSE_PROTOCOL_ERROR, "tasks before a campaign");
          return;
        }
        // Each dataset gets its own buffer, so it can be transferred to the worker, not copied again.
        // A reissued task brings the state its kernel checkpointed last (ctx.resume).
        const tasks = head.tasks.map(([id, bytes, resume]) => (resume ? [id, bytes.slice().buffer, resume.slice().buffer] : [id, bytes.slice().buffer]));
        for (const [id] of tasks) this.inflight.add(id);
        this.post({ type: "tasks", gen: this.gen, tasks }, tasks.map((task) => task[1]));
      }
    }
  }
}
