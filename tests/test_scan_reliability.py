"""A scan over hostile or failing storage: files that never end, links out of the source, bad files recorded
once, and a storage outage mid-scan that fails the run without recording anything false."""

from __future__ import annotations

import os
import shutil
import uuid
from pathlib import Path

import pytest
from test_scan_flow import EX, build_archive, setup_source

from enface_batch.lake.schemas import TABLES
from enface_batch.lake.store import Lake

pytestmark = pytest.mark.usefixtures("prefect_server")


def _images(lake: Lake) -> dict[str, tuple[str, str | None]]:
    return {Path(r["uri"]).name: (r["status"], r["reason"]) for r in lake.read("images").to_pylist()}


def test_fifo_dev_zero_and_links_out_of_the_source_are_recorded_and_the_run_completes(tmp_path, test_data, env):
    from enface_batch.flows.scan import run_scan

    env("ENFACE_MAX_FILE_BYTES", 2_000_000)
    root = tmp_path / "archive"
    root.mkdir()
    shutil.copy(test_data / EX / "obama.jpg", root / "obama.jpg")
    os.mkfifo(root / "pipe.jpg")  # open() blocks until a writer comes
    (root / "zero.jpg").symlink_to("/dev/zero")  # never ends
    outside = tmp_path / "private"
    outside.mkdir()
    shutil.copy(test_data / EX / "biden.jpg", outside / "secret.jpg")
    (root / "secret.jpg").symlink_to(outside / "secret.jpg")  # a regular file, but out of the source
    (root / "private").symlink_to(outside)  # a folder out of the source
    (root / "inside.jpg").symlink_to(root / "obama.jpg")  # a link within the source is read
    (root / "empty.jpg").write_bytes(b"")
    (root / "big.jpg").write_bytes(b"\xff\xd8\xff" + b"\0" * 2_500_000)  # over ENFACE_MAX_FILE_BYTES

    lake = Lake(tmp_path / "lake")
    setup_source(lake, str(root))
    (summary,) = run_scan(lake=lake.uri, runner="threads", workers=1)
    images = _images(lake)
    assert images["pipe.jpg"] == ("error", "not_a_regular_file")
    assert images["zero.jpg"] == ("error", "not_a_regular_file")
    assert images["secret.jpg"] == ("error", "outside_source")
    assert images["private"] == ("error", "outside_source")
    assert images["empty.jpg"] == ("error", "empty")
    assert images["big.jpg"] == ("error", "too_large")
    # A link within the source is read: the same content as obama.jpg, analysed once under the first name.
    assert images["inside.jpg"] == ("faces", None) and "obama.jpg" not in images
    assert summary["files_refused"] == 4 and summary["storage_errors"] == 0
    messages = {Path(r["uri"]).name: r["message"] for r in lake.read("images").to_pylist()}
    assert "/dev/zero" in messages["zero.jpg"] and str(outside / "secret.jpg") in messages["secret.jpg"]
    assert lake.read("persons").num_rows == 1  # the linked-in private photo was never read

    # Bad files are recorded once: a second run reads nothing and writes nothing.
    before = {t: lake.version(t) for t in TABLES}
    (again,) = run_scan(lake=lake.uri, runner="threads", workers=1)
    assert again["images_new"] == 0 and again["files_refused"] == 0
    assert again["files_unchanged"] == summary["files_seen"] == 8
    assert {t: lake.version(t) for t in TABLES} == before


