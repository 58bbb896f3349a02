// The execute page: runs the campaign's kernel (or an edited version) on its first datasets in this
// browser, through the harness's own sandboxed runner (/embed/runner in <iframe sandbox="allow-scripts">),
// speaking the same messages the broker speaks (start, tasks, stop → ready, alive, report).
// Nothing goes back to the server: this is a trial run for the campaign's owner.

import { decode } from "./msgpack.js";

const box = document.getElementById("execute");
const $ = (id) => document.getElementById(id);
const READY_TIMEOUT_MS = 10000;

let frame = null;
let run = 0; // the current run; messages of an earlier one are ignored

function setStatus(message, kind = "") {
  const status = $("exec-status");
  status.textContent = message;
  status.className = `exec-status ${kind}`;
}

function base64Bytes(text) {
  const raw = atob(text);
  const bytes = new Uint8Array(raw.length);
  for (let i = 0; i < raw.length; i++) bytes[i] = raw.charCodeAt(i);
  return bytes.buffer;
}

function cell(content, className = "") {
  const td = document.createElement("td");
  td.className = className;
  td.append(content);
  return td;
}

function code(value) {
  const el = document.createElement("code");
  el.textContent = JSON.stringify(value);
  return el;
}

function outcomeCell(ok, payload) {
  const wrap = document.createElement("div");
  if (ok) {
    if (payload === null) {
      wrap.className = "muted";
      wrap.textContent = "no result";
    } else {
      wrap.className = "ok";
      try {
        wrap.append(code(decode(payload)));
      } catch (error) {
        wrap.textContent = `undecodable result: ${error.message}`;
      }
    }
    wrap.dataset.outcome = "result";
  } else {
    const [message, stack] = payload;
    const details = document.createElement("details");
    const summary = document.createElement("summary");
    summary.className = "bad";
    summary.textContent = message;
    const pre = document.createElement("pre");
    pre.textContent = stack || "(no stack)";
    details.append(summary, pre);
    wrap.append(details);
    wrap.dataset.outcome = "error";
  }
  return wrap;
}

// The runner speaks only over the MessageChannel it hands over with `ready`, and every message in
// either direction carries the nonce named in its URL fragment (see embed/src/runner.js).
function newNonce() {
  return Array.from(crypto.getRandomValues(new Uint8Array(16)), (b) => b.toString(16).padStart(2, "0")).join("");
}

function stopRunner() {
  if (frame) {
    frame.port?.postMessage({ type: "stop", nonce: frame.nonce });
    frame.port?.close();
    frame.iframe.remove();
  }
  frame = null;
}

function openRunner(myRun) {
  return new Promise((resolve, reject) => {
    const iframe = document.createElement("iframe");
    iframe.setAttribute("sandbox", "allow-scripts");
    iframe.setAttribute("title", "sandbox");
    iframe.setAttribute("aria-hidden", "true");
    iframe.className = "runner";
    const nonce = newNonce();
    const timer = setTimeout(() => reject(new Error("the sandbox did not start (is the browser harness built?)")), READY_TIMEOUT_MS);
    const onReady = (event) => {
      if (event.source !== iframe.contentWindow || event.origin !== "null" || event.data?.nonce !== nonce) return;
      window.removeEventListener("message", onReady);
      clearTimeout(timer);
      if (event.data.type === "refused") {
        reject(new Error("this browser did not apply the sandbox's security policy"));
      } else if (event.data.type === "ready" && event.ports.length === 1) {
        opened.port = event.ports[0];
        if (myRun === run) resolve(opened);
      }
    };
    window.addEventListener("message", onReady);
    const url = new URL(box.dataset.runner, location.href);
    url.hash = nonce;
    iframe.src = url.href;
    document.body.append(iframe);
    const opened = { iframe, port: null, nonce };
    frame = opened;
  });
}

async function execute() {
  const myRun = ++run;
  stopRunner();
  const button = $("run");
  button.disabled = true;
  const tbody = $("exec-results").querySelector("tbody");
  tbody.replaceChildren();
  try {
    setStatus("Loading datasets…");
    const count = Math.max(1, Math.min(Number($("count").value) || 5, Number($("count").max) || 20));
    const response = await fetch(`${box.dataset.source}?n=${count}`, { credentials: "same-origin" });
    if (!response.ok) throw new Error(`the server answered ${response.status}`);
    const data = await response.json();
    if (!data.datasets.length) {
      setStatus("This campaign has no datasets yet (is its generator still running, or did it fail?).", "bad");
      return;
    }
    const rows = new Map();
    for (const d of data.datasets) {
      const row = document.createElement("tr");
      row.dataset.datasetId = d.id;
      row.append(cell(String(d.id), "num"), cell(code(d.value)), cell("waiting…", "muted"), cell("", "num"));
      tbody.append(row);
      rows.set(d.id, row);
    }
    setStatus("Starting the sandbox…");
    const runner = await openRunner(myRun);
    let left = rows.size;
    let failures = 0;
    const finished = new Promise((resolve) => {
      runner.port.onmessage = (event) => {
        if (myRun !== run) return;
        const msg = event.data;
        if (msg?.nonce !== runner.nonce || msg.type !== "report" || msg.gen !== myRun) return;
        for (const [id, ok, payload, ms] of msg.items) {
          const row = rows.get(id);
          if (!row || row.dataset.done) continue;
          row.dataset.done = "1";
          row.children[2].replaceWith(cell(outcomeCell(ok, payload)));
          row.children[3].textContent = `${ms.toFixed(1)} ms`;
          left -= 1;
          if (!ok) failures += 1;
        }
        setStatus(`Running… ${rows.size - left} of ${rows.size}`);
        if (left === 0) resolve();
      };
    });
    const kernel = $("kernel").value;
    const start = { type: "start", gen: myRun, kernel, static: data.static, timeout: data.timeout, maxResultBytes: data.maxResultBytes, workers: 1, duty: 1, depth: 1 };
    runner.port.postMessage({ ...start, nonce: runner.nonce });
    const tasks = data.datasets.map((d) => [d.id, base64Bytes(d.msgpack)]);
    runner.port.postMessage({ type: "tasks", gen: myRun, tasks, nonce: runner.nonce }, tasks.map((t) => t[1]));
    setStatus(`Running… 0 of ${rows.size}`);
    await finished;
    if (myRun !== run) return;
    const ok = rows.size - failures;
    setStatus(`Done: ${ok} answered, ${failures} error${failures === 1 ? "" : "s"}.`, failures ? "bad" : "ok");
    box.dataset.finished = String(myRun);
  } catch (error) {
    if (myRun === run) setStatus(`Could not run: ${error.message}`, "bad");
  } finally {
    if (myRun === run) {
      stopRunner();
      button.disabled = false;
    }
  }
}

$("run").addEventListener("click", execute);
