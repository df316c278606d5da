"""GET /browse/images/{sha256}: a scanned photo's pixels, and nothing else.

The lake records where each image was read from, but the file there may have changed since, or may never
have been a photo: a scanned folder can hold ``holiday.jpg -> /proc/self/environ`` or an HTML page named
``page.jpg``. So a file is served only when all of these hold:

- it is a regular file (no FIFO, device or folder), opened without blocking;
- for a scanned file, its real path (symlinks resolved, checked again on the opened descriptor) lies inside
  its source's folder; a file enrolled by name from the CLI has no source folder and is taken as named;
- its bytes, read up to ENFACE_MAX_FILE_BYTES, hash to the requested sha256 (else 410: it changed);
- Pillow recognises them as an image. JPEG, PNG, GIF and WebP are served as they are, with the MIME type of
  the format Pillow found (never one guessed from the name); anything else is decoded and re-encoded to JPEG.

Responses carry nosniff, a fixed ``Content-Disposition: inline`` name made of the hash, and (from
security.py) a sandboxing CSP.
"""

from __future__ import annotations

import hashlib
import io
import os
import stat
from dataclasses import dataclass

from fastapi.responses import Response
from PIL import Image, UnidentifiedImageError

from .. import imaging
from ..lake.protocols import ReadLake
from ..lake.store import fsspec_options
from ..ops import browse
from ..ops.errors import EnfaceError, NotFound
from ..settings import get_settings

# Formats browsers display, served byte for byte; the MIME type follows the format Pillow identified.
SERVED_AS_IS = {"JPEG": ("image/jpeg", "jpg"), "PNG": ("image/png", "png"), "GIF": ("image/gif", "gif")}
SERVED_AS_IS["WEBP"] = ("image/webp", "webp")


class Gone(EnfaceError):
    status_code = 410


class Refused(Exception):
    """One recorded location cannot be served; ``status`` is 404 or 410."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status, self.message = status, message


@dataclass(frozen=True)
class Location:
    uri: str
    root: str | None  # the source folder it was scanned under; None for files enrolled by name
    source_id: str | None


def _local(uri: str) -> str | None:
    """The local path of a URI, or None for object stores and other remote URIs."""
    if uri.startswith("file://"):
        return uri[len("file://") :]
    return None if ("://" in uri or "::" in uri) else uri


def _inside(path: str, root: str) -> bool:
    return path == root or path.startswith(root.rstrip(os.sep) + os.sep)


def read_local(path: str, root: str | None, limit: int) -> bytes:
    """The bytes of a regular file, refusing symlinks that resolve outside ``root`` and anything not a file."""
    real = os.path.realpath(path)
    real_root = os.path.realpath(root) if root else None
    if real_root and not _inside(real, real_root):
        raise Refused(404, "its recorded path resolves outside its source's folder (a symlink); not served")
    try:
        # O_NONBLOCK: opening a FIFO must not hang the request; O_NOFOLLOW: the final component was resolved.
        fd = os.open(real, os.O_RDONLY | os.O_NONBLOCK | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0))
    except FileNotFoundError:
        raise Refused(404, "no file at its recorded path any more") from None
    except OSError as exc:
        raise Refused(404, f"its recorded path cannot be opened ({exc.strerror})") from None
    with os.fdopen(fd, "rb", buffering=0) as f:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise Refused(404, "its recorded path is not a regular file; not served")
        opened = f"/proc/self/fd/{fd}"
        if real_root and os.path.islink(opened):
            # A folder on the way may have been swapped for a symlink since realpath(): check what was opened.
            if not _inside(os.readlink(opened), real_root):
                raise Refused(404, "its recorded path resolves outside its source's folder; not served")
        if st.st_size > limit:
            raise Refused(404, f"the file is {st.st_size:,} bytes, over ENFACE_MAX_FILE_BYTES; not served")
        data = f.read(limit + 1)
    if len(data) > limit:
        raise Refused(404, "the file grew over ENFACE_MAX_FILE_BYTES; not served")
    return data


def read_remote(uri: str, limit: int) -> bytes:
    import fsspec

    try:
        fs, path = fsspec.core.url_to_fs(uri, **fsspec_options(uri))
        size = fs.size(path)
        if size is not None and size > limit:
            raise Refused(404, f"the object is {size:,} bytes, over ENFACE_MAX_FILE_BYTES; not served")
        with fs.open(path, "rb") as f:
            data = f.read(limit + 1)
    except Refused:
        raise
    except Exception as exc:  # fsspec back ends raise anything from OSError to botocore errors
        raise Refused(404, f"it cannot be read at its recorded location ({type(exc).__name__})") from None
    if len(data) > limit:
        raise Refused(404, "the object is over ENFACE_MAX_FILE_BYTES; not served")
    return data


def _image_payload(data: bytes, sha256: str) -> tuple[bytes, str, str]:
    """(bytes, MIME type, extension) to send for verified bytes; Refused when they are not an image."""
    try:
        with Image.open(io.BytesIO(data)) as im:
            fmt = im.format
    except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError):
        raise Refused(404, "it is not an image; not served") from None
    if fmt in SERVED_AS_IS:
        kind, ext = SERVED_AS_IS[fmt]
        return data, kind, ext
    try:
        img = imaging.decode(data, sha256, max_side=get_settings().decode_max_side)
    except imaging.ImageError as exc:
        raise Refused(404, f"it cannot be decoded ({exc.reason}); not served") from None
    return imaging.jpeg_bytes(img.rgb), "image/jpeg", "jpg"


def serve_location(loc: Location, sha256: str) -> Response:
    limit = get_settings().max_file_bytes
    path = _local(loc.uri)
    data = read_local(path, loc.root and _local(loc.root), limit) if path is not None else read_remote(loc.uri, limit)
    if hashlib.sha256(data).hexdigest() != sha256:
        raise Refused(410, "the file at its recorded location has changed since it was scanned (sha256 differs)")
    payload, kind, ext = _image_payload(data, sha256)
    return Response(
        payload,
        media_type=kind,
        headers={
            "Cache-Control": "private, max-age=3600",
            "Content-Disposition": f'inline; filename="{sha256[:16]}.{ext}"',
            "X-Content-Type-Options": "nosniff",
        },
    )


def image_response(lake: ReadLake, sha256: str) -> Response:
    """The first recorded location of the image that passes every check; 404 or 410 with the reasons."""
    locations = [Location(**x) for x in browse.image_locations(lake, sha256)]
    if not locations:
        raise NotFound(f"no image with sha256 {sha256} in the lake")
    reasons: list[tuple[int, str]] = []
    for loc in locations:
        try:
            return serve_location(loc, sha256)
        except Refused as exc:
            where = browse.display_path(loc.uri, loc.root)
            reasons.append((exc.status, f"{where}: {exc.message}"))
    message = f"image {sha256} is not served: " + "; ".join(m for _, m in reasons[:5])
    if all(status == 410 for status, _ in reasons):
        raise Gone(message)
    raise NotFound(message)
