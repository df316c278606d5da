"""The endpoint's JSON: numpy scalars become numbers, bytes null, NaN and infinities null; errors in the seed's
shape ({"status": "error", "message": ...})."""

from __future__ import annotations

import json
import math

import numpy as np
from fastapi.responses import JSONResponse


def _plain(obj):
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, bytes):
        return None
    return str(obj)


def _finite(obj):
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_finite(v) for v in obj]
    return obj


class EnfaceJSON(JSONResponse):
    """JSON without FastAPI's re-encoding pass; numpy scalars become numbers, NaN/inf become null."""

    def render(self, content) -> bytes:
        try:
            text = json.dumps(content, ensure_ascii=False, allow_nan=False, default=_plain)
        except ValueError:
            text = json.dumps(_finite(content), ensure_ascii=False, allow_nan=False, default=_plain)
        return text.encode()


def error(status: int, message: str, headers: dict | None = None) -> EnfaceJSON:
    return EnfaceJSON({"status": "error", "message": message}, status_code=status, headers=headers)
