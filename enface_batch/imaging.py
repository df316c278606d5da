"""Reading and decoding photos: local paths or fsspec URIs in, upright 8-bit RGB arrays out.

Every failure leaves this module as an :class:`ImageError` with a short reason code, so a batch run can
record the bad file and carry on instead of dying on a raw Pillow exception.
"""

from __future__ import annotations

import base64
import hashlib
import io
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import pillow_heif
from PIL import ExifTags, Image, ImageFile, ImageOps, UnidentifiedImageError
from PIL.JpegImagePlugin import JpegImageFile

from enface_batch import fsio
from enface_batch.settings import get_settings

pillow_heif.register_heif_opener()
# Pillow's own bomb check is process-global and fixed (warn above ~89 Mpx, fail above ~179 Mpx); it would
# override ENFACE_MAX_IMAGE_PIXELS in both directions, so decode() enforces the configured limit itself.
Image.MAX_IMAGE_PIXELS = None
# A half-written file must be reported, not silently decoded with a grey bottom half.
ImageFile.LOAD_TRUNCATED_IMAGES = False

IMAGE_EXTENSIONS: frozenset[str] = frozenset(
    {
        ".jpg",
        ".jpeg",
        ".png",
        ".webp",
        ".bmp",
        ".tif",
        ".tiff",
        ".heic",
        ".heif",
        ".gif",
        ".pgm",
        ".ppm",
        ".pnm",
    }
)

REASONS = frozenset(
    {
        "empty",
        "not_an_image",
        "corrupt",
        "truncated",
        "too_large",
        "unreadable",
        "not_a_regular_file",  # a FIFO, device or socket: never opened for reading
        "outside_source",  # a symlink out of the scanned source's root: never followed
        "storage_error",  # the store failed (refused, reset, timed out, 5xx): retried, never recorded
    }
)
# Reasons that describe the storage, not the file: a scan retries them on its next run.
TRANSIENT_REASONS = frozenset({"storage_error"})

# Signatures of formats Pillow reads: a file that starts like one but that Pillow cannot identify is a
# damaged image, and telling the user "not an image" would send them looking in the wrong place.
_SIGNATURES = (b"\xff\xd8\xff", b"\x89PNG\r\n\x1a\n", b"GIF87a", b"GIF89a", b"II*\x00", b"MM\x00*")
_HEIF_BRANDS = (b"heic", b"heix", b"hevc", b"hevx", b"heim", b"heis", b"mif1", b"msf1")

# Messages from Pillow and its codecs meaning "the data stopped before the image did".
_TRUNCATION_HINTS = ("truncated", "premature end", "end of file", "not enough data")


class ImageError(Exception):
    """A file that could not be turned into pixels; ``reason`` is one of :data:`REASONS`."""

    def __init__(self, uri: str, reason: str, message: str) -> None:
        super().__init__(message)
        self.uri = uri
        self.reason = reason
        self.message = message
        self.sha256 = ""  # of the bytes, when they could be read

    @property
    def transient(self) -> bool:
        return self.reason in TRANSIENT_REASONS

    def __str__(self) -> str:
        return self.message

    # Worker processes send errors back by pickling; the default would call __init__(message) and fail.
    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.uri, self.reason, self.message))


@dataclass
class DecodedImage:
    uri: str
    rgb: np.ndarray
    scale: float
    width: int
    height: int
    size_bytes: int
    format: str
    sha256: str = ""  # of the file's bytes: the image's identity, whatever its name


def _is_local(uri: str) -> bool:
    return "://" not in uri and "::" not in uri


