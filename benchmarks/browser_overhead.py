"""Browser overhead: kernels through the full browser harness vs Node.js running them in a plain loop.

Two CPU-bound kernels like the seed's benchmarks (a primality test over a range, and a recursive
Fibonacci computation) run three ways on the same datasets:

- **browser**: the embed snippet on a host page of another origin (http://localhost:PORT, the server
  being http://127.0.0.1:PORT), in headless Chromium (Playwright's sync API,
  ``executable_path="/usr/bin/chromium"``), throttle "high", the visitor clicking "contribute": host
  page, iframe broker, sandboxed runner, Web Worker, WebSocket to the server;
- **headless worker**: ``python -m distribute worker`` (kernels in mini-racer);
- **Node**: ``node`` evaluating the same kernel source and calling ``main`` on every dataset in a
  plain loop, no protocol at all: the ceiling.

Throughput through the server = (results - 1) / (last result - first result), from the result rows'
commit times; Node's = datasets / loop time. The ratio to Node is taken within each run (Node runs
right before the others), medians over `--runs`.

    python -m benchmarks.browser_overhead [--runs 3]
"""

from __future__ import annotations

import argparse
import contextlib
import http.server
import json
import shutil
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

from .common import PYTHON, ROOT, Server, median, preamble, table, write_section

__all__ = ["KERNELS", "main"]

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]
TARGET = 0.97

PRIMES = """({
  main: function (d) {
    var count = 0;
    for (var n = d.min; n < d.max; n++) {
      if (n < 2) continue;
      var prime = true;
      for (var k = 2; k * k <= n; k++) { if (n % k === 0) { prime = false; break; } }
      if (prime) count++;
    }
    return count;
  }
})"""

FIBONACCI = """({
  main: function (d) {
    function fib(n) { return n < 2 ? n : fib(n - 1) + fib(n - 2); }
    return fib(d.n);
  }
})"""

# name -> (kernel, generator of the datasets); each task takes tens of milliseconds.
KERNELS = {
    "primality": (
        PRIMES,
        "({ main: function () { var a = []; for (var i = 0; i < 120; i++) a.push({min: 1000000 + i * 120000,"
        " max: 1000000 + (i + 1) * 120000}); return a; } })",
    ),
    "fibonacci": (
        FIBONACCI,
        "({ main: function () { var a = []; for (var i = 0; i < 100; i++) a.push({n: 29 + (i % 4)}); return a; } })",
    ),
}

NODE_LOOP = """
const fs = require("fs");
const [kernelFile, generatorFile] = process.argv.slice(2);
const kernel = eval(fs.readFileSync(kernelFile, "utf8"));
const datasets = eval(fs.readFileSync(generatorFile, "utf8")).main();
const t0 = process.hrtime.bigint();
let sink = 0;
for (const d of datasets) { const r = kernel.main(d); sink += typeof r === "number" ? r : 1; }
const seconds = Number(process.hrtime.bigint() - t0) / 1e9;
console.log(JSON.stringify({ n: datasets.length, seconds, sink }));
"""


def node_rate(kernel: str, generator: str) -> float:
    with tempfile.TemporaryDirectory() as tmp:
        files = [Path(tmp) / "kernel.js", Path(tmp) / "generator.js", Path(tmp) / "loop.js"]
        for path, text in zip(files, (kernel, generator, NODE_LOOP), strict=True):
            path.write_text(text)
        out = subprocess.run(
            ["node", str(files[2]), str(files[0]), str(files[1])], capture_output=True, text=True, check=True
        )
    result = json.loads(out.stdout)
    return result["n"] / result["seconds"]


