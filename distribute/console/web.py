"""What every console page shares: its state, the signed-in user, CSRF, security headers, rendering.

The console blueprint (see `__init__.py`) runs `load_visitor` before and `secure_response` after
each of its requests:

- `load_visitor` gives each request a CSP nonce, finds the signed-in user from the session cookie
  (`g.user`, `g.session_csrf`), or a signed-out visitor's double-submit CSRF token, and refuses any
  POST whose form does not carry the matching token (403; nothing is changed).
- `secure_response` sets the console's policy: CSP with the nonce and `frame-ancestors 'none'`,
  `X-Frame-Options: DENY`, `nosniff`, `Referrer-Policy`, `Cache-Control: no-store` for pages that
  show account data, and HSTS when the request came over TLS. The embed pages are another
  blueprint and keep their own policy (they must be framable).
"""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import timedelta
from functools import cache, wraps
from pathlib import Path
from typing import Any, cast
from urllib.parse import urlsplit

from flask.typing import RouteCallable
from quart import Blueprint, Response, current_app, g, redirect, render_template, request, url_for
from quart.typing import ResponseTypes
from quart_schema import hide
from werkzeug.exceptions import RequestEntityTooLarge

from ..auth import ANON_CSRF_COOKIE, SESSION_COOKIE, RateLimiter, cookie_name, new_csrf_token, same_token
from ..platform import Platform
from ..storage.base import AccountStore, ConsoleQueries
from ..webstate import current_platform

__all__ = [
    "CONSOLE_EXTENSION",
    "ConsoleBlueprint",
    "ConsoleState",
    "client_address",
    "console",
    "load_visitor",
    "login_required",
    "own_url",
    "page",
    "secure_response",
    "server_url",
    "session_cookie_name",
    "session_token",
    "set_session_cookie",
    "static_url",
    "tls",
]


SIGNIN_IP_FACTOR = 4


class ConsoleBlueprint(Blueprint):
    """A blueprint whose pages stay out of the API's OpenAPI document (they are HTML, not API)."""

    def add_url_rule(
        self,
        rule: str,
        endpoint: str | None = None,
        view_func: RouteCallable | None = None,
        provide_automatic_options: bool | None = None,
        **options: Any,
    ) -> None:
        if view_func is not None:
            hide(view_func)
        super().add_url_rule(rule, endpoint, view_func, provide_automatic_options, **options)


@dataclass
class ConsoleState:
    """The console's per-app state (`app.extensions["console"]`)."""

    accounts: AccountStore
    queries: ConsoleQueries
    signin_limiter: RateLimiter  # failed sign-ins per e-mail address
    signin_ip_limiter: RateLimiter  # failed sign-ins per client address, whatever the e-mail
    reset_limiter: RateLimiter
    signup_limiter: RateLimiter
    secret: bytes | None = None  # loaded from the database on first use

    @classmethod
    def create(cls, platform: Platform) -> ConsoleState:
        settings = platform.settings
        window = settings.rate_window
        return cls(
            accounts=platform.storage.accounts,
            queries=platform.storage.queries,
            signin_limiter=RateLimiter(settings.signin_limit, window),
            # Looser per client address: people behind one NAT or proxy share it, and one
            # person's typos must not lock out the office; spraying many accounts still stops.
            signin_ip_limiter=RateLimiter(SIGNIN_IP_FACTOR * settings.signin_limit, window),
            reset_limiter=RateLimiter(settings.reset_limit, window),
            signup_limiter=RateLimiter(settings.signup_limit, window),
        )

    async def server_secret(self) -> bytes:
        if self.secret is None:
            self.secret = await self.accounts.secret()
        return self.secret


CONSOLE_EXTENSION = "console"  # the ConsoleState's key in the Quart app's `extensions`


def console() -> ConsoleState:
    return cast(ConsoleState, current_app.extensions[CONSOLE_EXTENSION])


def tls() -> bool:
    """Served over TLS (directly, as a trusted proxy reports it, or by an https public_url)."""
    return request.scheme in ("https", "wss") or current_platform().settings.public_url.startswith("https://")


def session_cookie_name() -> str:
    """The session cookie's name for this request (`__Host-` prefixed over https)."""
    return cookie_name(SESSION_COOKIE, tls())


def csrf_cookie_name() -> str:
    """The signed-out visitor's CSRF cookie's name for this request (`__Host-` prefixed over https)."""
    return cookie_name(ANON_CSRF_COOKIE, tls())


def session_token() -> str:
    """The session token the visitor's browser sent ("" if none)."""
    return request.cookies.get(session_cookie_name(), "")


def server_url() -> str:
    """Where visitors reach this server: public_url when set (always set it in production: links in
    mails must not depend on the Host header a client sent), else what this request used."""
    public = current_platform().settings.public_url.rstrip("/")
    return public or f"{request.scheme}://{request.host}"


def own_url() -> str:
    """The base of links sent by mail: public_url, else the address this server's socket listens on.

    Never the Host header: a client could otherwise have a reset link point at its own site. (`serve`
    refuses to start with an SMTP server and no public_url, so this fallback is for development.)
    """
    public = current_platform().settings.public_url.rstrip("/")
    if public:
        return public
    host, port = request.scope.get("server") or ("127.0.0.1", current_platform().settings.port)
    host = f"[{host}]" if ":" in host else host
    return f"{'https' if request.scheme in ('https', 'wss') else 'http'}://{host}:{port}"


