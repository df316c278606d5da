"""The seed's parameter rules: enums, lengths, uuids, counts. Each check raises BadRequest naming the parameter."""

from __future__ import annotations

import uuid
from collections.abc import Iterable

from .errors import BadRequest

THRESHOLDS = ("80", "85", "90", "95", "no_match", "never")
SQUARES = (50, 112, 224)
ANGLES = (5, 10, 20, 30, 40, 50, 60, 70, 80)
FEATURES = ("gender", "age", "race")
MAX_FIELDS = 2_000_000
MAX_FIELD_BYTES = 64 * 1024


def name(value: object, param: str = "name") -> str:
    if not isinstance(value, str) or not 1 <= len(value) <= 100:
        raise BadRequest(f"{param} must be a string of 1 to 100 characters")
    return value


def uuid_str(value: object, param: str) -> str:
    try:
        return str(uuid.UUID(str(value)))
    except (ValueError, TypeError, AttributeError):
        raise BadRequest(f"{param} must be a uuid, got {value!r}") from None


def uuid_list(values: Iterable[object] | str | None, param: str) -> list[str]:
    if values is None:
        return []
    if isinstance(values, str):
        values = [values]
    return list(dict.fromkeys(uuid_str(v, param) for v in values))


def threshold(value: object, param: str = "new_person_threshold") -> str:
    v = str(value)
    if v not in THRESHOLDS:
        raise BadRequest(f"{param} must be one of {', '.join(THRESHOLDS)}; got {value!r}")
    return v


def _int_enum(value: object, allowed: tuple[int, ...], param: str) -> int:
    try:
        v = int(str(value))
    except ValueError:
        v = None
    if v not in allowed:
        raise BadRequest(f"{param} must be one of {', '.join(map(str, allowed))}; got {value!r}")
    return v


def square(value: object, param: str = "new_person_square_min") -> int:
    return _int_enum(value, SQUARES, param)


def angle(value: object, param: str = "new_person_yaw_max") -> int:
    return _int_enum(value, ANGLES, param)


def results(value: object) -> int:
    try:
        v = int(str(value))
    except ValueError:
        v = 0
    if not 1 <= v <= 100:
        raise BadRequest(f"results must be an integer from 1 to 100; got {value!r}")
    return v


def features(values: Iterable[str] | str | None) -> list[str]:
    if values is None:
        return []
    if isinstance(values, str):
        values = [values]
    out = list(dict.fromkeys(str(v) for v in values))
    bad = [v for v in out if v not in FEATURES]
    if bad:
        raise BadRequest(f"feature_check items must be among {', '.join(FEATURES)}; got {bad}")
    return out


def fields(values: Iterable[str] | None) -> list[str]:
    if values is None:
        return []
    out = list(values)
    if len(out) > MAX_FIELDS:
        raise BadRequest(f"fields holds at most {MAX_FIELDS:,} strings; got {len(out):,}")
    for i, v in enumerate(out):
        if not isinstance(v, str):
            raise BadRequest(f"fields[{i}] must be a string")
        if len(v.encode()) > MAX_FIELD_BYTES:
            raise BadRequest(f"fields[{i}] is {len(v.encode()):,} bytes; each field holds at most 64 KB")
    return out
