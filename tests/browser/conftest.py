"""Fixtures for tests in a real browser: headless Chromium or Firefox, a host site, and a canary server.

- `browser`: one browser per engine for the session, driven through Playwright's sync API on one
  dedicated thread (Playwright's async API does not run under Trio, and its sync objects belong to
  the thread that made them). Tests call `await browser.run(fn, ...)` to run `fn` on that thread.
  It is Debian's Chromium unless a test is marked `in_every_engine`: such a test runs once in
  Chromium and once in Debian's Firefox ESR (over WebDriver BiDi, see tests/browser/firefox_bidi.py).
- `host_site`: a plain HTTP server for host pages on another origin (http://localhost:PORT, while
  the distribute server is http://127.0.0.1:PORT: a different site, as in production).
- `canary`: an HTTP/WebSocket listener on yet another port. Malicious kernels aim at it; every TCP
  connection it sees is recorded, and a test passes only if it saw none.

- `embedding`: a site owner's view of `live_server`: campaigns, host pages that embed the snippet
  for one (opened in `browser`, closed at the end of a block), and what the server stored.

Helpers at the bottom open a host page that embeds the snippet and drive the broker frame.
"""

from __future__ import annotations

import contextlib
import os
import textwrap
from collections.abc import AsyncIterator, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

import pytest
import trio

from distribute.embed import BUILD_DIR, embed_snippet
from tests.browser import firefox_bidi
from tests.conftest import LiveServer

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]
ENGINES = ("chromium", "firefox")
T = TypeVar("T")

# A test that must hold in every browser engine the harness supports, not only in Chromium.
in_every_engine = pytest.mark.parametrize("browser", ENGINES, indirect=True)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "browser" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.browser)


def _require(condition: bool, reason: str) -> None:
    """A missing prerequisite fails the test loudly: `make test` installs all of them."""
    if not condition:
        pytest.fail(f"{reason}; `make test` installs it")


# --------------------------------------------------------------------------- browser


class BrowserThread:
    """A browser (`engine`: "chromium" or "firefox") driven by Playwright's sync API on a thread of its own."""

    def __init__(self, engine: str = "chromium", workdir: Path | None = None) -> None:
        self.engine = engine
        self._workdir = workdir
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"playwright-{engine}")
        self._playwright: Any = None
        self.browser: Any = None

    def call(self, fn: Callable[..., T], *args: Any) -> T:
        return self._executor.submit(fn, *args).result()

    async def run(self, fn: Callable[..., T], *args: Any) -> T:
        """Run `fn(*args)` on the browser thread without blocking Trio (cancellable: the wait is abandoned)."""
        future = self._executor.submit(fn, *args)
        return await trio.to_thread.run_sync(future.result, abandon_on_cancel=True)

    def start(self) -> None:
        def launch() -> None:
            from playwright.sync_api import sync_playwright

            self._playwright = sync_playwright().start()
            if self.engine == "firefox":
                assert self._workdir is not None, "Firefox needs a directory for its launcher"
                self.browser = firefox_bidi.launch(self._playwright, self._workdir)
            else:
                self.browser = self._playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)

        self.call(launch)

    def close(self) -> None:
        def shutdown() -> None:
            if self.browser is not None:
                self.browser.close()
            if self._playwright is not None:
                self._playwright.stop()

        self.call(shutdown)
        self._executor.shutdown()


class Engines:
    """The test run's browsers, one per engine, each launched when a test first needs it."""

    def __init__(self, workdir: Path) -> None:
        self._workdir = workdir
        self._running: dict[str, BrowserThread] = {}

    def get(self, engine: str) -> BrowserThread:
        if engine not in self._running:
            if engine == "firefox":
                _require(
                    Path(firefox_bidi.FIREFOX).exists(),
                    f"{firefox_bidi.FIREFOX} is missing (apt-get install firefox-esr)",
                )
            else:
                _require(Path(CHROMIUM).exists(), f"{CHROMIUM} is missing (apt-get install chromium)")
            thread = BrowserThread(engine, self._workdir)
            thread.start()
            self._running[engine] = thread
        return self._running[engine]

    def close(self) -> None:
        for thread in self._running.values():
            thread.close()


@pytest.fixture(scope="session")
def engines(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Engines]:
    _require((BUILD_DIR / "runner.js").exists(), "the harness is not built (cd embed && npm ci && node build.mjs)")
    running = Engines(tmp_path_factory.mktemp("engines"))
    yield running
    running.close()


