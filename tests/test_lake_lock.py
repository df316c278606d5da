"""One writer per lake: a second writer fails naming the holder, stale locks are taken over, local and S3."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
from datetime import UTC, datetime, timedelta

import pytest

from enface_batch.lake.lock import LakeLocked, LockLost, WriterLock
from enface_batch.lake.store import Lake


def _write_lock(lake: Lake, **holder) -> dict:
    lock = lake.writer_lock()
    body = {
        "token": "someone-else",
        "host": "other-host",
        "pid": 1,
        "command": "enface run nightly",
        "started": datetime.now(UTC).isoformat(),
        "heartbeat": datetime.now(UTC).isoformat(),
        "expires": (datetime.now(UTC) + timedelta(minutes=5)).isoformat(),
        **holder,
    }
    lock.fs.makedirs(lock.path.rsplit("/", 1)[0], exist_ok=True)
    lock.fs.pipe_file(lock.path, json.dumps(body).encode())
    return body


def test_a_held_lock_refuses_a_second_writer_naming_the_holder(lake):
    _write_lock(lake)
    with pytest.raises(LakeLocked) as info:
        with lake.writer_lock():
            pass
    msg = str(info.value)
    assert "enface run nightly" in msg and "pid 1 on other-host" in msg and "enface lake unlock" in msg
    assert lake.writer_lock().read()["token"] == "someone-else"  # left alone


def test_a_stale_lock_is_taken_over_and_released_on_exit(lake):
    old = _write_lock(lake, expires=(datetime.now(UTC) - timedelta(seconds=1)).isoformat())
    with lake.writer_lock("test writer") as held:
        assert held.took_over == old
        current = held.read()
        assert current["command"] == "test writer" and current["pid"] == os.getpid()
        assert current["host"] == socket.gethostname()
        with lake.writer_lock():  # re-entrant within a process (the CLI holds it, then the flow takes it)
            pass
        assert held.read()["token"] == held.token
    assert lake.writer_lock().read() is None  # released on exit


def test_a_lock_of_a_dead_process_on_this_host_is_stale_at_once(lake):
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    _write_lock(lake, host=socket.gethostname(), pid=proc.pid)
    with lake.writer_lock() as held:
        assert held.took_over["pid"] == proc.pid


def test_the_lease_is_renewed_and_a_lost_lock_stops_writes(lake):
    fs, root = lake.fs, lake.fs_path()
    lock = WriterLock(fs, root, lake.uri, ttl=0.6)
    with lock:
        first = lock.read()
        renewed, deadline = first, time.time() + 10  # a renewal every ttl/3; a loaded machine may be late
        while renewed["expires"] == first["expires"] and time.time() < deadline:
            time.sleep(0.1)
            renewed = lock.read()
        assert renewed["token"] == first["token"] and renewed["expires"] > first["expires"]
        # Another writer takes it over while this one stalled. Written again until seen: a heartbeat that read
        # its own lock just before may overwrite the first write (the holder never stalls in this test).
        deadline = time.time() + 10
        while not lock.lost and time.time() < deadline:
            _write_lock(lake)
            time.sleep(0.2)
        with pytest.raises(LockLost):
            lake.append("person_lists", [{"list_id": "x", "name": "x"}])
    assert lock.read()["token"] == "someone-else"  # a lost lock is not deleted on release


TAKER = textwrap.dedent(
    """
    import sys, time
    from enface_batch.lake.store import Lake
    lock = Lake(sys.argv[1], create=False).writer_lock("taker process")
    lock.acquire()
    print("took over " + (lock.took_over or {}).get("command", "nothing"), flush=True)
    time.sleep(600)
    """
)


def test_a_holder_stalled_between_reading_and_renewing_its_lease_cannot_overwrite_the_taker(lake):
    """The renewal is a compare-and-swap: the stalled holder learns it lost the lake instead of stealing it back."""
    lock = WriterLock(lake.fs, lake.fs_path(), lake.uri, command="stalled holder", ttl=60)
    lock.acquire()
    lock._stop.set()  # no heartbeat thread: the test drives the renewals
    lock._thread.join()
    # The holder froze for longer than its lease: its lock now reads as expired.
    holder, tag = lock._read_tagged()
    expired = {**holder, "expires": (datetime.now(UTC) - timedelta(seconds=1)).isoformat()}
    assert lock.file.replace(tag, json.dumps(expired).encode())
    real_replace, taker = lock.file.replace, []

    def renew_after_a_takeover(tag, body):
        # The holder has read its lease; before it writes the renewal, another writer takes the lake over.
        env = {**os.environ, "PYTHONPATH": os.getcwd()}
        proc = subprocess.Popen([sys.executable, "-c", TAKER, lake.uri], stdout=subprocess.PIPE, text=True, env=env)
        taker.append(proc)
        assert proc.stdout.readline().strip() == "took over stalled holder"
        return real_replace(tag, body)

    lock.file.replace = renew_after_a_takeover
    try:
        lock.renew()
        assert lock.lost
        assert lock.read()["command"] == "taker process"  # the taker's lease stands
        with pytest.raises(LockLost):
            lake.append("person_lists", [{"list_id": "x", "name": "x"}])
        lock.release()
        assert lock.read()["command"] == "taker process"  # and the loser's release leaves it alone
    finally:
        for proc in taker:
            proc.kill()
            proc.wait()


HOLDER = textwrap.dedent(
    """
    import sys, time
    from enface_batch.lake.store import Lake
    lock = Lake(sys.argv[1], create=False).writer_lock("holder process")
    lock.acquire()
    print("held", flush=True)
    time.sleep(600)
    """
)


def test_two_processes_on_an_s3_lake(s3_endpoint, tmp_path):
    """Create-exclusive on S3 is a conditional PUT (If-None-Match: *), which moto's server honours."""
    import uuid

    uri = f"s3://enface/{uuid.uuid4().hex}"
    Lake(uri)
    env = {**os.environ, "PYTHONPATH": os.getcwd()}
    proc = subprocess.Popen([sys.executable, "-c", HOLDER, uri], stdout=subprocess.PIPE, text=True, env=env)
    try:
        assert proc.stdout.readline().strip() == "held"
        lake = Lake(uri)
        with pytest.raises(LakeLocked) as info:
            lake.writer_lock().acquire()
        assert f"pid {proc.pid}" in str(info.value) and "holder process" in str(info.value)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    with lake.writer_lock() as held:  # its holder died without releasing it: stale at once on this host
        assert held.took_over["pid"] == proc.pid
    assert lake.writer_lock().read() is None