def client_address() -> str:
    """The visitor's address: behind a trusted proxy, the client it names (asgi.ProxyHeaders rewrote the scope)."""
    return str(request.remote_addr or "unknown")


# --------------------------------------------------------------------------- the visitor


async def load_visitor() -> Response | None:
    g.csp_nonce = secrets.token_urlsafe(16)
    g.user = None
    g.session_csrf = None
    g.set_anon_csrf = None
    token = session_token()
    if token:
        session = await console().accounts.session(token)
        if session is not None:
            g.user = session.user
            g.session_csrf = session.csrf_token
    g.anon_csrf = request.cookies.get(csrf_cookie_name(), "")
    if g.user is None and len(g.anon_csrf) < 32:
        g.anon_csrf = g.set_anon_csrf = new_csrf_token()
    if request.method in ("POST", "PUT", "PATCH", "DELETE"):
        try:
            form = await request.form
        except RequestEntityTooLarge:
            return await too_large()
        if not same_token(csrf_token(), form.get("csrf")):
            return await page(
                "console/error.html",
                403,
                title="Form refused",
                message="This form has expired or was sent from another site, so nothing was changed. "
                "Go back, reload the page and try again.",
            )
    return None


def csrf_token() -> str:
    """The token the current visitor's forms must carry."""
    token: str = g.session_csrf if g.get("user") is not None else g.get("anon_csrf", "")
    return token


async def too_large() -> Response:
    limit = current_app.config["MAX_CONTENT_LENGTH"]
    per_file = current_platform().settings.max_source_bytes
    return await page(
        "console/error.html",
        413,
        title="Upload too large",
        message=f"That upload is larger than this server accepts: at most {per_file / 2**20:.1f} MiB per file "
        f"and {limit / 2**20:.1f} MiB for the whole form. Nothing was saved.",
    )


def login_required(view: Callable[..., Awaitable[Any]]) -> Callable[..., Awaitable[Any]]:
    @wraps(view)
    async def wrapper(*args: Any, **kwargs: Any) -> Any:
        if g.get("user") is None:
            if request.method == "GET" and request.accept_mimetypes.accept_html:
                return redirect(url_for("console.accounts.signin", next=request.full_path.rstrip("?")))
            return await page("console/error.html", 401, title="Please sign in", message="Sign in to see this page.")
        return await view(*args, **kwargs)

    return wrapper


def safe_next(target: str | None, default: str) -> str:
    """Only a path on this site: `next` must never send a freshly signed-in user elsewhere."""
    if not target:
        return default
    parts = urlsplit(target)
    if parts.scheme or parts.netloc or not target.startswith("/") or target.startswith("//") or "\\" in target:
        return default
    return target


def set_session_cookie(response: ResponseTypes, token: str) -> None:
    days = current_platform().settings.session_days
    response.set_cookie(
        session_cookie_name(),
        token,
        max_age=int(timedelta(days=days).total_seconds()),
        httponly=True,
        samesite="Lax",
        secure=tls(),
        path="/",
    )


def clear_session_cookie(response: ResponseTypes) -> None:
    response.delete_cookie(session_cookie_name(), path="/", httponly=True, samesite="Lax", secure=tls())


# --------------------------------------------------------------------------- rendering and headers

STATIC_DIR = Path(__file__).parent / "static"


@cache
def _static_version(name: str) -> str:
    return hashlib.sha256((STATIC_DIR / name).read_bytes()).hexdigest()[:10]


def static_url(name: str) -> str:
    """A console asset's URL with a content hash, so a new release is never hidden by a cache."""
    return url_for("console.static", filename=name, v=_static_version(name))


async def page(template: str, status: int = 200, **context: Any) -> Response:
    body = await render_template(template, **context)
    return Response(body, status=status, mimetype="text/html")


def content_security_policy(nonce: str) -> str:
    # frame-src 'self': the execute page embeds the harness's sandboxed runner (/embed/runner).
    return (
        f"default-src 'none'; script-src 'self' 'nonce-{nonce}'; style-src 'self' 'nonce-{nonce}'; "
        "img-src 'self' data:; connect-src 'self'; frame-src 'self'; form-action 'self'; "
        "base-uri 'none'; frame-ancestors 'none'"
    )


async def secure_response(response: Response) -> Response:
    headers = response.headers
    if response.mimetype == "text/html":
        headers["Content-Security-Policy"] = content_security_policy(g.get("csp_nonce", "none"))
    headers["X-Frame-Options"] = "DENY"
    # Pages show account data: never stored by a shared cache or the back-forward cache of a
    # shared computer. Static files only need revalidating.
    static = (request.endpoint or "").endswith(".static")
    headers.setdefault("Cache-Control", "no-cache" if static else "no-store")
    if g.get("set_anon_csrf"):
        response.set_cookie(csrf_cookie_name(), g.set_anon_csrf, httponly=True, samesite="Lax", secure=tls(), path="/")
    return response


async def common_headers(response: Response) -> Response:
    """Every response of the app: no MIME sniffing, a referrer policy, HSTS over TLS."""
    headers = response.headers
    headers.setdefault("X-Content-Type-Options", "nosniff")
    headers.setdefault("Referrer-Policy", "same-origin")
    if tls():
        headers.setdefault("Strict-Transport-Security", "max-age=31536000; includeSubDomains")
    return response