@pytest.fixture
def browser(engines: Engines, request: pytest.FixtureRequest) -> BrowserThread:
    """Chromium, or the engine an `in_every_engine` test runs in."""
    return engines.get(getattr(request, "param", "chromium"))


# --------------------------------------------------------------------------- tiny HTTP servers


async def _read_request(stream: trio.SocketStream, limit: int = 65536) -> bytes:
    data = b""
    with trio.move_on_after(5):
        while b"\r\n\r\n" not in data and len(data) < limit:
            chunk = await stream.receive_some(4096)
            if not chunk:
                break
            data += chunk
    return data


@dataclass
class HostSite:
    """Serves host pages at http://localhost:PORT/NAME."""

    port: int = 0
    pages: dict[str, str] = field(default_factory=dict)
    beacons: list[dict[str, float]] = field(default_factory=list)  # what host pages reported, in order

    def add(self, name: str, html: str) -> str:
        self.pages["/" + name] = html
        return f"http://localhost:{self.port}/{name}"

    async def handle(self, stream: trio.SocketStream) -> None:
        async with stream:
            request = await _read_request(stream)
            path = request.split(b" ", 2)[1].decode("latin-1") if request.count(b" ") >= 2 else "/"
            route, _, query = path.partition("?")
            body = self.pages.get(route)
            if route == "/beacon":
                fields = dict(part.split("=", 1) for part in query.split("&") if "=" in part)
                self.beacons.append({k: float(v) for k, v in fields.items()} | {"at": trio.current_time()})
                status, payload = "204 No Content", b""
            elif body is None:
                status, payload = "404 Not Found", b"not found"
            else:
                status, payload = "200 OK", body.encode()
            head = (
                f"HTTP/1.1 {status}\r\nContent-Type: text/html; charset=utf-8\r\n"
                f"Content-Length: {len(payload)}\r\nConnection: close\r\n\r\n"
            )
            with contextlib.suppress(trio.BrokenResourceError):
                await stream.send_all(head.encode() + payload)


@dataclass
class Canary:
    """Records every connection; answers like a permissive HTTP server so nothing fails for lack of one."""

    port: int = 0
    hits: list[bytes] = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}"

    async def handle(self, stream: trio.SocketStream) -> None:
        async with stream:
            self.hits.append(b"<connected>")
            request = await _read_request(stream)
            self.hits.append(request[:2000])
            body = b"canary"
            head = (
                "HTTP/1.1 200 OK\r\nAccess-Control-Allow-Origin: *\r\nContent-Type: text/plain\r\n"
                f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
            )
            with contextlib.suppress(trio.BrokenResourceError):
                await stream.send_all(head.encode() + body)


async def _listen(nursery: trio.Nursery, handler: Callable[[trio.SocketStream], Any], host: str) -> int:
    listeners = await nursery.start(partial(trio.serve_tcp, handler, 0, host=host))
    return int(listeners[0].socket.getsockname()[1])


@pytest.fixture
async def host_site(nursery: trio.Nursery) -> AsyncIterator[HostSite]:
    site = HostSite()
    site.port = await _listen(nursery, site.handle, "127.0.0.1")
    yield site


@pytest.fixture
async def canary(nursery: trio.Nursery) -> AsyncIterator[Canary]:
    bird = Canary()
    bird.port = await _listen(nursery, bird.handle, "127.0.0.1")
    yield bird


# --------------------------------------------------------------------------- host pages

# The host page measures its own responsiveness (requestAnimationFrame gaps) and keeps secrets
# (a cookie, localStorage) that no kernel may ever read.
HOST_SCRIPT = textwrap.dedent(
    """
    <script>
      document.cookie = "host_secret=cookie-3f9a; path=/";
      localStorage.setItem("host_secret", "storage-3f9a");
      window.__frames = 0; window.__maxGap = 0; window.__last = 0;
      function tick(t) {
        if (window.__last) window.__maxGap = Math.max(window.__maxGap, t - window.__last);
        window.__last = t; window.__frames += 1;
        requestAnimationFrame(tick);
      }
      requestAnimationFrame(tick);
    </script>
    """
)


# Reports the host page's animation frames to the host site four times a second: evidence that the
# page is alive and responsive that does not depend on Playwright (which declares the whole page
# crashed when any frame's process crashes, even a sandboxed runner's).
BEACON_SCRIPT = textwrap.dedent(
    """
    <script>
      setInterval(() => fetch(`/beacon?frames=${window.__frames}&gap=${Math.round(window.__maxGap)}`), 250);
    </script>
    """
)


