"""`SiteService`: the use cases of site owners, which the console's pages share.

- **Register** a site by its origin (``scheme://host[:port]``, nothing else): it gets a site key (public,
  it names the site in snippets) and a proof-of-control token.
- **Verify**: the server fetches ``ORIGIN/.well-known/distribute.txt`` (a line equal to the token) or,
  failing that, ORIGIN's home page (``<meta name="distribute-site-verification" content="TOKEN">``).
  Each fetch has a time limit (`site_check_timeout`), reads at most `site_check_max_bytes`, follows at
  most three redirects and only within the origin, and connects only to the address it checked: the
  host name is resolved once, every address must be public (unless `site_check_private`), and the
  request goes to that address with the host's name as Host and TLS server name (no DNS rebinding
  between the check and the connection).
- **Policy**: any campaign; an allowlist of campaigns (by number); or the campaigns of chosen owners
  (by e-mail address or display name, stored as account ids); and the highest throttle.
- **Dashboard** figures: `storage.sites.site_days`.
"""

from __future__ import annotations

import ipaddress
import re
import secrets
from dataclasses import dataclass
from html.parser import HTMLParser
from urllib.parse import urljoin, urlsplit

import httpx
import trio

from .errors import NotFound, ValidationError
from .models import Site, SitePolicy
from .settings import Settings
from .storage import Storage

__all__ = [
    "MAX_ALLOWLIST",
    "META_NAME",
    "THROTTLES",
    "WELL_KNOWN",
    "SiteService",
    "normalise_origin",
]

WELL_KNOWN = "/.well-known/distribute.txt"
META_NAME = "distribute-site-verification"
THROTTLES = ("low", "medium", "high")
MAX_ALLOWLIST = 100  # entries of one policy: the broker's ticket carries them (work/sites.py)
MAX_REDIRECTS = 3
MAX_SITES = 50  # per account

_HOST = re.compile(r"[a-z0-9]([a-z0-9-]*[a-z0-9])?(\.[a-z0-9]([a-z0-9-]*[a-z0-9])?)*")


def _ipv6(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).version == 6
    except ValueError:
        return False


def normalise_origin(text: str) -> str:
    """``scheme://host[:port]`` in lower case, default port left out; ValidationError for anything else."""
    value = text.strip().rstrip("/").lower()
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.netloc or parts.path or parts.query or parts.fragment:
        raise ValidationError(
            "a site's origin is http:// or https:// and a host name, with no path (https://example.org)"
        )
    try:
        port, host = parts.port, parts.hostname or ""
    except ValueError:
        raise ValidationError("the origin's port must be a number from 1 to 65535") from None
    if parts.username or parts.password or not (_HOST.fullmatch(host) or _ipv6(host)):
        raise ValidationError(
            f"{text.strip()[:100]!r} is not an origin: give scheme and host, like https://example.org"
        )
    host = f"[{host}]" if ":" in host else host
    default = {"http": 80, "https": 443}[parts.scheme]
    return f"{parts.scheme}://{host}" + (f":{port}" if port and port != default else "")


