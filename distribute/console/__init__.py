"""The campaign web console: accounts, campaign pages with a live view, and the static pages.

`console_blueprint` is the one blueprint app.py registers; it nests one blueprint per area:

| module | owns |
|---|---|
| `web.py` | shared state, the signed-in user, CSRF, security headers, rendering |
| `pages.py` | home, how it works, benchmarks (BENCHMARKS.md rendered) |
| `accounts.py` | sign up/in/out, password change and reset, API tokens, account deletion |
| `campaigns.py` | campaign list, new, detail, delete/restore, reset, embed snippets |
| `results.py` | results table, one result, downloads, the execute page's data |
| `live.py` | the live view's server-sent events |
| `volunteers.py` | a volunteer's credit across browsers (claim codes), leaderboards per campaign and per site |
| `sites.py` | site owners' pages: their sites, proof of control, the policy form, the dashboard |
| `admin.py` | the admin pages (review, users, flagged workers, quotas) and the first operator's offer |

Like the JSON API, the pages are a thin adapter: what happens to campaigns is `CampaignService`'s
(`platform.campaigns`). Templates are in `templates/console/`, styles and scripts in `static/`
(served locally, no CDN, no build step).
"""

from __future__ import annotations

from typing import Any

from quart import Blueprint, g
from werkzeug.exceptions import RequestEntityTooLarge

from ..errors import NotFound, ValidationError
from ..webstate import EXTENSION
from . import accounts, admin, campaigns, live, pages, results, sites, volunteers
from .web import (
    CONSOLE_EXTENSION,
    ConsoleState,
    common_headers,
    csrf_token,
    load_visitor,
    page,
    secure_response,
    static_url,
    too_large,
)

__all__ = ["console_blueprint"]

console_blueprint = Blueprint(
    "console",
    __name__,
    template_folder="templates",
    static_folder="static",
    static_url_path="/console/static",
)

for _child in (
    pages.blueprint,
    accounts.blueprint,
    campaigns.blueprint,
    results.blueprint,
    live.blueprint,
    volunteers.blueprint,
    sites.blueprint,
    admin.blueprint,
):
    console_blueprint.register_blueprint(_child)


@console_blueprint.record_once
def _create_state(state: Any) -> None:
    state.app.extensions[CONSOLE_EXTENSION] = ConsoleState.create(state.app.extensions[EXTENSION])


console_blueprint.before_request(load_visitor)
console_blueprint.before_request(admin.load_operator_offer)
console_blueprint.after_request(secure_response)
console_blueprint.after_app_request(common_headers)


@console_blueprint.context_processor
def _template_context() -> dict[str, Any]:
    return {
        "user": g.get("user"),
        "csrf_token": csrf_token(),
        "csp_nonce": g.get("csp_nonce", ""),
        "static_url": static_url,
        "operator_offer": g.get("operator_offer", False),
    }


@console_blueprint.errorhandler(NotFound)
async def _not_found(exc: NotFound) -> Any:
    return await page("console/error.html", 404, title="Not found", message=str(exc).capitalize() + ".")


@console_blueprint.errorhandler(404)
async def _no_such_page(exc: Exception) -> Any:
    return await page("console/error.html", 404, title="Not found", message="There is nothing at this address.")


@console_blueprint.errorhandler(ValidationError)
async def _invalid(exc: ValidationError) -> Any:
    return await page("console/error.html", 400, title="Not accepted", message=str(exc))


@console_blueprint.errorhandler(RequestEntityTooLarge)
async def _too_large(exc: RequestEntityTooLarge) -> Any:
    return await too_large()