def host_page(server_url: str, campaign: int | str, *, throttle: str = "low", beacon: bool = False) -> str:
    snippet = embed_snippet(server_url, campaign, throttle=throttle)
    scripts = HOST_SCRIPT + (BEACON_SCRIPT if beacon else "")
    head = "<!doctype html><html><head><meta charset='utf-8'><title>host</title></head>"
    return f"{head}<body><h1>Host</h1>{snippet}{scripts}</body></html>"


@dataclass
class Visit:
    """One open host page (Playwright objects: use them only on the browser thread)."""

    context: Any
    page: Any
    log: list[str] = field(default_factory=list)  # console messages and errors of every frame
    requests: list[str] = field(default_factory=list)  # every URL the page or its frames requested

    def broker(self) -> Any:
        for frame in self.page.frames:
            if "/embed/" in frame.url and "/embed/runner" not in frame.url:
                return frame
        raise LookupError("no broker frame")

    def runner(self) -> Any:
        # Playwright learns of a frame nested in a cross-origin frame a little later, and only
        # while it is processing events: wait with its own clock, not time.sleep.
        for _ in range(50):
            for frame in self.page.frames:
                if "/embed/runner" in frame.url:
                    return frame
            self.page.wait_for_timeout(100)
        raise LookupError("no runner frame")

    def runner_frames(self) -> int:
        """Runner iframes in the broker's document."""
        return int(self.broker().evaluate("() => document.querySelectorAll('iframe.runner').length"))

    def state(self) -> dict[str, Any]:
        state: dict[str, Any] = self.broker().evaluate(
            "() => ({state: document.body.dataset.state, done: Number(document.body.dataset.done),"
            " status: document.getElementById('status').textContent})"
        )
        return state

    def click(self, button: str) -> None:
        self.broker().locator(f"#{button}").click()

    def wait_state(self, state: str, timeout: float = 20) -> None:
        self.broker().wait_for_function(f"() => document.body.dataset.state === {state!r}", timeout=timeout * 1000)

    def wait_done(self, at_least: int, timeout: float = 30) -> None:
        self.broker().wait_for_function(
            f"() => Number(document.body.dataset.done) >= {at_least}", timeout=timeout * 1000
        )

    def host_frames(self) -> dict[str, float]:
        frames: dict[str, float] = self.page.evaluate("() => ({frames: window.__frames, maxGap: window.__maxGap})")
        return frames

    def reset_host_frames(self) -> None:
        self.page.evaluate("() => { window.__maxGap = 0; window.__last = 0; }")

    def host_secrets(self) -> dict[str, Any]:
        """What a kernel must never have touched on the host page."""
        secrets: dict[str, Any] = self.page.evaluate(
            "() => ({cookie: document.cookie, storage: localStorage.getItem('host_secret'), url: location.href,"
            " polluted: ({}).polluted === undefined && [].polluted === undefined, title: document.title})"
        )
        return secrets

    def realms_clean(self) -> bool:
        """No trace of prototype pollution in the host page, the broker or the runner."""
        probe = (
            "() => ({}).polluted === undefined && [].polluted === undefined && ({}).more3 === undefined"
            " && Object.keys({a: 1}).length === 1 && JSON.stringify({a: 1}) === '{\"a\":1}'"
        )
        frames = [self.page.main_frame, self.broker(), self.runner()]
        return all(frame.evaluate(probe) for frame in frames)

    def set_visibility(self, state: str) -> None:
        """Headless Chromium never hides a page, so the broker is told the way the browser tells it:
        document.visibilityState changes, then a visibilitychange event."""
        self.broker().evaluate(
            "(state) => { Object.defineProperty(document, 'visibilityState', {configurable: true, get: () => state});"
            " Object.defineProperty(document, 'hidden', {configurable: true, get: () => state === 'hidden'});"
            " document.dispatchEvent(new Event('visibilitychange')); }",
            state,
        )

    def set_throttle(self, level: str) -> None:
        self.broker().locator("#throttle").select_option(level)

    def close(self) -> None:
        self.context.close()


def open_visit(browser: BrowserThread, url: str) -> Visit:
    """Runs on the browser thread: a fresh context (no shared state) with the host page loaded."""
    context = browser.browser.new_context()
    page = context.new_page()
    visit = Visit(context, page)
    page.on("console", lambda message: visit.log.append(f"console.{message.type}: {message.text}"))
    page.on("pageerror", lambda error: visit.log.append(f"pageerror: {error}"))
    page.on("request", lambda request: visit.requests.append(request.url))
    page.goto(url)
    page.wait_for_selector("iframe")
    page.frame_locator("iframe").first.locator("#contribute").wait_for(state="visible")
    return visit