@pytest.fixture
def archive_server(monkeypatch, env):
    """A moto S3 server of its own, reachable only through ENFACE_S3_ENDPOINT_URL, that a test may stop."""
    from conftest import _free_port
    from moto.server import ThreadedMotoServer

    port = _free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    endpoint = f"http://127.0.0.1:{port}"
    for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        monkeypatch.setenv(k, "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
    env("ENFACE_S3_ENDPOINT_URL", endpoint)
    env("ENFACE_S3_RETRIES", 1)
    import boto3

    boto3.client("s3", endpoint_url=endpoint).create_bucket(Bucket="archive")
    yield server, endpoint
    try:
        server.stop()
    except Exception:  # already stopped by the test
        pass


def test_s3_outage_mid_scan_fails_the_run_and_records_nothing_false(tmp_path, test_data, archive_server, monkeypatch):
    import s3fs

    from enface_batch import imaging
    from enface_batch.flows.scan import make_runner, scan
    from enface_batch.scan import StorageFailure

    server, endpoint = archive_server
    build_archive(tmp_path / "archive", test_data)
    prefix = f"archive/{uuid.uuid4().hex}"
    s3fs.S3FileSystem(client_kwargs={"endpoint_url": endpoint}).put(
        str(tmp_path / "archive") + "/", f"{prefix}/", recursive=True
    )
    lake = Lake(tmp_path / "lake")
    setup_source(lake, f"s3://{prefix}")

    real_read, reads = imaging.read_bytes, []

    def read_then_fail(uri: str) -> bytes:  # the storage goes away after the third image read
        reads.append(uri)
        if len(reads) == 3:
            server.stop()
        return real_read(uri)

    monkeypatch.setattr(imaging, "read_bytes", read_then_fail)
    flow_ = scan.with_options(task_runner=make_runner("threads", 1))
    state = flow_(lake=lake.uri, workers=1, chunk_size=2, return_state=True)
    assert state.is_failed()  # the Prefect flow run says so
    with pytest.raises(StorageFailure) as info:
        state.result()
    (summary,) = info.value.summaries
    assert summary["storage_errors"] >= 1
    images = lake.read("images").to_pylist()
    assert len(images) == 2  # only what was read; no row for a file the storage failed on
    assert len(images) + summary["storage_errors"] == 10  # 10 distinct contents
    assert not [r for r in images if r["reason"] in ("unreadable", "storage_error")]

    # The storage is back: the re-run reads exactly what failed; one images row per content.
    monkeypatch.setattr(imaging, "read_bytes", real_read)
    server.start()
    (again,) = flow_(lake=lake.uri, workers=1, chunk_size=2)
    assert again["storage_errors"] == 0 and again["images_new"] == summary["storage_errors"]
    rows = lake.read("images").to_pylist()
    assert len(rows) == len({r["image_sha256"] for r in rows}) == 10
    reasons = {Path(r["uri"]).name: r["reason"] for r in rows}
    assert reasons["broken.jpg"] == "truncated" and reasons["notes.txt"] == "not_an_image"


def test_enface_run_exits_non_zero_when_the_storage_failed(monkeypatch):
    from typer.testing import CliRunner

    from enface_batch.cli import EXIT_STORAGE, app
    from enface_batch.flows import prefect_server
    from enface_batch.scan import StorageFailure

    def failing_scan(*args, **kwargs):
        raise StorageFailure([{"source_id": "s", "storage_errors": 3}])

    monkeypatch.setattr("enface_batch.flows.scan.run_scan", failing_scan)
    monkeypatch.setattr(prefect_server, "start", lambda: None)
    result = CliRunner().invoke(app, ["run"])
    assert result.exit_code == EXIT_STORAGE
    assert '"storage_errors": 3' in result.stdout and "3 file(s) could not be read" in result.output


def test_rows_an_old_run_wrote_for_storage_errors_are_replaced_by_the_content(tmp_path, test_data):
    """Lakes written before storage errors were told apart hold 'unreadable:<uri>' rows beside good ones."""
    from enface_batch.flows.scan import run_scan

    root = tmp_path / "archive"
    root.mkdir()
    shutil.copy(test_data / EX / "obama.jpg", root / "obama.jpg")
    lake = Lake(tmp_path / "lake")
    sid = setup_source(lake, str(root))
    uri = str(root / "obama.jpg")
    row = {"image_sha256": f"unreadable:{uri}", "uri": uri, "source_id": sid, "status": "error"}
    # ... and never wrote the file's files row, so the next run reads the file again
    lake.append("images", [{**row, "reason": "unreadable", "message": "EndpointConnectionError", "faces": 0}])
    run_scan(lake=lake.uri, runner="threads", workers=1)
    rows = lake.read("images").to_pylist()
    assert [(r["status"], r["reason"]) for r in rows] == [("faces", None)]


def test_enface_run_exits_6_when_the_source_store_is_down(tmp_path, monkeypatch, env):
    from conftest import _free_port
    from typer.testing import CliRunner

    from enface_batch.cli import EXIT_STORAGE, app
    from enface_batch.flows import prefect_server

    monkeypatch.setattr(prefect_server, "start", lambda: None)  # the session's Prefect server is used
    for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        monkeypatch.setenv(k, "testing")
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
    env("ENFACE_S3_ENDPOINT_URL", f"http://127.0.0.1:{_free_port()}")  # nothing listens there
    env("ENFACE_S3_RETRIES", 1)
    lake = Lake(tmp_path / "lake")
    setup_source(lake, "s3://archive/photos")
    result = CliRunner().invoke(app, ["run", "--lake", lake.uri])
    assert result.exit_code == EXIT_STORAGE, result.output
    assert "the storage failed" in result.output and "127.0.0.1" in result.output
    assert lake.read("images").num_rows == 0 and lake.writer_lock().read() is None
