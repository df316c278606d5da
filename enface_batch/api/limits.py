"""What one request may cost before and while it is analysed.

:class:`BodyGate` (ASGI middleware) reads request bodies before the app does, and reads no more than it must:

- A request whose ``token`` header or ``token`` query parameter authenticates may send up to the body limit
  (ENFACE_API_MAX_REQUEST_BYTES plus room for form fields); past it, reading stops and the answer is 400.
- Any other request may send at most ``UNAUTHENTICATED_BYTES`` (64 KiB: logins, JSON queries carrying a token
  field) unless it is multipart and its ``token`` form field arrives within those bytes and authenticates:
  a token sent as a form field must come before the images (httpx, requests and curl -F send fields in the
  order given, plain fields first). Otherwise reading stops and the answer is 401.
- Bodies are never read past the point of refusal; a declared Content-Length over the limit is refused before
  any of the body is read. The refusal closes the connection (the unread rest cannot be skipped), so a client
  still sending may see the connection reset instead of the answer.

:func:`check_pixel_budget` bounds the decoded pixels of one request's images (ENFACE_API_MAX_REQUEST_PIXEL_BYTES)
from their headers alone, before any is decoded: a 10 MB request can hold PNGs that decode to gigabytes.
"""

from __future__ import annotations

import io
import re
from collections.abc import Callable

import anyio
from PIL import Image
from PIL.JpegImagePlugin import JpegImageFile

from .. import auth
from ..ops.errors import BadRequest, EnfaceError
from ..settings import get_settings

UNAUTHENTICATED_BYTES = 64 * 1024
_BOUNDARY = re.compile(rb'boundary="?([^";,\s]+)"?', re.I)
_TOKEN_PART = re.compile(rb'content-disposition:\s*form-data;\s*name="?token"?\s*(?:\r\n|$)', re.I)


def _json_error(status: int, message: str) -> tuple[dict, dict]:
    import json

    body = json.dumps({"status": "error", "message": message}).encode()
    start = {
        "type": "http.response.start",
        "status": status,
        "headers": [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
            (b"connection", b"close"),
            *([(b"www-authenticate", b"token")] if status == 401 else []),
        ],
    }
    return start, {"type": "http.response.body", "body": body}


def form_token(head: bytes, boundary: bytes) -> str | None:
    """The value of the ``token`` field among the complete parts at the start of a multipart body."""
    delimiter = b"--" + boundary
    parts = head.split(delimiter)
    for part in parts[1:-1]:  # the last piece may be incomplete
        headers, sep, value = part.partition(b"\r\n\r\n")
        if sep and _TOKEN_PART.search(headers.strip() + b"\r\n"):
            return value.removesuffix(b"\r\n").decode("utf-8", "replace").strip()
    return None


