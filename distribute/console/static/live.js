// The campaign page's live view: server-sent events from /campaigns/ID/live update the progress
// bar, the counts, the throughput chart, the errors and the contributions per site, without reload.
//
// The first event carries the throughput history: results per time bucket over the live window (the
// last minutes up to now), empty buckets as zeros, so a pause is drawn as a pause. Later points are the
// change in finished datasets between events, averaged over a few events so the line is readable.
// The chart always spans the window up to the server's clock, never just the stretch with results.

const section = document.getElementById("live");
const $ = (id) => document.getElementById(id);
const SMOOTH_SECONDS = 5;
const MAX_POINTS = 2000; // a bound for a window of many minutes at one event per second

let points = []; // [epoch seconds, datasets per second]
let windowSeconds = 600; // the server's history says how long
let samples = []; // [epoch seconds, datasets finished] of recent events

function text(id, value) {
  const el = $(id);
  if (el && el.textContent !== String(value)) el.textContent = value;
}

function settled(d) {
  return d.done + d.failed;
}

function duration(seconds) {
  if (seconds < 120) return `${seconds.toFixed(1)} s`;
  if (seconds < 7200) return `${(seconds / 60).toFixed(1)} min`;
  return `${(seconds / 3600).toFixed(1)} h`;
}

function rateText(rate) {
  return rate >= 100 ? `${Math.round(rate)}/s` : `${rate.toFixed(1)}/s`;
}

function element(tag, props = {}, children = []) {
  const el = document.createElement(tag);
  Object.assign(el, props);
  for (const child of children) el.append(child);
  return el;
}

function when(iso) {
  return `${iso.slice(0, 19).replace("T", " ")}`;
}

// Kernel errors grouped by message (the API's kernel_error_groups): a stack only where there is one.
function renderErrors(groups) {
  const box = $("kernel-errors");
  box.querySelector(".empty").hidden = groups.length > 0;
  const list = box.querySelector(".list");
  const open = new Set([...list.querySelectorAll("details[open]")].map((d) => d.dataset.key));
  list.replaceChildren(
    ...groups.map((g) => {
      const named = g.examples.map((id, i) => (g.example_numbers[i] ? `#${g.example_numbers[i]} (id ${id})` : `id ${id}`));
      const examples = named.length ? `, e.g. ${named.join(", ")}` : "";
      const about = `×${g.count} on ${g.datasets} dataset${g.datasets === 1 ? "" : "s"}${examples}`
        + ` · first ${when(g.first_seen)} · last ${when(g.last_seen)} UTC`;
      const line = [element("span", { className: "bad", textContent: g.message }), " ", element("small", { className: "muted", textContent: about })];
      let body;
      if (g.stack) {
        body = element("details", { open: open.has(g.message) }, [element("summary", {}, line), element("pre", { textContent: g.stack })]);
        body.dataset.key = g.message;
      } else {
        body = element("p", {}, line);
      }
      const group = element("div", { className: "error-group" }, [body]);
      group.dataset.count = String(g.count);
      return group;
    }),
  );
}

function renderState(state) {
  const badge = document.querySelector("[data-status]");
  if (badge && badge.dataset.state !== state.key) {
    badge.dataset.state = state.key;
    badge.className = `badge ${state.key} tone-${state.tone}`;
  }
  if (badge && badge.textContent !== state.label) badge.textContent = state.label;
  const banner = $("paused-banner");
  if (banner && !document.getElementById("deleted-banner")) {
    banner.hidden = state.key !== "paused";
    banner.querySelector(".reason").textContent = state.reason || "";
  }
}

function renderHosts(hosts) {
  const box = $("hosts");
  box.querySelector(".empty").hidden = hosts.length > 0;
  box.querySelector("tbody").replaceChildren(
    ...hosts.map((h) =>
      element("tr", {}, [
        element("td", { textContent: h.host || "(headless or unknown)" }),
        element("td", { className: "num", textContent: String(h.results) }),
        element("td", { className: "num", textContent: `${h.compute_seconds.toFixed(1)} s` }),
      ]),
    ),
  );
}

