"""Reading files safely: one S3 configuration for every read, a decode budget, and files that never end."""

from __future__ import annotations

import os
import struct
import time
import uuid
import zlib
from pathlib import Path

import pytest

from enface_batch import fsio, imaging

PHOTO = "fixtures/face_recognition_examples/examples/obama-240p.jpg"


def test_s3_endpoint_setting_is_used_when_images_are_read(s3_endpoint, test_data, monkeypatch, env):
    """ENFACE_S3_ENDPOINT_URL alone (no AWS_ENDPOINT_URL) reaches reading, listing, hashing and index files."""
    import boto3
    import numpy as np

    from enface_batch.index import PersonIndex
    from enface_batch.scan_plan import file_sha256, list_files

    photo = (test_data / PHOTO).read_bytes()
    prefix = f"ep-{uuid.uuid4().hex}"
    boto3.client("s3", endpoint_url=s3_endpoint).put_object(Bucket="enface", Key=f"{prefix}/a.jpg", Body=photo)
    monkeypatch.delenv("AWS_ENDPOINT_URL")
    env("ENFACE_S3_ENDPOINT_URL", s3_endpoint)
    env("ENFACE_S3_RETRIES", 1)  # without the endpoint, the default AWS host is unreachable here: fail fast
    uri = f"s3://enface/{prefix}/a.jpg"
    assert imaging.read_bytes(uri) == photo
    assert imaging.load(uri).width == 427
    assert list(imaging.list_images([f"s3://enface/{prefix}"])) == [uri]
    assert [e.uri for e in list_files(f"s3://enface/{prefix}")] == [uri]
    assert file_sha256(uri) == imaging.decode(photo).sha256
    idx = PersonIndex(4)
    idx.add(["p1"], np.eye(4, dtype=np.float32)[:1])
    idx.save(f"s3://enface/{prefix}/index.npz")
    assert PersonIndex.load(f"s3://enface/{prefix}/index.npz").person_ids == ["p1"]


# --- decode budget ------------------------------------------------------------------------------------------


def png16(width: int, height: int) -> bytes:
    """A black 16-bit greyscale PNG, compressed row by row: a few hundred KB on disk for 196 Mpx."""
    ihdr = struct.pack(">IIBBBBB", width, height, 16, 0, 0, 0, 0)

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    comp = zlib.compressobj(9)
    row = b"\x00" * (1 + 2 * width)
    idat = b"".join(comp.compress(row) for _ in range(height)) + comp.flush()
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


def test_decode_budget_refuses_a_small_16_bit_png_of_196_megapixels_before_allocating(env):
    data = png16(14_000, 14_000)
    assert len(data) < 1_000_000
    t0 = time.perf_counter()
    with pytest.raises(imaging.ImageError) as info:
        imaging.decode(data, "huge16.png", max_side=2048)
    assert time.perf_counter() - t0 < 1.0  # refused from the header: it took 14 s and +3.4 GB to decode
    err = info.value
    assert err.reason == "too_large"
    assert "huge16.png" in str(err) and "ENFACE_MAX_DECODE_BYTES" in str(err) and "392,000,000 bytes" in str(err)
    assert err.sha256  # still identified, so a scan records it once


def test_decode_budget_setting_and_per_call_budget(env):
    data = png16(1000, 600)  # 1.2 MB decoded
    assert imaging.decode(data, "a.png").rgb.shape == (600, 1000, 3)
    env("ENFACE_MAX_DECODE_BYTES", 1_199_999)
    with pytest.raises(imaging.ImageError):
        imaging.decode(data, "a.png")
    env("ENFACE_MAX_DECODE_BYTES", 1_200_000)
    assert imaging.decode(data, "a.png").width == 1000
    with pytest.raises(imaging.ImageError):
        imaging.decode(data, "a.png", max_decode_bytes=1_199_999)
    assert imaging.decode_bytes(1000, 600, "I;16") == 1_200_000
    assert imaging.decode_bytes(1000, 600, "RGB") == 2_400_000


# --- files that never end -----------------------------------------------------------------------------------


def test_fifo_and_dev_zero_are_refused_without_blocking(tmp_path, env):
    fifo = tmp_path / "pipe.jpg"
    os.mkfifo(fifo)
    zero = tmp_path / "zero.jpg"
    zero.symlink_to("/dev/zero")
    for path, kind in ((fifo, "FIFO"), (zero, "character device")):
        with pytest.raises(imaging.ImageError) as info:
            imaging.read_bytes(str(path))
        assert info.value.reason == "not_a_regular_file" and kind in str(info.value) and str(path) in str(info.value)
        with pytest.raises(fsio.NotRegularFile):
            fsio.read_capped(str(path))


def test_read_cap_and_deadline(tmp_path: Path, env):
    big = tmp_path / "big.bin"
    big.write_bytes(b"x" * 3000)
    with pytest.raises(fsio.FileTooLarge):
        fsio.read_capped(str(big), limit=2999)
    assert len(fsio.read_capped(str(big), limit=3000)) == 3000
    with pytest.raises(fsio.ReadTimedOut):
        for _ in fsio.read_blocks(str(big), timeout=1e-9, block=1000):
            time.sleep(0.01)
    assert fsio.is_transient(fsio.ReadTimedOut(str(big), 1.0))
    assert not fsio.is_transient(fsio.FileTooLarge(str(big), 1, 0))
    assert fsio.is_transient(ConnectionRefusedError(111, "refused"))
    assert not fsio.is_transient(FileNotFoundError("gone"))


def test_detect_over_a_folder_with_a_fifo_reports_it_instead_of_hanging(tmp_path, test_data, analyzer):
    """`enface detect DIR` lists every image-named file; a FIFO among them used to block open() forever."""
    (tmp_path / "a.jpg").write_bytes((test_data / PHOTO).read_bytes())
    os.mkfifo(tmp_path / "b.jpg")
    results = list(analyzer.analyze_uris(imaging.list_images([str(tmp_path)])))
    assert [(r.status, r.reason) for r in results] == [("faces", None), ("error", "not_a_regular_file")]