class BodyGate:
    """Body limits and authentication before the body (see the module's docstring)."""

    def __init__(self, app, limit: int, authenticate: Callable[[dict, str | None, str | None], None]) -> None:
        self.app, self.limit, self.authenticate = app, limit, authenticate

    def _too_big(self, size: int | None) -> str:
        what = f"{size:,} bytes" if size is not None else f"over {self.limit:,} bytes"
        return (
            f"request body is {what}; images up to {get_settings().api_max_request_bytes:,} bytes "
            "(ENFACE_API_MAX_REQUEST_BYTES) are accepted in one request"
        )

    async def _auth(self, scope, header: str | None, param: str | None) -> str | None:
        """None when the credential authenticates, else the reason (the 401 message)."""
        if not header and not param:
            return auth.MISSING
        try:
            await anyio.to_thread.run_sync(self.authenticate, scope, header, param)
        except EnfaceError as exc:
            return exc.message
        return None

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope["headers"])

        async def refuse(status: int, message: str) -> None:
            start, body = _json_error(status, message)
            await send(start)
            await send(body)

        try:
            declared = int(headers[b"content-length"]) if b"content-length" in headers else None
        except ValueError:
            declared = None
        if declared is not None and declared > self.limit:
            await refuse(400, self._too_big(declared))
            return
        if declared == 0 or scope["method"] in ("GET", "HEAD", "OPTIONS"):
            await self.app(scope, receive, send)
            return
        header_token = headers.get(b"token", b"").decode("latin-1") or None
        query = dict(_query(scope.get("query_string", b"")))
        problem = await self._auth(scope, header_token, query.get("token"))
        authed = problem is None
        ctype = headers.get(b"content-type", b"")
        m = _BOUNDARY.search(ctype) if ctype.lower().startswith(b"multipart/") else None
        boundary = m.group(1) if m else None
        if not authed and declared is not None and declared > UNAUTHENTICATED_BYTES and boundary is None:
            await refuse(401, f"{problem} (a request without a valid token may send at most 64 KiB)")
            return

        buffered, total, head = [], 0, b""
        while True:
            msg = await receive()
            buffered.append(msg)
            if msg["type"] != "http.request":
                break
            chunk = msg.get("body", b"")
            total += len(chunk)
            if total > self.limit:
                await refuse(400, self._too_big(None))
                return
            if not authed and boundary is not None and len(head) < UNAUTHENTICATED_BYTES:
                head += chunk[: UNAUTHENTICATED_BYTES - len(head)]
                token = form_token(head, boundary)
                if token is not None:
                    problem = await self._auth(scope, None, token)
                    if problem is not None:
                        await refuse(401, problem)
                        return
                    authed = True
            if not authed and total > UNAUTHENTICATED_BYTES:
                hint = " first, before the images" if boundary is not None else ""
                await refuse(
                    401,
                    f"{problem} (a request may send at most 64 KiB before it authenticates: send the token in "
                    f"the 'token' header or query parameter, or as the 'token' form field{hint})",
                )
                return
            if not msg.get("more_body"):
                break

        async def replay():
            return buffered.pop(0) if buffered else await receive()

        await self.app(scope, replay, send)


def _query(qs: bytes) -> list[tuple[str, str]]:
    from urllib.parse import parse_qsl

    return parse_qsl(qs.decode("latin-1"), keep_blank_values=True)


# -- decoded pixels per request --------------------------------------------------------------------------------
def _decoded_size(data: bytes, max_side: int) -> tuple[int, int, int] | None:
    """(width, height, bytes per pixel) the decoder will produce, from the header only; None if unreadable.

    Mirrors imaging.decode: a large JPEG is decoded reduced by libjpeg (draft(), which only changes the
    header's size), other formats at full size. Decoding converts to 8-bit RGB, so at least 3 bytes a pixel.
    """
    try:
        with Image.open(io.BytesIO(data)) as im:
            w, h = im.size
            if isinstance(im, JpegImageFile) and max(w, h) > max_side:
                longest = max(w, h)
                im.draft("RGB", (-(-w * max_side // longest), -(-h * max_side // longest)))
                w, h = im.size
            bands = len(im.getbands())
            bits = 16 if im.mode.startswith("I;16") else 32 if im.mode in ("I", "F") else 8
            return w, h, max(3, bands * bits // 8)
    except Exception:  # noqa: BLE001 - undecodable uploads are reported by the decoder, per image
        return None


def check_pixel_budget(files: list[tuple[str, bytes]]) -> None:
    """400 naming the first image at which the request's decoded pixels would exceed the budget."""
    s = get_settings()
    budget, total = s.api_max_request_pixel_bytes, 0
    for name, data in files:
        size = _decoded_size(data, s.decode_max_side)
        if size is None:
            continue
        w, h, bpp = size
        total += w * h * bpp
        if total > budget:
            raise BadRequest(
                f"the images of this request decode to over {budget:,} bytes of pixels (at {name!r}, "
                f"{w}x{h}); send fewer or smaller images in one request (ENFACE_API_MAX_REQUEST_PIXEL_BYTES)"
            )