# The same kernel in a bare Web Worker (no harness, no server): a blob worker on a plain page calls
# `main` on every dataset, either in one loop ("loop") or one postMessage round trip per dataset
# with the next one already queued in the worker ("messages", what the harness does at depth 2).
BARE_PAGE = """<!doctype html><html><head><meta charset='utf-8'><title>bare</title></head><body><script>
const source = `const kernel = (KERNEL);
const datasets = (GENERATOR).main();
onmessage = (e) => {
  if (e.data === "loop") {
    const t0 = performance.now(); let sink = 0;
    for (const d of datasets) { const r = kernel.main(d); sink += typeof r === "number" ? r : 1; }
    postMessage({ n: datasets.length, seconds: (performance.now() - t0) / 1000, sink });
  } else {
    const t0 = performance.now(); const r = kernel.main(datasets[e.data]);
    postMessage({ i: e.data, ms: performance.now() - t0, r });
  }
};`;
window.runBare = (mode) => new Promise((resolve) => {
  const worker = new Worker(URL.createObjectURL(new Blob([source], { type: "text/javascript" })));
  if (mode === "loop") {
    worker.onmessage = (e) => { worker.terminate(); resolve(e.data); };
    worker.postMessage("loop");
    return;
  }
  const n = NUMBER; let next = 0, done = 0, busy = 0; const t0 = performance.now();
  const send = () => { if (next < n) worker.postMessage(next++); };
  worker.onmessage = (e) => {
    busy += e.data.ms; done++;
    if (done === n) { worker.terminate(); resolve({ n, seconds: (performance.now() - t0) / 1000, busy_ms: busy }); }
    else send();
  };
  send(); send();
});
</script></body></html>"""


def bare_worker_rates(kernel: str, generator: str, n: int) -> dict[str, float]:
    """Tasks/s of `kernel` in a bare Web Worker of the same Chromium: {"loop": …, "messages": …}."""
    from playwright.sync_api import sync_playwright

    html = BARE_PAGE.replace("KERNEL", kernel).replace("GENERATOR", generator).replace("NUMBER", str(n))
    rates = {}
    with host_site(html) as url, sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_context().new_page()
            page.goto(url)
            for mode in ("loop", "messages"):
                out = page.evaluate(f"runBare('{mode}')")
                rates[mode] = out["n"] / out["seconds"]
        finally:
            browser.close()
    return rates


def _kernel_ms_from_db(server: Server, campaign: int) -> float:
    """Mean time `main` took per task as the worker measured it (the harness reports `ms` per result)."""
    return server.query("SELECT AVG(compute_ms) FROM result WHERE campaign = ?", (campaign,))[0][0]


def _rate_from_db(server: Server, campaign: int) -> float:
    count, first, last = server.query(
        "SELECT COUNT(*), MIN(created), MAX(created) FROM result WHERE campaign = ?", (campaign,)
    )[0]
    return (count - 1) / (last - first) if count > 1 and last > first else float("nan")


