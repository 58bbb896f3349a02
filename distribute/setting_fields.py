"""How one setting is declared: `setting(...)` makes a field of `settings.Settings` carrying its default,
unit, help and the `Check` of the values it allows; the common checks are here too. The table itself
is `settings.Settings`.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

__all__ = [
    "ANY_VALUE",
    "DATABASE_URL",
    "NON_NEGATIVE",
    "POSITIVE",
    "Check",
    "between",
    "is_proxy_list",
    "one_of",
    "setting",
]

T = TypeVar("T")


@dataclass(frozen=True)
class Check:
    """What values a setting allows: the test, and how the error message describes it."""

    allowed: str
    test: Callable[[Any], bool]

    def __call__(self, value: Any) -> bool:
        return self.test(value)


def between(low: float, high: float) -> Check:
    return Check(f"from {low} to {high}", lambda v: low <= v <= high)


def one_of(*choices: Any) -> Check:
    return Check("one of " + ", ".join(map(str, choices)), lambda v: v in choices)


ANY_VALUE = Check("any value", lambda v: True)
POSITIVE = Check("greater than 0", lambda v: v > 0)
NON_NEGATIVE = Check("0 or more", lambda v: v >= 0)
# Any scheme: storage plugins register their own (docs/plugins.md); an unknown one fails at startup
# with the list of known schemes (plugins.storage_factory).
DATABASE_URL = Check(
    "a URL such as sqlite:///PATH or postgres://USER:PASS@HOST:PORT/DB",
    lambda v: re.match(r"[A-Za-z][A-Za-z0-9+.-]*://", v) is not None,
)


def is_proxy_list(value: str) -> bool:
    """forwarded_allow_ips: each item \"*\" or an IP address or network."""
    for item in (i.strip() for i in value.split(",")):
        if item and item != "*":
            try:
                ipaddress.ip_network(item, strict=False)
            except ValueError:
                return False
    return True


def setting(default: T, unit: str, help: str, check: Check = ANY_VALUE) -> T:
    """Declare one field of `Settings`: its default, the unit and help shown in the table, what it allows.

    Typed as the default's type so that type checkers see `port: int = setting(8000, ...)` as an int
    field with a default; at run time it is a dataclass field carrying the rest as metadata.
    """
    return field(default=default, metadata={"unit": unit, "help": help, "check": check})
