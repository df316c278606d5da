from __future__ import annotations

import base64
import io
import os
import pickle
import struct
import uuid
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path

import fsspec
import numpy as np
import pytest
from PIL import Image

from enface_batch import imaging
from enface_batch.imaging import ImageError, decode, list_images, load, read_bytes, thumb_b64
from enface_batch.settings import get_settings

PHOTO = "fixtures/face_recognition_examples/examples/obama-240p.jpg"  # 427x240 real photo, face in it
W, H = 427, 240


def mad(a: np.ndarray, b: np.ndarray) -> float:
    """Mean absolute difference in 8-bit levels."""
    return float(np.abs(a.astype(np.int16) - b.astype(np.int16)).mean())


def save(im: Image.Image, path: Path, fmt: str | None = None, **kw: object) -> Path:
    im.save(path, fmt, **kw)
    return path


@pytest.fixture(scope="module")
def photo(test_data: Path) -> Image.Image:
    im = Image.open(test_data / PHOTO).convert("RGB")
    assert im.size == (W, H)
    return im


@pytest.fixture(scope="module")
def pixels(photo: Image.Image) -> np.ndarray:
    return np.asarray(photo)


@pytest.fixture(scope="module")
def grey(photo: Image.Image) -> np.ndarray:
    return np.asarray(photo.convert("L"))


@pytest.fixture
def env(monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[[str, object], None]]:
    """Set an ENFACE_ variable for one test; the settings cache is cleared before monkeypatch restores it."""

    def set_env(name: str, value: object) -> None:
        monkeypatch.setenv(name, str(value))
        get_settings.cache_clear()

    yield set_env
    get_settings.cache_clear()


@pytest.fixture
def memfs() -> Iterator[tuple[fsspec.AbstractFileSystem, str]]:
    fs = fsspec.filesystem("memory")
    root = f"/enface-test-{uuid.uuid4().hex}"
    yield fs, root
    if fs.exists(root):
        fs.rm(root, recursive=True)


# --- formats -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "fmt", "kw", "tol"),
    [
        ("a.jpg", "JPEG", {"quality": 95}, 3.0),
        ("a.png", "PNG", {}, 0.0),
        ("a.webp", "WEBP", {"lossless": True}, 0.0),
        ("b.webp", "WEBP", {"quality": 90}, 4.0),
        ("a.bmp", "BMP", {}, 0.0),
        ("a.tiff", "TIFF", {"compression": "tiff_deflate"}, 0.0),
        ("a.heic", "HEIF", {"quality": 90}, 4.0),
        ("a.ppm", "PPM", {}, 0.0),
    ],
)
def test_round_trip(tmp_path, photo, pixels, name, fmt, kw, tol):
    path = save(photo, tmp_path / name, fmt, **kw)
    d = load(str(path))
    assert d.format == fmt
    assert d.rgb.shape == (H, W, 3) and d.rgb.dtype == np.uint8
    assert d.rgb.flags.c_contiguous and d.rgb.flags.writeable
    assert (d.width, d.height, d.scale) == (W, H, 1.0)
    assert d.size_bytes == path.stat().st_size and d.uri == str(path)
    assert mad(d.rgb, pixels) <= tol


# --- modes -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["PNG", "JPEG"])
def test_greyscale_gives_equal_channels(tmp_path, photo, grey, fmt):
    d = load(str(save(photo.convert("L"), tmp_path / f"g.{fmt.lower()}", fmt, quality=95)))
    assert d.rgb.shape == (H, W, 3)
    assert np.array_equal(d.rgb[..., 0], d.rgb[..., 1]) and np.array_equal(d.rgb[..., 0], d.rgb[..., 2])
    assert mad(d.rgb[..., 0], grey) <= (0 if fmt == "PNG" else 2)


def test_grey_with_alpha_drops_alpha(tmp_path, photo, grey):
    la = photo.convert("LA")
    la.putalpha(Image.linear_gradient("L").resize(photo.size))
    d = load(str(save(la, tmp_path / "la.png")))
    assert np.array_equal(d.rgb[..., 1], grey)


