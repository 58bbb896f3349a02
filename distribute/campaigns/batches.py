"""Batches of datasets an owner sends to an open campaign: decoded, checked and packed for storage.

A batch is JSON `{"datasets": [...]}` or msgpack of a plain array; its body is capped before it is
read (`max_upload_batch_bytes`, by the API). Each dataset must be what a generator may produce:
plain data (`plain.not_plain`: nil, booleans, numbers, strings, arrays, maps with string keys, no
deeper than `plain.MAX_DEPTH`), at most `max_dataset_bytes` of msgpack, and a batch holds at most
`max_upload_batch` of them. Every problem is a `ValidationError` naming the dataset at fault; a
batch with one bad dataset stores nothing. Pure: no I/O.
"""

from __future__ import annotations

import json
from typing import Any

import msgpack

from ..errors import ValidationError
from ..plain import not_plain

__all__ = ["JSON_TYPES", "MSGPACK_TYPES", "BatchTooLarge", "UnsupportedBatch", "packed_batch"]

JSON_TYPES = frozenset({"application/json"})
MSGPACK_TYPES = frozenset({"application/msgpack", "application/x-msgpack", "application/vnd.msgpack"})


class BatchTooLarge(ValidationError):
    """The batch's body is over `max_upload_batch_bytes` (413), refused before it is read whole."""


class UnsupportedBatch(ValidationError):
    """The batch is neither JSON nor msgpack (415)."""


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON (NaN and infinities have no place in a dataset)")


def _fit_ints(value: Any) -> Any:
    """Integers beyond 64 bits become floats, as a generator's JavaScript numbers are."""
    if isinstance(value, int) and not isinstance(value, bool) and not -(1 << 63) <= value < (1 << 64):
        return float(value)
    if isinstance(value, list):
        return [_fit_ints(v) for v in value]
    if isinstance(value, dict):
        return {k: _fit_ints(v) for k, v in value.items()}
    return value


def _decode(body: bytes, content_type: str) -> list[Any]:
    kind = content_type.split(";", 1)[0].strip().lower()
    if kind in JSON_TYPES:
        try:
            document = json.loads(body, parse_constant=_refuse_constant)
        except RecursionError:
            raise ValidationError("the JSON body is nested too deeply") from None
        except ValueError as exc:  # JSONDecodeError, bad UTF-8, a NaN
            raise ValidationError(f"the body is not valid JSON: {exc}") from None
        if (
            not isinstance(document, dict)
            or set(document) != {"datasets"}
            or not isinstance(document["datasets"], list)
        ):
            raise ValidationError('a JSON batch must be {"datasets": [dataset, ...]}')
        return document["datasets"]
    if kind in MSGPACK_TYPES:
        try:
            items = msgpack.unpackb(body, raw=False, strict_map_key=True)
        except Exception as exc:  # msgpack raises several unrelated types for garbage
            raise ValidationError(f"the body is not valid msgpack: {type(exc).__name__}: {exc}") from None
        if type(items) is not list:
            raise ValidationError("a msgpack batch must be an array of datasets")
        return items
    raise UnsupportedBatch(
        f'send the datasets as application/json ({{"datasets": [...]}}) or application/msgpack (an array),'
        f" not {kind or 'no Content-Type'}"
    )


def packed_batch(body: bytes, content_type: str, *, max_datasets: int, max_dataset_bytes: int) -> list[bytes]:
    """The batch's datasets as msgpack, in the order sent; `ValidationError` for the first problem."""
    items = _decode(body, content_type)
    if not items:
        raise ValidationError("the batch holds no dataset")
    if len(items) > max_datasets:
        raise ValidationError(
            f"the batch holds {len(items)} datasets; at most {max_datasets} may come in one (setting max_upload_batch)"
        )
    packed: list[bytes] = []
    for index, item in enumerate(items):
        if problem := not_plain(item):
            where = problem.replace(" at result", " at dataset", 1)
            raise ValidationError(f"dataset {index} of the batch is not plain data: {where}")
        payload = msgpack.packb(_fit_ints(item))
        if len(payload) > max_dataset_bytes:
            raise ValidationError(
                f"dataset {index} of the batch is {len(payload)} bytes of msgpack;"
                f" the limit is {max_dataset_bytes} (setting max_dataset_bytes)"
            )
        packed.append(payload)
    return packed
