"""JSON as the console shows it: pretty-printed, and clipped only between tokens.

`pretty` lays a value out the way a person reads it: a container that fits in `width` characters stays
on one line, and so does an array of scalars (the page wraps it between items, a row of numbers reads
better than a column); a longer one puts each item on a line of its own, indented. `clipped` shortens such a text
to a budget without ever cutting a string, number or literal in two; what it leaves out is counted, so
the page can say "… (N more characters)" and link to the whole value.
"""

from __future__ import annotations

import json
import re
from typing import Any, NamedTuple

__all__ = ["Clipped", "clipped", "pretty"]

WIDTH = 60  # characters a container may take on one line before it is spread over several

# One JSON token, or a run of whitespace between tokens (the text is valid JSON, so this covers all of it).
_TOKEN = re.compile(r'"(?:[^"\\]|\\.)*"|[^\s"{}\[\]:,]+|\s+|.', re.DOTALL)


def _inline(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, default=repr, separators=(", ", ": "))


def pretty(value: Any, width: int = WIDTH, indent: int = 0) -> str:
    """`value` as indented JSON, with short containers and arrays of scalars kept on one line."""
    flat = _inline(value)
    if len(flat) + indent <= width or not isinstance(value, dict | list) or not value:
        return flat
    if isinstance(value, list) and not any(isinstance(v, dict | list) for v in value):
        return flat
    inner = " " * (indent + 2)
    if isinstance(value, dict):
        items = [f"{inner}{_inline(str(k))}: {pretty(v, width, indent + 2).lstrip()}" for k, v in value.items()]
        return "{\n" + ",\n".join(items) + "\n" + " " * indent + "}"
    items = [inner + pretty(v, width, indent + 2) for v in value]
    return "[\n" + ",\n".join(items) + "\n" + " " * indent + "]"


class Clipped(NamedTuple):
    text: str
    more: int  # characters left out (0: the whole text)


def clipped(text: str, budget: int) -> Clipped:
    """The longest prefix of `text` of at most `budget` characters that ends between two tokens."""
    if len(text) <= budget:
        return Clipped(text, 0)
    end = 0
    for token in _TOKEN.finditer(text):
        if token.end() > budget:
            break
        end = token.end()
    kept = text[:end].rstrip()
    return Clipped(kept, len(text) - len(kept))
