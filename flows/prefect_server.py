"""Start the temporary Prefect API early, beside the scan's own start-up, instead of after it.

With no PREFECT_API_URL, Prefect starts a temporary API server when the first flow runs: it imports its server
package in the calling process (~2.4 s on the 2-core box) and then waits for a uvicorn subprocess to answer
(~3.5 s), all before the flow's first line and after our own imports and model loading. `start()` launches the
same server process (Prefect's own app factory, as Prefect's SubprocessASGIServer runs it) as the first thing
`enface run` does, and `api_url()` waits for it only when the flow is about to start; the scan then runs
against it like against any Prefect server. Whenever a Prefect API is configured, nothing here runs; if the
early server fails to answer, Prefect's own start-up is used as before.
"""

from __future__ import annotations

import atexit
import importlib.util
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

_proc: subprocess.Popen | None = None
_url: str | None = None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wanted() -> bool:
    from prefect.settings import get_current_settings

    settings = get_current_settings()
    return not settings.api.url and settings.server.ephemeral.enabled


def start() -> None:
    """Launch the temporary server without waiting for it (idempotent; a no-op when PREFECT_API_URL is set).

    Launched before `prefect` itself is imported (~1 s); api_url() checks the profile's settings afterwards.
    """
    global _proc, _url
    spec = importlib.util.find_spec("prefect")
    if _proc is not None or os.environ.get("PREFECT_API_URL") or spec is None or spec.origin is None:
        return
    port = _free_port()
    env = {**os.environ, "PREFECT_UI_ENABLED": "0", "PREFECT__SERVER_EPHEMERAL": "1", "PREFECT__SERVER_FINAL": "1"}
    # fmt: off
    cmd = [
        sys.executable, "-m", "uvicorn", "--app-dir", str(Path(spec.origin).parents[1]),
        "--factory", "prefect.server.api.server:create_app", "--host", "127.0.0.1", "--port", str(port),
        "--log-level", "error", "--lifespan", "on",
    ]
    # fmt: on
    _proc = subprocess.Popen(cmd, env=env, stdin=subprocess.DEVNULL)
    _url = f"http://127.0.0.1:{port}/api"
    atexit.register(stop)


def api_url(timeout: float = 120.0) -> str | None:
    """The early server's API URL once it answers; None (after stopping it) if there is none or it failed."""
    if _proc is None or _url is None:
        return None
    if not _wanted():  # a profile names a server, or forbids temporary ones
        stop()
        return None
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and _proc.poll() is None:
        try:
            with urllib.request.urlopen(f"{_url}/health", timeout=2) as resp:
                if resp.status == 200:
                    return _url
        except OSError:
            time.sleep(0.05)
    stop()
    return None


def run_flow(flow_, /, **kwargs):
    """Call a flow against the configured Prefect API, or else the early temporary server (started here if
    start() was not called yet): the run, its logs and artifacts are recorded either way."""
    start()
    url = api_url()
    if url is None:
        return flow_(**kwargs)
    from prefect.settings import PREFECT_API_URL, temporary_settings

    # Worker processes and Dask workers started by the flow inherit the variable; it is put back afterwards so
    # that a later call in the same process (tests drive the CLI in-process) finds this server again.
    saved = os.environ.get("PREFECT_API_URL")
    os.environ["PREFECT_API_URL"] = url
    try:
        with temporary_settings({PREFECT_API_URL: url}):
            return flow_(**kwargs)
    finally:
        if saved is None:
            os.environ.pop("PREFECT_API_URL", None)
        else:
            os.environ["PREFECT_API_URL"] = saved


def stop() -> None:
    global _proc, _url
    if _proc is not None:
        _proc.terminate()
        try:
            _proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            _proc.kill()
            _proc.wait()
    _proc, _url = None, None
