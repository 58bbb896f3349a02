"""Debian's nginx in front of distribute server processes, for tests, with clients from chosen loopback addresses.

`start_nginx(nursery, folder, upstreams)` runs `/usr/sbin/nginx` (Debian's `nginx` package; `make test`
installs it) as the test's own user, with every file it writes (pid, logs, temporary bodies) in
`folder` and its configuration built there: nothing under /etc/nginx or /var is read or touched.

The site configuration is `deploy/nginx.conf` itself, the file docs/scale-out.md shows, with only
what a machine must differ in replaced (`site_config`): the three upstream ports, the listen address
and port, and the certificate and key (a self-signed pair for 127.0.0.1 made with openssl). Each
replacement must match exactly once, so a change to the file's shape fails here loudly rather than
testing something else. nginx terminates TLS as in production, so the servers see plain HTTP and
learn the scheme from `X-Forwarded-Proto`.

Clients: every loopback address (127.0.0.2, 127.0.0.3, ...) is this machine, so a client socket bound
to one of them is a different client address to nginx. `http_client` and `open_ws` connect from such
a source address and trust the test certificate.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import re
import socket
import ssl
import subprocess
from collections.abc import AsyncIterator
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import httpx
import trio
from trio_websocket import WebSocketConnection, wrap_client_stream

ROOT = Path(__file__).resolve().parents[2]
NGINX = Path("/usr/sbin/nginx")
NGINX_CONF = ROOT / "deploy" / "nginx.conf"
MAX_MESSAGE = 16 * 1024 * 1024

# What site_config replaces in deploy/nginx.conf (each pattern must match exactly as often as said).
_UPSTREAM = re.compile(r"(\n\s*server 127\.0\.0\.1:)(800[1-3])( )")
_LISTEN = re.compile(r"\n(\s*)listen 443 ssl;")
_CERT = re.compile(r"(ssl_certificate\s+)/etc/ssl/certs/compute\.example\.org\.pem;")
_KEY = re.compile(r"(ssl_certificate_key\s+)/etc/ssl/private/compute\.example\.org\.key;")


def _replace_once(pattern: re.Pattern[str], replacement: str, text: str) -> str:
    result, count = pattern.subn(replacement, text)
    assert count == 1, f"deploy/nginx.conf changed shape: {pattern.pattern!r} matched {count} times"
    return result


def site_config(upstreams: list[int], listen: int, cert: Path, key: Path) -> str:
    """deploy/nginx.conf for this machine: only the upstream ports, the listen port and the TLS files differ."""
    text = NGINX_CONF.read_text()
    found = _UPSTREAM.findall(text)
    assert len(found) == len(upstreams) == 3, f"deploy/nginx.conf should name 3 upstream servers, found {found}"
    ports = iter(upstreams)
    text = _UPSTREAM.sub(lambda m: f"{m.group(1)}{next(ports)}{m.group(3)}", text)
    text = _replace_once(_LISTEN, f"\n\\1listen 127.0.0.1:{listen} ssl;", text)
    text = _replace_once(_CERT, f"\\g<1>{cert};", text)
    return _replace_once(_KEY, f"\\g<1>{key};", text)


def main_config(folder: Path, site: Path) -> str:
    """nginx's main configuration: everything it writes in `folder`, run as the current user, the site included."""
    user = "" if os.geteuid() != 0 else f"user {pwd.getpwuid(os.geteuid()).pw_name};\n"  # workers stay root in tests
    temp = "\n".join(
        f"    {name}_temp_path {folder / name};" for name in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
    )
    return (
        f"{user}worker_processes 1;\npid {folder / 'nginx.pid'};\nerror_log {folder / 'error.log'} info;\n"
        "events { worker_connections 1024; }\n"
        f"http {{\n    access_log {folder / 'access.log'};\n{temp}\n    include {site};\n}}\n"
    )


def self_signed(folder: Path) -> tuple[Path, Path]:
    """A certificate and key for 127.0.0.1 (an IP subjectAltName), valid for two days."""
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=127.0.0.1",
         "-addext", "subjectAltName=IP:127.0.0.1", "-keyout", str(key), "-out", str(cert)],
        check=True,
        capture_output=True,
    )  # fmt: skip
    return cert, key


