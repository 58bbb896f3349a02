"""Campaigns: the use cases that the JSON API, the console and the embed pages share.

| module | owns |
|---|---|
| `service.py` | `CampaignService`: create, show, reset, delete/restore, export, account deletion, review by admins |
| `sources.py` | the uploads of a new campaign and their checks (encoding, syntax, spot checks) |
| `export.py` | results as a streamed json, msgpack or csv download |
| `quotas.py` | the per-account quotas checked before a campaign is created (`QuotaExceeded`) |
| `versions.py` | a new kernel version for a campaign and its checks (`KernelUpdate`) |
| `stream.py` | results in order of storage: cursor pages and the event stream the API serves |

The running `Platform` holds the one `CampaignService` (`platform.campaigns`); the web adapters
only translate requests into its calls and its answers into responses.
"""

from __future__ import annotations

from . import stream
from .export import RESULT_FORMATS, ResultFormat, ResultsExport
from .quotas import QuotaExceeded
from .service import CampaignService, require_admin
from .sources import CampaignFields, Uploads
from .versions import KernelUpdate

__all__ = [
    "RESULT_FORMATS",
    "CampaignFields",
    "CampaignService",
    "KernelUpdate",
    "QuotaExceeded",
    "ResultFormat",
    "ResultsExport",
    "Uploads",
    "require_admin",
    "stream",
]