def read_bytes(uri: str) -> bytes:
    """All bytes of a regular file (local path or fsspec URI), refusing files over ``max_file_bytes`` before
    reading them, and FIFOs, devices and reads that outlast ENFACE_READ_TIMEOUT_SECONDS (see fsio)."""
    try:
        return fsio.read_capped(uri)
    except fsio.FileTooLarge as exc:
        raise ImageError(uri, "too_large", str(exc)) from exc
    except fsio.NotRegularFile as exc:
        raise ImageError(
            uri, "not_a_regular_file", f"{uri} is a {exc.kind}, not a regular file; only regular files are read"
        ) from exc
    except FileNotFoundError as exc:
        raise ImageError(uri, "unreadable", f"cannot read {uri}: no such file") from exc
    except IsADirectoryError as exc:
        raise ImageError(uri, "unreadable", f"cannot read {uri}: it is a folder, not a file") from exc
    except Exception as exc:  # fsspec back ends raise anything from OSError to botocore errors
        if fsio.is_transient(exc):
            # The store failed, not the file: callers must not record this as the image's state.
            raise ImageError(
                uri, "storage_error", f"cannot read {uri}: the storage failed ({type(exc).__name__}: {exc})"
            ) from exc
        raise ImageError(uri, "unreadable", f"cannot read {uri} ({type(exc).__name__}: {exc})") from exc


def _looks_like_image(data: bytes) -> bool:
    if data.startswith(_SIGNATURES):
        return True
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return True
    return data[4:8] == b"ftyp" and data[8:12] in _HEIF_BRANDS


def _container_truncated(data: bytes) -> bool:
    """Whether a WebP, TIFF or HEIF file is shorter than its own header says (their codecs do not say so)."""
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return len(data) < 8 + int.from_bytes(data[4:8], "little")
    if data[:4] in (b"II*\x00", b"MM\x00*"):
        # Writers often put the first IFD (the directory of tags) after the pixel data, at the very end.
        return int.from_bytes(data[4:8], "little" if data[:2] == b"II" else "big") >= len(data)
    if data[4:8] != b"ftyp":
        return False
    # ISO-BMFF: a chain of top-level boxes, each starting with its 32-bit size (1 = 64-bit size follows).
    pos = 0
    while pos + 8 <= len(data):
        size = int.from_bytes(data[pos : pos + 4], "big")
        if size == 1 and pos + 16 <= len(data):
            size = int.from_bytes(data[pos + 8 : pos + 16], "big")
        if size == 0:  # box runs to end of file
            return False
        if size < 8:
            return False  # nonsense: corrupt, not truncated
        pos += size
    return pos > len(data)


def _failure(uri: str, data: bytes, exc: BaseException) -> ImageError:
    text = str(exc) or type(exc).__name__
    if isinstance(exc, UnidentifiedImageError):
        text = "Pillow cannot make sense of its header"  # Pillow's own message only names a BytesIO
    lowered = text.lower()
    if isinstance(exc, EOFError) or any(h in lowered for h in _TRUNCATION_HINTS) or _container_truncated(data):
        return ImageError(
            uri,
            "truncated",
            f"{uri} is truncated ({text}); the file was probably cut short while copying or downloading",
        )
    if isinstance(exc, UnidentifiedImageError):
        if not _looks_like_image(data):
            return ImageError(uri, "not_an_image", f"{uri} is not an image Pillow can read (format not recognised)")
    return ImageError(uri, "corrupt", f"{uri} is damaged and cannot be decoded ({text})")


def _to_rgb(im: Image.Image) -> Image.Image:
    # Pillow's own I;16 -> L conversion clips at 255 (any value >= 256 becomes white), so wide modes are
    # brought down to 8 bits here, by their true range.
    if im.mode.startswith("I;16"):
        # Unsigned 16-bit by definition: shifting in uint16 gives the same bytes as the int64 path below at a
        # quarter of its memory (a 196 Mpx 16-bit PNG took +3.4 GB that way).
        return Image.fromarray((np.asarray(im) >> 8).astype(np.uint8)).convert("RGB")
    if im.mode == "I":
        a = np.asarray(im).astype(np.int64)
        if a.size and (a.min() < 0 or a.max() > 0xFFFF):
            a = _stretch(a)
        else:
            a = a >> 8
        return Image.fromarray(a.astype(np.uint8)).convert("RGB")
    if im.mode == "F":
        f = np.nan_to_num(np.asarray(im, dtype=np.float64))
        f = f * 255.0 if f.size and f.min() >= 0.0 and f.max() <= 1.0 else _stretch(f)
        return Image.fromarray(np.clip(np.rint(f), 0, 255).astype(np.uint8)).convert("RGB")
    # Alpha is dropped, not composited: detectors see the colour data the camera or editor stored.
    return im if im.mode == "RGB" else im.convert("RGB")