@pytest.mark.parametrize(("name", "tol"), [("c.jpg", 2.0), ("c.tif", 0.0)])
def test_cmyk(tmp_path, photo, pixels, name, tol):
    d = load(str(save(photo.convert("CMYK"), tmp_path / name, quality=95)))
    assert d.rgb.shape == (H, W, 3)
    assert mad(d.rgb, pixels) <= tol


def _sixteen_bit(grey: np.ndarray) -> np.ndarray:
    # v*257 spreads 0..255 over the whole 0..65535 range; >>8 maps it straight back to v.
    a = grey.astype(np.uint16) * 257
    a[0, 0], a[0, 1], a[0, 2] = 0, 65535, 0x8000
    return a


def _expected_from_16(grey: np.ndarray) -> np.ndarray:
    e = grey.copy()
    e[0, 0], e[0, 1], e[0, 2] = 0, 255, 128
    return e


@pytest.mark.parametrize("name", ["s.png", "s.tif"])
def test_16bit_scaled_not_clipped(tmp_path, grey, name):
    im = Image.fromarray(_sixteen_bit(grey))
    assert im.mode == "I;16"
    d = load(str(save(im, tmp_path / name)))
    # Clipping (Pillow's own I;16 -> L) would turn nearly every pixel white.
    assert np.array_equal(d.rgb[..., 0], _expected_from_16(grey))
    assert np.array_equal(d.rgb[..., 2], _expected_from_16(grey))


def test_16bit_pgm_opens_as_mode_i(tmp_path, grey):
    a = _sixteen_bit(grey)
    path = tmp_path / "s.pgm"
    path.write_bytes(b"P5 %d %d 65535\n" % (W, H) + a.astype(">u2").tobytes())
    assert Image.open(path).mode == "I"
    assert np.array_equal(load(str(path)).rgb[..., 0], _expected_from_16(grey))


def test_float_image(tmp_path, grey):
    im = Image.fromarray(grey.astype(np.float32) / 255.0)
    assert im.mode == "F"
    d = load(str(save(im, tmp_path / "f.tif")))
    assert np.abs(d.rgb[..., 0].astype(int) - grey).max() <= 1


def test_rgba_drops_alpha(tmp_path, photo, pixels):
    rgba = photo.copy()
    rgba.putalpha(Image.linear_gradient("L").resize(photo.size))
    d = load(str(save(rgba, tmp_path / "a.png")))
    assert np.array_equal(d.rgb, pixels)


def test_palette_and_bilevel(tmp_path, photo):
    pal = photo.convert("P", palette=Image.Palette.ADAPTIVE, colors=64)
    d = load(str(save(pal, tmp_path / "p.png")))
    assert np.array_equal(d.rgb, np.asarray(pal.convert("RGB")))
    bw = load(str(save(photo.convert("1"), tmp_path / "b.png"))).rgb
    assert set(np.unique(bw)) == {0, 255}


def test_multiframe_gif_gives_first_frame(tmp_path, photo, pixels):
    inverted = Image.fromarray(255 - pixels)
    path = save(photo, tmp_path / "m.gif", save_all=True, append_images=[inverted])
    assert Image.open(path).n_frames == 2
    d = load(str(path))
    assert mad(d.rgb, pixels) < 12 < mad(d.rgb, 255 - pixels)


# --- EXIF orientation and reduced decode ---------------------------------------------------------------

# Stored pixels for each orientation tag, so that the viewer's rotation yields the upright photo.
STORED = {6: Image.Transpose.ROTATE_90, 8: Image.Transpose.ROTATE_270}


def _exif(orientation: int) -> bytes:
    exif = Image.Exif()
    exif[0x0112] = orientation
    return exif.tobytes()


