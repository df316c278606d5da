"""`enface run` stopped by SIGTERM or SIGINT: exits non-zero, stops the Prefect server it started, frees the lake."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import psutil
import pytest

from enface_batch.lake.store import Lake


def _servers_of(pid: int) -> list[psutil.Process]:
    try:
        children = psutil.Process(pid).children(recursive=True)
    except psutil.NoSuchProcess:
        return []
    return [c for c in children if "prefect.server.api.server:create_app" in " ".join(c.cmdline())]


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_sigterm_of_enface_run_stops_its_prefect_server_and_releases_the_lake(tmp_path, test_data, sig):
    from test_scan_flow import build_archive, setup_source

    build_archive(tmp_path / "archive", test_data)
    lake = Lake(tmp_path / "lake")
    setup_source(lake, str(tmp_path / "archive"))
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    env.update(PREFECT_HOME=str(tmp_path / "prefect-home"), PYTHONPATH=os.getcwd(), PREFECT_LOGGING_LEVEL="INFO")
    proc = subprocess.Popen(
        [sys.executable, "-m", "enface_batch", "run", "--lake", lake.uri, "--chunk-size", "1"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        servers: list[psutil.Process] = []
        lines = []
        for line in proc.stderr:  # the flow has started once Prefect logs its run
            lines.append(line)
            servers = servers or _servers_of(proc.pid)
            if "Beginning flow run" in line:
                break
        servers = servers or _servers_of(proc.pid)
        assert servers, "".join(lines)[-3000:]
        os.kill(proc.pid, sig)
        code = proc.wait(timeout=120)
        gone, alive = psutil.wait_procs(servers, timeout=10)
        alive = [p for p in alive if p.status() != psutil.STATUS_ZOMBIE]  # exited, not yet reaped
    finally:
        if proc.poll() is None:
            proc.kill()
        for server in servers:  # the test's own grandchildren: never leave them running, pass or fail
            if server.is_running():
                server.kill()
    rest = proc.stderr.read()  # EOF only once no process holds the pipe
    assert code != 0, rest[-3000:]
    assert not alive, f"the temporary Prefect server outlived the command: {alive}"
    assert lake.writer_lock().read() is None, "the writer lock was left behind"
    assert "Traceback" not in rest, rest[-3000:]