def _wait_complete(server: Server, campaign: int, timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.query("SELECT status FROM campaign WHERE id = ?", (campaign,))[0][0] == "complete":
            return
        time.sleep(0.1)
    raise TimeoutError(f"campaign {campaign} not complete after {timeout} s")


@contextlib.contextmanager
def host_site(html: str) -> Iterator[str]:
    """A host page served on 127.0.0.1 and visited as http://localhost:PORT (another site than the server)."""

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = html.encode()
            self.send_response(200)
            self.send_header("Content-Type", "text/html; charset=utf-8")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://localhost:{httpd.server_address[1]}/"
    finally:
        httpd.shutdown()
        httpd.server_close()


def browser_rate(server: Server, campaign: int) -> float:
    from playwright.sync_api import sync_playwright

    from distribute.embed import embed_snippet

    page_html = f"<!doctype html><html><head><meta charset='utf-8'><title>host</title></head><body>{embed_snippet(server.url, campaign, throttle='high')}</body></html>"
    with host_site(page_html) as url, sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_context().new_page()
            page.goto(url)
            broker = page.frame_locator("iframe").first
            broker.locator("#contribute").wait_for(state="visible")
            broker.locator("#contribute").click()
            _wait_complete(server, campaign)
        finally:
            browser.close()
    return _rate_from_db(server, campaign)


def worker_rate(server: Server, campaign: int) -> float:
    subprocess.run(
        [PYTHON, "-m", "distribute", "worker", "--server", server.url, "--campaign", str(campaign), "--quiet"],
        cwd=ROOT,
        check=True,
        capture_output=True,
        timeout=600,
    )
    _wait_complete(server, campaign)
    return _rate_from_db(server, campaign)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.browser_overhead", description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args(argv)
    head = preamble("benchmarks.browser_overhead", argv)  # before the runs: the load average at the start
    if not Path(CHROMIUM).exists() or shutil.which("node") is None:
        raise SystemExit("needs /usr/bin/chromium and node")
    kinds = ("node", "bare", "bare_messages", "browser", "browser_ms", "worker")
    rows: dict[str, dict[str, list[float]]] = {k: {kind: [] for kind in kinds} for k in KERNELS}
    # Rates come from the result rows' commit times: keep group commits 20 ms apart even at these
    # low rates (the server stretches them up to `flush_interval_low_rate` otherwise).
    with Server({"flush_interval_low_rate": 0.02}) as server:
        for k in range(args.runs):
            for name, (kernel, generator) in KERNELS.items():
                r = rows[name]
                r["node"].append(node_rate(kernel, generator))
                bare = bare_worker_rates(kernel, generator, len(json.loads(_node_datasets(generator))))
                r["bare"].append(bare["loop"])
                r["bare_messages"].append(bare["messages"])
                for how, run in (("browser", browser_rate), ("worker", worker_rate)):
                    campaign = server.create_campaign(kernel, generator, name=f"{name}-{how}-{k}", task_timeout=120)
                    server.wait_status(campaign["id"], ["running"])
                    r[how].append(run(server, campaign["id"]))
                    if how == "browser":
                        r["browser_ms"].append(_kernel_ms_from_db(server, campaign["id"]))
                print(
                    f"  run {k + 1}: {name}: node {r['node'][-1]:.1f}/s ({1000 / r['node'][-1]:.1f} ms a call), "
                    f"bare Web Worker {r['bare'][-1]:.1f}/s loop, {r['bare_messages'][-1]:.1f}/s by messages, "
                    f"browser {r['browser'][-1]:.1f}/s ({r['browser'][-1] / r['node'][-1]:.3f}; main took "
                    f"{r['browser_ms'][-1]:.1f} ms a task in the harness), headless worker {r['worker'][-1]:.1f}/s "
                    f"({r['worker'][-1] / r['node'][-1]:.3f})",
                    flush=True,
                )
    lines = ["## Browser overhead\n", head, "\n"]
    lines.append(
        "Tasks/s of each kernel through the server vs Node.js calling `main` in a plain loop over the same datasets "
        '(one core: at throttle "high" the harness runs cores - 1 = 1 Web Worker here, 2 tasks deep; the headless '
        "worker runs one mini-racer). *Bare Web Worker*: the same kernel in a blob Web Worker of the same Chromium on a "
        "plain page, no harness and no server, calling `main` in one loop, or once per message with the next dataset "
        "already queued (as the harness does). *main in the harness*: the mean `ms` per task the harness reports "
        "(measured inside the Web Worker around `main`). Ratios are per run (all measured in the same run), medians. "
        f"Target: browser / Node >= {TARGET}.\n\n"
    )
    table_rows = []
    for name, r in rows.items():

        def ratio(a: str, b: str, r: dict[str, list[float]] = r) -> float:
            return median(x / y for x, y in zip(r[a], r[b], strict=True))

        browser_ratio = ratio("browser", "node")
        table_rows.append(
            (
                name,
                f"{median(r['node']):.1f} ({1000 / median(r['node']):.1f} ms)",
                f"{median(r['bare']):.1f} ({ratio('bare', 'node'):.3f})",
                f"{median(r['bare_messages']):.1f} ({ratio('bare_messages', 'node'):.3f})",
                f"{median(r['browser']):.1f} ({median(r['browser_ms']):.1f} ms)",
                f"**{browser_ratio:.3f}** ({'met' if browser_ratio >= TARGET else 'missed'})",
                f"{ratio('browser', 'bare'):.3f}",
                f"{median(r['worker']):.1f} ({ratio('worker', 'node'):.3f})",
            )
        )
    lines.append(
        table(
            (
                "kernel",
                "Node tasks/s (ms a call)",
                "bare Web Worker, loop (/ Node)",
                "bare Web Worker, by messages (/ Node)",
                "browser harness tasks/s (main in the harness)",
                "browser / Node",
                "harness / bare loop",
                "headless worker tasks/s (/ Node)",
            ),
            table_rows,
        )
    )
    text = "".join(lines)
    print(text)
    if not args.no_write:
        write_section("browser-overhead", text)


def _node_datasets(generator: str) -> str:
    """The generator's datasets as JSON (to know how many there are)."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "generator.js"
        path.write_text(generator)
        script = "console.log(JSON.stringify(eval(require('fs').readFileSync(process.argv[1], 'utf8')).main()))"
        return subprocess.run(["node", "-e", script, str(path)], capture_output=True, text=True, check=True).stdout


if __name__ == "__main__":
    main()