def generator_of(count: int) -> str:
    """A generator of `count` datasets {i: 0..count-1}."""
    return (
        f"({{ main: function () {{ var a = []; for (var i = 0; i < {count}; i++) a.push({{ i: i }}); return a; }} }})"
    )


@dataclass(frozen=True)
class Outcome:
    """What the server stored for a campaign: results by dataset, and the kernel errors."""

    results: dict[int, Any]  # dataset["i"] (or dataset id) -> decoded result (None: no result)
    hosts: set[str]
    errors: list[dict[str, Any]]
    campaign: dict[str, Any]


async def outcome(server: Any, campaign_id: int) -> Outcome:
    """What the server stored, through its API: every result (also empty ones) and kernel error."""
    results: dict[int, Any] = {}
    hosts: set[str] = set()
    for row in await server.results(campaign_id, include_empty=True):
        dataset = row["dataset"]
        key = dataset["i"] if isinstance(dataset, dict) and "i" in dataset else row["dataset_id"]
        results[key] = row["result"]
        hosts.add(row["host"])
    campaign = await server.campaign(campaign_id)
    return Outcome(results, hosts, campaign["kernel_errors"], campaign)


BUSY_KERNEL = """({
  main: function (d) {
    var end = Date.now() + MS;
    while (Date.now() < end) {}
    return d.i * 2;
  }
})"""


def busy_kernel(ms: int) -> str:
    """A kernel that keeps a worker busy for about `ms` milliseconds a dataset and returns i * 2."""
    return BUSY_KERNEL.replace("MS", str(ms))


@dataclass
class Embedding:
    """A site owner's view of `server`: campaigns, and host pages on `host_site` embedding the snippet."""

    browser: BrowserThread
    server: LiveServer
    host_site: HostSite

    async def campaign(self, kernel: str, datasets: int, static: str = "", **fields: Any) -> int:
        """A campaign of `kernel` over `datasets` datasets {i: 0..datasets-1}.

        Past the server's trial run (`skip_check`): these kernels are for browsers, and many probe browser
        APIs or fail on purpose, which is what the tests watch a browser do."""
        generator = generator_of(datasets)
        fields.setdefault("skip_check", "true")
        return await self.server.create_campaign(kernel=kernel, generator=generator, static=static, **fields)

    @contextlib.asynccontextmanager
    async def visit(self, campaign: int | str, *, throttle: str = "low", beacon: bool = False) -> AsyncIterator[Visit]:
        """A host page embedding the snippet for `campaign`, open in a fresh context until the block ends."""
        html = host_page(self.server.url, campaign, throttle=throttle, beacon=beacon)
        page = await self.browser.run(
            open_visit, self.browser, self.host_site.add(f"page{len(self.host_site.pages)}", html)
        )
        try:
            yield page
        finally:
            await self.browser.run(page.close)

    async def start(self, page: Visit, done: int) -> None:
        """Click "contribute" on `page` and wait until it has finished `done` tasks."""
        await self.browser.run(page.click, "contribute")
        await self.browser.run(page.wait_done, done)

    async def contribute(self, campaign: int, *, snippet: int | str | None = None) -> Outcome:
        """Click "contribute" on a host page (whose snippet is for `snippet`, by default `campaign`),
        wait until `campaign` is complete, and return what the server stored."""
        async with self.visit(campaign if snippet is None else snippet) as page:
            await self.browser.run(page.click, "contribute")
            await self.server.wait_complete(campaign, timeout=60)
        return await outcome(self.server, campaign)


@pytest.fixture
def embedding(browser: BrowserThread, live_server: LiveServer, host_site: HostSite) -> Embedding:
    return Embedding(browser, live_server, host_site)


def browser_cpu_seconds() -> float:
    """CPU time (user + system) used so far by every browser process this test run started."""
    ticks = os.sysconf("SC_CLK_TCK")
    parents: dict[int, int] = {}
    times: dict[int, float] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2 :].split()  # after "pid (comm) "
        pid = int(entry.name)
        parents[pid] = int(fields[1])
        times[pid] = (int(fields[11]) + int(fields[12])) / ticks
    ours = {os.getpid()}
    grew = True
    while grew:
        grew = False
        for pid, parent in parents.items():
            if parent in ours and pid not in ours:
                ours.add(pid)
                grew = True
    ours.discard(os.getpid())
    return sum(times.get(pid, 0.0) for pid in ours)
