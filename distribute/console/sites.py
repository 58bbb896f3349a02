"""Site owners' pages: their sites, adding one, proving control, the policy form and the dashboard.

A thin adapter over `SiteService` (`platform.sites`): every route takes the site through
`sites.owned`, so another user's site is a 404 exactly like a missing one. The dashboard's chart is
drawn here as SVG (bars per day, stacked by campaign), with the same figures in a table below it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from quart import Response, g, redirect, request, url_for

from ..embed import SNIPPET, embed_snippet
from ..errors import ValidationError
from ..models import Site, SiteDay
from ..sites import META_NAME, THROTTLES, WELL_KNOWN
from ..webstate import current_platform
from .web import ConsoleBlueprint, login_required, page, server_url

__all__ = ["blueprint", "site_chart"]

blueprint = ConsoleBlueprint("sites", __name__)

NOTICES = {
    "added": "The site is registered. Prove that it is yours to use its key.",
    "verified": "The site is verified: its key now applies on its pages.",
    "policy": "The policy is saved. Pages loaded from now on follow it.",
}
CHART_WIDTH, CHART_HEIGHT, MAX_DAYS = 600, 160, 60


@dataclass(frozen=True)
class Bar:
    """One campaign's part of one day's bar in a chart (SVG coordinates)."""

    x: float
    y: float
    width: float
    height: float
    campaign: int
    shade: int
    title: str


def site_chart(days: list[SiteDay], measure: str) -> tuple[list[Bar], float]:
    """The bars of one measure ("tasks", "verified" or "compute_seconds") per day, stacked by campaign,
    and the largest day's total (the chart's top)."""
    dates = sorted({d.day for d in days})[-MAX_DAYS:]
    campaigns = sorted({d.campaign_id for d in days})
    totals = {day: sum(float(getattr(d, measure)) for d in days if d.day == day) for day in dates}
    top = max(totals.values(), default=0.0)
    if not dates or top <= 0:
        return [], 0.0
    slot = CHART_WIDTH / len(dates)
    bars, stacked = [], dict.fromkeys(dates, 0.0)
    for d in sorted(days, key=lambda d: (d.day, d.campaign_id)):
        if d.day not in stacked or not (value := float(getattr(d, measure))):
            continue
        height = value / top * CHART_HEIGHT
        stacked[d.day] += height
        label = f"{d.day}, campaign {d.campaign_id}: {_figure(measure, value)}"
        x = dates.index(d.day) * slot + slot * 0.1
        bars.append(
            Bar(
                x,
                CHART_HEIGHT - stacked[d.day],
                slot * 0.8,
                height,
                d.campaign_id,
                campaigns.index(d.campaign_id) % 6,
                label,
            )
        )
    return bars, top


def _figure(measure: str, value: float) -> str:
    return f"{value / 3600:.2f} compute hours" if measure == "compute_seconds" else f"{int(value)} {measure}"


def site_snippets(server: str, site: Site) -> list[tuple[str, str, str]]:
    """(id, title, text) of the site's ready-to-paste snippets: any campaign, with the site's key."""
    paste = {
        cms: SNIPPET["paste"][cms].replace("{campaign}", "any").replace("{server}", server.rstrip("/"))
        for cms in ("wordpress", "hugo")
    }
    return [
        ("html", "HTML", embed_snippet(server, "any", site=site.key)),
        ("wordpress", "WordPress shortcode", paste["wordpress"].replace("]", f' site="{site.key}"]', 1)),
        ("hugo", "Hugo shortcode", paste["hugo"].replace(" >}}", f' site="{site.key}" >}}}}', 1)),
    ]


@blueprint.get("/sites")
@login_required
async def index() -> Response:
    sites = await current_platform().storage.sites.sites_of(g.user.id)
    return await page("console/sites.html", sites=sites, error="", origin="")


@blueprint.post("/sites")
@login_required
async def add() -> Any:
    form = await request.form
    origin = str(form.get("origin", ""))[:300]
    try:
        site = await current_platform().sites.register(g.user.id, origin)
    except ValidationError as exc:
        sites = await current_platform().storage.sites.sites_of(g.user.id)
        return await page("console/sites.html", 400, sites=sites, error=str(exc), origin=origin)
    return redirect(url_for("console.sites.show", site_id=site.id, notice="added"))


async def _show(site: Site, status: int = 200, *, error: str = "", problem: str = "") -> Response:
    platform = current_platform()
    days = await platform.storage.sites.site_days(site.id)
    names = {}
    for campaign_id in {d.campaign_id for d in days}:
        campaign = await platform.campaigns.get(campaign_id)
        names[campaign_id] = campaign.name if campaign is not None else f"Campaign {campaign_id}"
    charts = [(measure, title, *site_chart(days, measure)) for measure, title in CHARTS]
    totals = {
        "tasks": sum(d.tasks for d in days),
        "verified": sum(d.verified for d in days),
        "hours": sum(d.compute_seconds for d in days) / 3600,
    }
    return await page(
        "console/site.html",
        status,
        site=site,
        days=days,
        names=names,
        charts=charts,
        totals=totals,
        chart_size=(CHART_WIDTH, CHART_HEIGHT),
        allowlist=await platform.sites.allowlist_text(site),
        throttles=THROTTLES,
        snippets=site_snippets(server_url(), site),
        well_known=WELL_KNOWN,
        meta_name=META_NAME,
        notice=NOTICES.get(request.args.get("notice", ""), ""),
        error=error,
        problem=problem,
    )


CHARTS = (("tasks", "Tasks"), ("verified", "Verified results"), ("compute_seconds", "Compute hours"))


@blueprint.get("/sites/<int:site_id>")
@login_required
async def show(site_id: int) -> Response:
    return await _show(await current_platform().sites.owned(g.user.id, site_id))


@blueprint.post("/sites/<int:site_id>/verify")
@login_required
async def verify(site_id: int) -> Any:
    service = current_platform().sites
    site = await service.owned(g.user.id, site_id)
    problem = await service.verify(site)
    if problem:
        return await _show(site, 400, problem=problem)
    return redirect(url_for("console.sites.show", site_id=site.id, notice="verified"))


@blueprint.post("/sites/<int:site_id>/policy")
@login_required
async def policy(site_id: int) -> Any:
    service = current_platform().sites
    site = await service.owned(g.user.id, site_id)
    form = await request.form
    try:
        await service.set_policy(
            site, str(form.get("policy", "")), str(form.get("allowlist", ""))[:10000], str(form.get("max_throttle", ""))
        )
    except ValidationError as exc:
        return await _show(site, 400, error=str(exc))
    return redirect(url_for("console.sites.show", site_id=site.id, notice="policy"))


@blueprint.post("/sites/<int:site_id>/delete")
@login_required
async def delete(site_id: int) -> Any:
    site = await current_platform().sites.owned(g.user.id, site_id)
    await current_platform().storage.sites.delete_site(site.id)
    return redirect(url_for("console.sites.index"))