@dataclass
class Nginx:
    """A running nginx: its https URL on 127.0.0.1, the certificate clients must trust, and its logs."""

    port: int
    cert: Path
    folder: Path
    process: trio.Process

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    @property
    def ws_url(self) -> str:
        return f"wss://127.0.0.1:{self.port}/ws"

    def ssl_context(self) -> ssl.SSLContext:
        return ssl.create_default_context(cafile=str(self.cert))

    def logs(self) -> str:
        return "\n".join(
            f"--- nginx {name}:\n{(self.folder / name).read_text()[-3000:]}"
            for name in ("error.log", "access.log")
            if (self.folder / name).exists()
        )

    def http_client(self, source: str = "127.0.0.1", **kwargs: object) -> httpx.AsyncClient:
        """An HTTP client whose connections come from `source`, trusting this nginx's certificate."""
        transport = httpx.AsyncHTTPTransport(local_address=source, verify=self.ssl_context())
        return httpx.AsyncClient(base_url=self.url, transport=transport, timeout=30, **kwargs)  # type: ignore[arg-type]

    def open_ws(
        self, source: str = "127.0.0.1", headers: list[tuple[bytes, bytes]] | None = None
    ) -> contextlib.AbstractAsyncContextManager[WebSocketConnection]:
        """A WebSocket to /ws through nginx, from the address `source`."""
        return open_ws(self.port, source, self.ssl_context(), headers)


@contextlib.asynccontextmanager
async def open_ws(
    port: int, source: str, ssl_context: ssl.SSLContext | None = None, headers: list[tuple[bytes, bytes]] | None = None
) -> AsyncIterator[WebSocketConnection]:
    """A WebSocket to 127.0.0.1:`port`/ws from the address `source` (trio-websocket cannot bind one itself)."""
    async with trio.open_nursery() as nursery:
        stream: trio.abc.Stream = await trio.open_tcp_stream("127.0.0.1", port, local_address=source)
        if ssl_context is not None:
            stream = trio.SSLStream(stream, ssl_context, server_hostname="127.0.0.1", https_compatible=True)
        ws = await wrap_client_stream(
            nursery,
            stream,  # type: ignore[arg-type]
            f"127.0.0.1:{port}",
            "/ws",
            extra_headers=headers,
            max_message_size=MAX_MESSAGE,
        )
        try:
            yield ws
        finally:
            await ws.aclose()
            await stream.aclose()


async def _accepts(port: int) -> bool:
    try:
        stream = await trio.open_tcp_stream("127.0.0.1", port)
    except OSError:
        return False
    await stream.aclose()
    return True


async def start_nginx(nursery: trio.Nursery, folder: Path, upstreams: list[int]) -> Nginx:
    """nginx on a free port in front of `upstreams` (server ports on 127.0.0.1), until `nursery` is cancelled."""
    assert NGINX.exists(), f"{NGINX} is missing: `make test` installs Debian's nginx package"
    folder.mkdir(parents=True, exist_ok=True)
    cert, key = self_signed(folder)
    with socket.socket() as probe:  # a port that was free a moment ago
        probe.bind(("127.0.0.1", 0))
        port = int(probe.getsockname()[1])
    site = folder / "distribute.conf"
    site.write_text(site_config(upstreams, port, cert, key))
    conf = folder / "nginx.conf"
    conf.write_text(main_config(folder, site))
    command = [str(NGINX), "-p", str(folder), "-c", str(conf), "-e", str(folder / "error.log"), "-g", "daemon off;"]
    process: trio.Process = await nursery.start(
        partial(trio.run_process, command, stdin=subprocess.DEVNULL, capture_stderr=False, check=False)
    )
    proxy = Nginx(port, cert, folder, process)
    with trio.fail_after(20):
        while not await _accepts(port):
            assert process.returncode is None, f"nginx exited with {process.returncode}:\n{proxy.logs()}"
            await trio.sleep(0.05)
    return proxy