def test_the_s3_lock_is_created_exclusively(s3_endpoint):
    import uuid

    lake = Lake(f"s3://enface/{uuid.uuid4().hex}", create=False)
    a, b = lake.writer_lock("a"), lake.writer_lock("b")
    assert a._create() is True
    assert b._create() is False  # the conditional PUT lost: the first writer's lock stays
    assert a.read()["command"] == "a"


def test_two_enface_runs_on_one_lake_the_second_fails_naming_the_first_and_nothing_is_duplicated(tmp_path, test_data):
    from test_scan_flow import EXPECTED, build_archive, counts, setup_source

    build_archive(tmp_path / "archive", test_data)
    lake = Lake(tmp_path / "lake")
    setup_source(lake, str(tmp_path / "archive"))
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    env.update(PREFECT_HOME=str(tmp_path / "prefect-home"), PYTHONPATH=os.getcwd())
    run = [sys.executable, "-m", "enface_batch", "run", "--lake", lake.uri]
    first = subprocess.Popen(run, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    lock = lake.writer_lock()
    deadline = time.time() + 120
    while lock.read() is None and first.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    assert lock.read()["pid"] == first.pid
    second = subprocess.run(run, env=env, capture_output=True, text=True, timeout=300)
    other = subprocess.run(
        [sys.executable, "-m", "enface_batch", "list", "create", "x", "--lake", lake.uri],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    out, errs = first.communicate(timeout=600)
    assert first.returncode == 0, errs[-2000:]
    for p in (second, other):
        assert p.returncode == 5, p.stderr[-2000:]
        assert f"pid {first.pid}" in p.stderr and "enface run --lake" in p.stderr and "enface lake unlock" in p.stderr
    assert counts(lake) == EXPECTED  # nothing analysed or committed twice
    assert lake.read("person_lists").num_rows == 2  # the default list and the source's; "x" was refused
    assert lock.read() is None  # released when the first run ended


def test_opening_a_lake_that_needs_setup_waits_for_the_writer_but_a_complete_lake_opens_at_once(lake):
    """Creating missing tables (or a schema upgrade) is a write: it takes the lock; a complete lake needs none."""
    _write_lock(lake)
    assert Lake(lake.uri).has_table("persons")  # nothing to set up: opens while another writer holds the lake
    lake.fs.rm(lake.fs_path("sources"), recursive=True)
    assert not Lake(lake.uri, create=False).has_table("sources")
    with pytest.raises(LakeLocked):
        Lake(lake.uri)
    lake.fs.rm_file(lake.writer_lock().path)
    again = Lake(lake.uri)
    assert again.has_table("sources") and again.read("sources").num_rows == 1  # the default source
    assert again.writer_lock().read() is None