def _stretch(a: np.ndarray) -> np.ndarray:
    lo, hi = float(a.min()), float(a.max())
    return (a - lo) * (255.0 / (hi - lo)) if hi > lo else np.zeros_like(a, dtype=np.float64)


# Bytes per pixel of a decoded image as Pillow holds it: 1 for bilevel, grey and palette images, 2 for 16-bit
# grey; every other mode (RGB included) is stored in 32 bits per pixel.
_MODE_BYTES = {"1": 1, "L": 1, "P": 1, "I;16": 2, "I;16L": 2, "I;16B": 2, "I;16N": 2}


def decode_bytes(width: int, height: int, mode: str) -> int:
    """Memory, in bytes, that decoding an image of this size and Pillow mode allocates for its pixels."""
    return width * height * _MODE_BYTES.get(mode, 4)


def check_decode_budget(uri: str, width: int, height: int, mode: str, budget: int | None = None) -> None:
    """Raise ImageError(too_large) when decoding would take more than ``budget`` bytes (default
    ENFACE_MAX_DECODE_BYTES). Reads nothing: size and mode come from the header (the endpoint can call this
    with a per-request budget of its own)."""
    budget = get_settings().max_decode_bytes if budget is None else budget
    need = decode_bytes(width, height, mode)
    if need > budget:
        raise ImageError(
            uri,
            "too_large",
            f"{uri} is {width}x{height} in mode {mode}: decoding it takes {need:,} bytes, over the decode budget "
            f"of {budget:,}; raise ENFACE_MAX_DECODE_BYTES to accept it",
        )


def decode(
    data: bytes, uri: str = "<bytes>", *, max_side: int | None = None, max_decode_bytes: int | None = None
) -> DecodedImage:
    """Decode ``data`` (see :func:`_decode`) and stamp the result, or the error, with the bytes' sha256.

    max_decode_bytes: the decode budget (see :func:`check_decode_budget`); default ENFACE_MAX_DECODE_BYTES.
    """
    digest = hashlib.sha256(data).hexdigest() if data else ""
    try:
        img = _decode(data, uri, max_side=max_side, budget=max_decode_bytes)
    except ImageError as exc:
        exc.sha256 = digest
        raise
    img.sha256 = digest
    return img