function drawChart(now) {
  const svg = $("chart");
  const t0 = now - windowSeconds;
  while (points.length && points[0][0] < t0) points.shift();
  svg.dataset.points = String(points.length);
  // What is drawn, for people and tests alike: [seconds before now, results per second].
  svg.dataset.series = JSON.stringify(points.map(([t, r]) => [Math.round(now - t), Math.round(r * 1000) / 1000]));
  svg.dataset.window = String(windowSeconds);
  if (points.length < 2) return;
  const [w, h] = [600, 180];
  const top = Math.max(...points.map((p) => p[1])) * 1.15 || 1;
  const xy = points.map(([t, r]) => `${(((t - t0) / windowSeconds) * w).toFixed(1)},${(h - (r / top) * h).toFixed(1)}`);
  const first = xy[0].split(",")[0];
  const last = xy[xy.length - 1].split(",")[0];
  svg.querySelector(".line").setAttribute("d", `M${xy.join("L")}`);
  svg.querySelector(".area").setAttribute("d", `M${first},${h}L${xy.join("L")}L${last},${h}Z`);
  text("chart-span", `last ${duration(windowSeconds)}`);
  text("chart-max", `peak ${rateText(Math.max(...points.map((p) => p[1])))}`);
}

function addHistory(history) {
  if (!history || !history.counts) return;
  windowSeconds = history.window;
  // A bucket's count is spread over its width; the last bucket is still filling, so it is left out.
  const full = history.counts.slice(0, -1);
  points = full.map((n, i) => [history.start + (i + 0.5) * history.width, n / history.width]);
}

function addSample(t, finished) {
  samples.push([t, finished]);
  while (samples.length > 2 && t - samples[0][0] > SMOOTH_SECONDS) samples.shift();
  if (samples.length < 2) return null;
  const [t0, n0] = samples[0];
  const rate = Math.max(0, (finished - n0) / Math.max(0.001, t - t0));
  points.push([t, rate]);
  if (points.length > MAX_POINTS) points.splice(0, points.length - MAX_POINTS);
  return rate;
}

// Tasks held by this server process's workers: how many, and their kernels' mean ctx.progress.
function renderInProgress(running) {
  if (!running) return;
  const mean = Math.round(running.mean * 100);
  text("stat-running", running.tasks ? `${running.tasks} · ${mean} % on average` : "0");
  $("stat-running").title = running.each.map((f) => `${Math.round(f * 100)} %`).join(", ");
}

function update(data) {
  const d = data.datasets;
  const pct = d.total ? Math.round((1000 * settled(d)) / d.total) / 10 : 0;
  $("progress").value = pct;
  text("percent", `${pct} %`);
  for (const key of ["total", "pending", "leased", "done", "failed"]) text(`stat-${key}`, d[key]);
  text("stat-results", data.results);
  text("stat-errors", data.errors);
  text("stat-workers", data.workers);
  text("stat-compute", `${data.compute_seconds} s`);
  const v = data.verification;
  if (v) {
    text("stat-verified", v.verified);
    text("stat-unverified", v.pending);
    text("stat-conflict", v.conflict);
    text("stat-flagged", v.flagged_workers);
  }
  renderState(data.state);
  const generation = $("generation-error");
  generation.hidden = !data.generation_error;
  generation.querySelector(".message").textContent = data.generation_error || "";
  const advice = $("advice");
  advice.hidden = !data.advice;
  advice.querySelector(".message").textContent = data.advice || "";
  renderErrors(data.kernel_error_groups);
  if (data.t === undefined) return; // the snapshot rendered with the page: no clock, no hosts
  renderHosts(data.hosts);
  renderInProgress(data.in_progress);
  if (data.history) addHistory(data.history);
  const rate = addSample(data.t, settled(d));
  if (rate !== null) text("stat-rate", rateText(rate));
  drawChart(data.t);
  section.dataset.updates = String(Number(section.dataset.updates || 0) + 1);
}

function connected(on, label) {
  const state = $("live-state");
  state.replaceChildren(element("span", { className: `live-dot${on ? " on" : ""}` }), label);
}

if (section) {
  update(JSON.parse($("initial-data").textContent));
  section.dataset.updates = "0";
  const source = new EventSource(section.dataset.liveUrl);
  source.onopen = () => connected(true, "live");
  source.onerror = () => connected(false, "reconnecting…");
  source.onmessage = (event) => update(JSON.parse(event.data));
  source.addEventListener("gone", () => {
    source.close();
    connected(false, "this campaign no longer exists");
  });
  source.addEventListener("signedout", () => {
    source.close();
    connected(false, "signed out: reload the page to sign in again");
  });
}