@pytest.mark.parametrize("orientation", [6, 8])
@pytest.mark.parametrize(("name", "tol"), [("o.jpg", 3.0), ("o.png", 0.0)])
def test_exif_orientation(tmp_path, photo, pixels, orientation, name, tol):
    stored = photo.transpose(STORED[orientation])
    assert stored.size == (H, W)
    d = load(str(save(stored, tmp_path / name, exif=_exif(orientation), quality=95)))
    assert d.rgb.shape == (H, W, 3)
    assert (d.width, d.height) == (W, H)
    assert mad(d.rgb, pixels) <= tol
    assert mad(d.rgb, pixels[::-1, ::-1]) > 20  # turned the wrong way would be upside down


@pytest.fixture(scope="module")
def large_jpeg(tmp_path_factory, photo) -> Path:
    path = tmp_path_factory.mktemp("large") / "large.jpg"
    photo.resize((4000, 3000), Image.Resampling.BICUBIC).save(path, quality=90)
    return path


@pytest.mark.parametrize("max_side", [640, 1000, 1500])
def test_reduced_jpeg_decode(large_jpeg, photo, max_side):
    d = load(str(large_jpeg), max_side=max_side)
    h, w = d.rgb.shape[:2]
    assert max_side <= max(w, h) < 2 * max_side
    assert (d.width, d.height) == (4000, 3000)
    assert d.scale * w == pytest.approx(4000)
    assert d.scale * h == pytest.approx(3000, rel=0.01)
    # Still the same picture, just smaller.
    assert mad(d.rgb, np.asarray(photo.resize((w, h), Image.Resampling.BILINEAR))) < 6


def test_reduced_jpeg_decode_with_rotation(tmp_path, photo):
    big = photo.resize((4000, 3000), Image.Resampling.BILINEAR).transpose(STORED[6])
    d = load(str(save(big, tmp_path / "r.jpg", exif=_exif(6), quality=85)), max_side=640)
    h, w = d.rgb.shape[:2]
    assert (d.width, d.height) == (4000, 3000) and w > h
    assert 640 <= w < 1280
    assert d.scale * w == pytest.approx(4000)


def test_reduced_decode_other_formats_fits_max_side(tmp_path, photo, pixels):
    path = save(photo.resize((1200, 675), Image.Resampling.BICUBIC), tmp_path / "big.png")
    d = load(str(path), max_side=500)
    assert d.rgb.shape[1] == 500 and d.rgb.shape[0] <= 500
    assert (d.width, d.height) == (1200, 675)
    assert d.scale == pytest.approx(1200 / 500)
    assert mad(d.rgb, np.asarray(photo.resize(d.rgb.shape[1::-1], Image.Resampling.BILINEAR))) < 6


def test_max_side_above_image_size_changes_nothing(tmp_path, photo, pixels):
    d = load(str(save(photo, tmp_path / "a.jpg", quality=95)), max_side=2000)
    assert d.rgb.shape == (H, W, 3) and d.scale == 1.0


# --- errors ------------------------------------------------------------------------------------------


def _reason(path: Path, **kw: object) -> ImageError:
    with pytest.raises(ImageError) as info:
        load(str(path), **kw)
    assert info.value.uri == str(path)
    assert str(path) in str(info.value)
    return info.value


def test_empty_file(tmp_path):
    path = tmp_path / "empty.jpg"
    path.touch()
    assert _reason(path).reason == "empty"


def test_text_file_named_jpg(tmp_path):
    path = tmp_path / "notes.jpg"
    path.write_text("shopping list: milk, eggs\n" * 20)
    err = _reason(path)
    assert err.reason == "not_an_image"
    assert "not an image Pillow can read" in str(err)