def _decode(data: bytes, uri: str, *, max_side: int | None, budget: int | None = None) -> DecodedImage:
    """Decode ``data`` to an upright RGB array, optionally reduced so its longest side is about ``max_side``.

    JPEGs are reduced inside libjpeg (1/2, 1/4, 1/8) and so may come back up to twice ``max_side``; other
    formats are resized to at most ``max_side``. ``scale`` maps array pixels back to the original image.
    """
    if not data:
        raise ImageError(uri, "empty", f"{uri} is empty (0 bytes)")
    if max_side is not None and max_side < 1:
        raise ValueError(f"max_side must be positive, got {max_side}")
    limit = get_settings().max_image_pixels
    try:
        with Image.open(io.BytesIO(data)) as im:
            fmt = im.format or "unknown"
            width, height = im.size  # header only: no pixels decoded yet
            if width * height > limit:
                raise ImageError(
                    uri,
                    "too_large",
                    f"{uri} is {width}x{height} = {width * height:,} pixels, over the decompression-bomb "
                    f"limit of {limit:,}; raise ENFACE_MAX_IMAGE_PIXELS to accept it",
                )
            longest = max(width, height)
            if max_side is not None and isinstance(im, JpegImageFile) and longest > max_side:
                # Ask for the size whose longest side is exactly max_side: draft() then picks the largest
                # DCT scale that still covers it, so the result is never smaller than asked.
                im.draft("RGB", (-(-width * max_side // longest), -(-height * max_side // longest)))
            # After draft(): a JPEG is budgeted at the reduced size libjpeg will actually decode to.
            check_decode_budget(uri, im.size[0], im.size[1], im.mode, budget)
            im.load()  # first frame only, for GIF/TIFF/HEIF sequences
            # Read orientation after load: the TIFF plugin applies it itself while loading and removes it.
            orientation = im.getexif().get(ExifTags.Base.Orientation, 1)
            ImageOps.exif_transpose(im, in_place=True)
            if orientation in (5, 6, 7, 8):
                width, height = height, width
            rgb = _to_rgb(im)
            # JPEGs stay at their DCT-reduced size (>= max_side); the detector resizes again anyway.
            if max_side is not None and not isinstance(im, JpegImageFile) and max(rgb.size) > max_side:
                r = max_side / max(rgb.size)
                size = (max(1, round(rgb.width * r)), max(1, round(rgb.height * r)))
                # reducing_gap: a cheap integer box reduce() first, then a bilinear pass for the rest.
                rgb = rgb.resize(size, Image.Resampling.BILINEAR, reducing_gap=2.0)
            # np.array copies: arrays over Pillow's buffer are read-only, and callers may draw on them.
            arr = np.array(rgb, dtype=np.uint8, order="C")
    except ImageError:
        raise
    except MemoryError:
        raise
    except Image.DecompressionBombError as exc:  # other code re-enabled Pillow's global limit
        raise ImageError(
            uri, "too_large", f"{uri}: {exc} (Pillow's PIL.Image.MAX_IMAGE_PIXELS, set by other code)"
        ) from exc
    except Exception as exc:
        raise _failure(uri, data, exc) from exc
    return DecodedImage(
        uri=uri,
        rgb=arr,
        scale=width / arr.shape[1],
        width=width,
        height=height,
        size_bytes=len(data),
        format=fmt,
    )


def load(uri: str, *, max_side: int | None = None) -> DecodedImage:
    return decode(read_bytes(uri), uri, max_side=max_side)


def _wanted(name: str, all_files: bool) -> bool:
    return not name.startswith(".") and (all_files or os.path.splitext(name)[1].lower() in IMAGE_EXTENSIONS)


def list_images(uris: Iterable[str], *, all_files: bool = False) -> Iterator[str]:
    """Expand files and folders (local or fsspec) into image URIs, in the same form as given.

    A named file is yielded even if it is missing or not an image, so its error is reported per file
    rather than the input vanishing silently.
    """
    for uri in uris:
        if _is_local(uri):
            if not os.path.isdir(uri):
                yield uri
                continue
            for root, dirs, files in os.walk(uri):
                dirs[:] = sorted(d for d in dirs if not d.startswith("."))
                for name in sorted(files):
                    if _wanted(name, all_files):
                        yield os.path.join(root, name)
            continue
        fs, top = fsio.url_to_fs(uri)
        if not fs.isdir(top):
            yield uri
            continue
        top = top.rstrip("/")
        base = uri.rstrip("/")
        for root, dirs, files in fs.walk(top):
            dirs[:] = sorted(d for d in dirs if not d.startswith("."))
            # Rebuild from the caller's URI so its protocol and spelling survive (fs paths drop both).
            rel = root.rstrip("/")[len(top) :].strip("/")
            prefix = f"{base}/{rel}" if rel else base
            for name in sorted(files):
                if _wanted(name, all_files):
                    yield f"{prefix}/{name}"


def jpeg_bytes(rgb: np.ndarray, quality: int = 90) -> bytes:
    """JPEG of an HxWx3 uint8 RGB array (face thumbs and crops)."""
    if rgb.dtype != np.uint8 or rgb.ndim != 3 or rgb.shape[2] != 3:
        raise ValueError(f"expected an HxWx3 uint8 array, got {rgb.dtype} {rgb.shape}")
    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(rgb)).save(buf, "JPEG", quality=quality)
    return buf.getvalue()


def thumb_b64(rgb: np.ndarray, quality: int = 90) -> str:
    """Base64 JPEG of an HxWx3 uint8 RGB array (used for the 112x112 aligned face thumbnails)."""
    return base64.b64encode(jpeg_bytes(rgb, quality)).decode("ascii")