class _MetaFinder(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.contents: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = dict(attrs)
        if tag == "meta" and (values.get("name") or "").lower() == META_NAME:
            self.contents.append((values.get("content") or "").strip())


@dataclass(frozen=True)
class _Fetched:
    status: int
    body: bytes
    too_big: bool


class SiteService:
    """Site owners' use cases; see the module docstring."""

    def __init__(self, storage: Storage, settings: Settings) -> None:
        self.storage = storage
        self.settings = settings

    async def register(self, owner_id: int, origin_text: str) -> Site:
        origin = normalise_origin(origin_text)
        mine = await self.storage.sites.sites_of(owner_id)
        if any(site.origin == origin for site in mine):
            raise ValidationError(f"you have registered {origin} already")
        if len(mine) >= MAX_SITES:
            raise ValidationError(f"an account may register at most {MAX_SITES} sites")
        return await self.storage.sites.create_site(
            owner_id, origin, secrets.token_urlsafe(18), "distribute-site-" + secrets.token_urlsafe(24)
        )

    async def owned(self, owner_id: int, site_id: int) -> Site:
        """The owner's site; NotFound for anyone else's, so that nobody learns which sites exist."""
        site = await self.storage.sites.site(site_id)
        if site is None or site.owner_id != owner_id:
            raise NotFound(f"site {site_id} does not exist")
        return site

    # ------------------------------------------------------------------ proof of control

    async def verify(self, site: Site) -> str:
        """Look for the site's token on its origin; marks the site verified and returns "" when found,
        else why not (shown to the owner)."""
        reasons = []
        for path, found in ((WELL_KNOWN, _token_in_file), ("/", _token_in_meta)):
            try:
                fetched = await self._fetch(site.origin, path)
            except ValidationError as exc:
                reasons.append(f"{path}: {exc}")
                continue
            if fetched.too_big:
                reasons.append(f"{path}: more than {self.settings.site_check_max_bytes} bytes")
            elif fetched.status != 200:
                reasons.append(f"{path}: HTTP status {fetched.status}")
            elif found(fetched.body, site.token):
                await self.storage.sites.set_site_verified(site.id)
                return ""
            else:
                reasons.append(f"{path}: the token is not there")
        return "; ".join(reasons)

    async def _fetch(self, origin: str, path: str) -> _Fetched:
        """GET origin+path within the limits of the module docstring; ValidationError says what went wrong."""
        limit = self.settings.site_check_max_bytes
        with trio.move_on_after(self.settings.site_check_timeout):
            url = origin + path
            for _ in range(MAX_REDIRECTS + 1):
                parts = urlsplit(url)
                address = await self._address(
                    parts.hostname or "", parts.port or (443 if parts.scheme == "https" else 80)
                )
                netloc = f"[{address}]" if ":" in address else address
                target = parts._replace(
                    netloc=f"{netloc}:{parts.port or (443 if parts.scheme == 'https' else 80)}"
                ).geturl()
                timeout = httpx.Timeout(self.settings.site_check_timeout)
                async with httpx.AsyncClient(timeout=timeout, follow_redirects=False, trust_env=False) as client:
                    request = client.build_request(
                        "GET",
                        target,
                        headers={"Host": parts.netloc, "User-Agent": "distribute-site-check"},
                        extensions={"sni_hostname": parts.hostname or ""},
                    )
                    try:
                        response = await client.send(request, stream=True)
                    except httpx.HTTPError as exc:
                        raise ValidationError(f"could not fetch it ({type(exc).__name__})") from None
                    try:
                        if response.is_redirect:
                            location = urljoin(url, response.headers.get("location", ""))
                            if normalise_origin_or_empty(location) != origin:
                                raise ValidationError("it redirects to another origin")
                            url = location
                            continue
                        body = bytearray()
                        async for chunk in response.aiter_bytes():
                            body += chunk
                            if len(body) > limit:
                                return _Fetched(response.status_code, b"", True)
                        return _Fetched(response.status_code, bytes(body), False)
                    finally:
                        await response.aclose()
            raise ValidationError("too many redirects")
        raise ValidationError(f"no answer within {self.settings.site_check_timeout:g} s")

    async def _address(self, host: str, port: int) -> str:
        """The one address the fetch will connect to, after checking that it may."""
        try:
            infos = await trio.socket.getaddrinfo(host.strip("[]"), port, type=trio.socket.SOCK_STREAM)
        except OSError:
            raise ValidationError(f"the host name {host} does not resolve") from None
        addresses = [ipaddress.ip_address(str(info[4][0]).split("%")[0]) for info in infos]
        if not addresses:
            raise ValidationError(f"the host name {host} does not resolve")
        if not self.settings.site_check_private:
            for address in addresses:
                if not address.is_global or address.is_multicast:
                    raise ValidationError(f"{host} resolves to a private, loopback or reserved address ({address})")
        return str(min(addresses, key=lambda a: a.version))  # IPv4 first, as most servers listen there

    # ------------------------------------------------------------------ policy

    async def set_policy(self, site: Site, policy: str, allowlist: str, max_throttle: str) -> Site:
        """Parse the policy form: campaign numbers, or owners by e-mail or display name (comma or line separated)."""
        if policy not in (SitePolicy.ANY, SitePolicy.CAMPAIGNS, SitePolicy.OWNERS):
            raise ValidationError("the policy is one of: any, campaigns, owners")
        if max_throttle not in THROTTLES:
            raise ValidationError(f"the highest throttle is one of {', '.join(THROTTLES)}")
        terms = [t.strip() for t in re.split(r"[,\n]", allowlist) if t.strip()]
        if len(terms) > MAX_ALLOWLIST:
            raise ValidationError(f"a policy lists at most {MAX_ALLOWLIST} campaigns or owners")
        ids: list[int] = []
        if policy == SitePolicy.CAMPAIGNS:
            for term in terms:
                number = term.lstrip("#")
                campaign = await self.storage.get_campaign(int(number)) if number.isdigit() else None
                if campaign is None or campaign.deleted:
                    raise ValidationError(f"there is no campaign {term!r}")
                ids.append(campaign.id)
        elif policy == SitePolicy.OWNERS:
            for term in terms:
                ids.append(await self._owner_id(term))
        if policy != SitePolicy.ANY and not ids:
            raise ValidationError("list at least one campaign or owner, or choose any campaign")
        updated = await self.storage.sites.set_site_policy(site.id, policy, list(dict.fromkeys(ids)), max_throttle)
        if updated is None:
            raise NotFound(f"site {site.id} does not exist")
        return updated

    async def _owner_id(self, term: str) -> int:
        if "@" in term:
            user = await self.storage.user_by_email(term)
            if user is not None:
                return user.id
            raise ValidationError(f"no account has the e-mail address {term!r}")
        # Display names are public (the card shows them); only owners of campaigns have one worth naming.
        for owner_id in dict.fromkeys(c.owner_id for c in await self.storage.list_campaigns()):
            user = await self.storage.get_user(owner_id)
            if user is not None and user.display_name and user.display_name.casefold() == term.casefold():
                return user.id
        raise ValidationError(f"no campaign owner is called {term!r}")

    async def allowlist_text(self, site: Site) -> str:
        """The allowlist as the form shows it: campaign numbers, or owners by display name (else e-mail)."""
        if site.policy == SitePolicy.CAMPAIGNS:
            return ", ".join(str(i) for i in site.allowlist)
        names = []
        for owner_id in site.allowlist:
            user = await self.storage.get_user(owner_id)
            if user is not None:
                names.append(user.display_name or user.email)
        return ", ".join(names)


def normalise_origin_or_empty(url: str) -> str:
    parts = urlsplit(url)
    try:
        return normalise_origin(f"{parts.scheme}://{parts.netloc}")
    except ValidationError:
        return ""


def _token_in_file(body: bytes, token: str) -> bool:
    return any(line.strip() == token for line in body.decode("utf-8", "replace").splitlines())


def _token_in_meta(body: bytes, token: str) -> bool:
    finder = _MetaFinder()
    finder.feed(body.decode("utf-8", "replace"))
    return token in finder.contents