@pytest.mark.filterwarnings("ignore:Corrupt EXIF data")
@pytest.mark.parametrize(
    ("name", "kw"),
    [
        ("t.jpg", {"quality": 95}),
        ("t.png", {}),
        ("t.webp", {"quality": 90}),
        ("t.heic", {"quality": 90}),
        ("t.gif", {}),
        ("t.tif", {"compression": "tiff_deflate"}),
    ],
)
def test_truncated(tmp_path, photo, name, kw):
    data = save(photo, tmp_path / name, **kw).read_bytes()
    path = tmp_path / f"half-{name}"
    path.write_bytes(data[: len(data) // 2])
    err = _reason(path)
    assert err.reason == "truncated", str(err)


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("header", ["app0", "sos"])
def test_garbage_after_jpeg_header(tmp_path, photo, seed, header):
    data = save(photo, tmp_path / "ok.jpg", quality=95).read_bytes()
    if header == "app0":
        keep = 2 + 2 + int.from_bytes(data[4:6], "big")  # SOI + the JFIF APP0 segment
    else:
        sos = data.index(b"\xff\xda")
        keep = sos + 2 + int.from_bytes(data[sos + 2 : sos + 4], "big")  # all markers, up to the scan data
        # libjpeg shrugs off most garbage in scan data; markers (0xFF) in it are what make it give up.
    rng = np.random.default_rng(seed)
    garbage = rng.integers(0, 256, len(data) - keep, dtype=np.uint8)
    if header == "sos":
        garbage[::97] = 0xFF
        garbage[1::97] = 0xC4  # a DHT marker in the middle of scan data
    path = tmp_path / "garbage.jpg"
    path.write_bytes(data[:keep] + garbage.tobytes())
    assert _reason(path).reason in {"corrupt", "truncated"}


def _png_header_claiming(width: int, height: int) -> bytes:
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    chunk = struct.pack(">I", len(ihdr)) + b"IHDR" + ihdr + struct.pack(">I", zlib.crc32(b"IHDR" + ihdr))
    idat = zlib.compress(b"\x00" * 64)
    idat_chunk = struct.pack(">I", len(idat)) + b"IDAT" + idat + struct.pack(">I", zlib.crc32(b"IDAT" + idat))
    return b"\x89PNG\r\n\x1a\n" + chunk + idat_chunk


def test_header_claiming_huge_size_refused_before_decoding(tmp_path):
    path = tmp_path / "bomb.png"
    path.write_bytes(_png_header_claiming(100_000, 100_000))  # 10 Gpx in ~100 bytes
    err = _reason(path)
    assert err.reason == "too_large"
    assert "ENFACE_MAX_IMAGE_PIXELS" in str(err)


def test_max_image_pixels_setting(tmp_path, photo, env):
    path = save(photo, tmp_path / "a.jpg")
    env("ENFACE_MAX_IMAGE_PIXELS", W * H - 1)
    err = _reason(path)
    assert err.reason == "too_large" and "ENFACE_MAX_IMAGE_PIXELS" in str(err)
    env("ENFACE_MAX_IMAGE_PIXELS", W * H)
    assert load(str(path)).rgb.shape == (H, W, 3)


def test_pillow_global_limit_does_not_override_setting(tmp_path, env):
    # 200 Mpx is over Pillow's built-in hard limit (~179 Mpx) but under the configured one, so the file
    # must get as far as decoding, where its missing pixel data shows it is truncated.
    env("ENFACE_MAX_IMAGE_PIXELS", 300_000_000)
    env("ENFACE_MAX_DECODE_BYTES", 4 * 300_000_000)  # and the decode budget, which would refuse it first
    path = tmp_path / "big.png"
    path.write_bytes(_png_header_claiming(20_000, 10_000))
    assert _reason(path).reason == "truncated"


def test_max_file_bytes_setting(tmp_path, photo, env, memfs):
    path = save(photo, tmp_path / "a.jpg")
    size = path.stat().st_size
    env("ENFACE_MAX_FILE_BYTES", size - 1)
    err = _reason(path)
    assert err.reason == "too_large" and "ENFACE_MAX_FILE_BYTES" in str(err)
    assert f"{size:,} bytes" in str(err)  # the size came from stat, not from reading the file
    fs, root = memfs
    fs.pipe(f"{root}/a.jpg", path.read_bytes())
    with pytest.raises(ImageError) as info:
        read_bytes(f"memory://{root}/a.jpg")
    assert info.value.reason == "too_large" and f"{size:,} bytes" in str(info.value)
    env("ENFACE_MAX_FILE_BYTES", size)
    assert len(read_bytes(str(path))) == size


def test_unreadable(tmp_path, memfs):
    for uri in [str(tmp_path / "missing.jpg"), str(tmp_path), f"memory://{memfs[1]}/missing.jpg"]:
        with pytest.raises(ImageError) as info:
            load(uri)
        assert info.value.reason == "unreadable" and uri in str(info.value)


def test_image_error_survives_pickling():
    err = pickle.loads(pickle.dumps(ImageError("x.jpg", "corrupt", "x.jpg is damaged")))
    assert (err.uri, err.reason, str(err)) == ("x.jpg", "corrupt", "x.jpg is damaged")


def test_decode_never_leaks_pillow_exceptions(photo):
    buf = io.BytesIO()
    photo.save(buf, "PNG")
    data = bytearray(buf.getvalue())
    rng = np.random.default_rng(1)
    for _ in range(30):
        bad = bytearray(data)
        for pos in rng.integers(8, len(bad), 20):
            bad[pos] = int(rng.integers(0, 256))
        try:
            decode(bytes(bad))
        except ImageError as err:
            assert err.reason in imaging.REASONS


# --- listing, fsspec, thumbnails ---------------------------------------------------------------------

TREE = [
    "b.jpg",
    "a.PNG",
    "notes.txt",
    ".hidden.jpg",
    "sub/c.jpeg",
    "sub/d.HEIC",
    "sub/.cache/e.jpg",
    ".git/f.jpg",
    "z/deeper/g.webp",
]
IMAGES = ["a.PNG", "b.jpg", "sub/c.jpeg", "sub/d.HEIC", "z/deeper/g.webp"]


def test_list_images_local(tmp_path, monkeypatch):
    for rel in TREE:
        (tmp_path / "root" / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / "root" / rel).write_bytes(b"x")
    monkeypatch.chdir(tmp_path)
    assert list(list_images(["root"])) == [os.path.join("root", p) for p in IMAGES]
    assert list(list_images([str(tmp_path / "root")]))[0] == str(tmp_path / "root" / "a.PNG")
    with_all = list(list_images(["root"], all_files=True))
    assert os.path.join("root", "notes.txt") in with_all and len(with_all) == len(IMAGES) + 1
    # Files named explicitly always come through, even hidden, non-image or missing ones.
    explicit = ["root/notes.txt", "root/.hidden.jpg", "root/missing.jpg"]
    assert list(list_images(explicit)) == explicit


def test_list_images_fsspec(memfs):
    fs, root = memfs
    for rel in TREE:
        fs.pipe(f"{root}/{rel}", b"x")
    base = f"memory://{root}"
    assert list(list_images([base])) == [f"{base}/{p}" for p in IMAGES]
    assert list(list_images([base + "/"])) == [f"{base}/{p}" for p in IMAGES]
    assert list(list_images([f"{base}/notes.txt"])) == [f"{base}/notes.txt"]


def test_load_from_memory_uri(tmp_path, photo, memfs):
    data = save(photo, tmp_path / "a.jpg", quality=95).read_bytes()
    fs, root = memfs
    fs.pipe(f"{root}/photos/a.jpg", data)
    uri = f"memory://{root}/photos/a.jpg"
    d = load(uri)
    local = load(str(tmp_path / "a.jpg"))
    assert d.uri == uri and d.size_bytes == len(data) and d.format == "JPEG"
    assert np.array_equal(d.rgb, local.rgb)
    assert list(list_images([f"memory://{root}/photos"])) == [uri]


def test_thumb_b64(pixels):
    face = np.ascontiguousarray(pixels[40:152, 150:262])
    jpeg = base64.b64decode(thumb_b64(face, quality=95))
    im = Image.open(io.BytesIO(jpeg))
    assert im.format == "JPEG" and im.size == (112, 112)
    assert mad(np.asarray(im.convert("RGB")), face) < 5
    with pytest.raises(ValueError):
        thumb_b64(face.astype(np.float32))
