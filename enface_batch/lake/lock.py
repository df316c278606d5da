"""One writer per lake: a lease object, `_lock/writer.json`, created exclusively and renewed while held.

Delta commits are atomic, but two scans of one lake would each analyse the same new files and both commit
them: every image, face, action and person twice, silently. So every writing entry point (the scan, enrol,
dedup and reindex flows, and the CLI's writing commands) holds this lock; readers never take it.

- Create-exclusive: a local lake links a fully written temporary file into place (``os.link`` fails if the
  lock exists, so no reader ever sees a half-written lock); an S3 lake uses a conditional put
  (``If-None-Match: *``, s3fs ``mode="create"``; AWS S3, MinIO and moto honour it).
- The lock names its holder (host, pid, command, start) and carries a lease: the holder renews ``expires``
  every third of ENFACE_LOCK_TTL_SECONDS. A lock whose lease ran out, or whose holder is a dead process on this
  host, is stale and the next writer takes it over. A holder that finds its lock taken over (it stalled for a
  whole lease) marks it lost, and the lake refuses its further writes.
- Every later change (renew, take over, release) is a compare-and-swap on the version read just before (see
  lease.py: flock-guarded on a local lake, ``If-Match: <ETag>`` on S3), so a holder that stalls between reading
  its lease and renewing it cannot overwrite the writer that took over meanwhile, and two writers that both
  found a lock stale cannot both win. Other fsspec stores get check-then-act, which is not atomic.
"""

from __future__ import annotations

import json
import os
import socket
import sys
import threading
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import fsspec

from ..settings import get_settings
from .lease import Tag, lease_file

LOCK_PATH = "_lock/writer.json"

# Locks this process holds, by lock path: the CLI takes the lock and the flow it starts takes it again.
_held: dict[str, WriterLock] = {}
_held_guard = threading.Lock()


class LakeLocked(RuntimeError):
    """Another writer holds the lake."""

    def __init__(self, lake_uri: str, lock_uri: str, holder: dict[str, Any]) -> None:
        self.lake_uri, self.lock_uri, self.holder = lake_uri, lock_uri, holder
        who = (
            f"`{holder.get('command', '?')}` (pid {holder.get('pid', '?')} on {holder.get('host', '?')}), "
            f"started {holder.get('started', '?')}, last heartbeat {holder.get('heartbeat', '?')}"
        )
        super().__init__(
            f"the lake {lake_uri} is being written by {who}. One writer per lake: wait for it to finish. If that "
            f"process is gone, its lock is stale after {holder.get('expires', '?')} and the next writer takes it "
            f"over; to break it now run `enface lake unlock --lake {lake_uri} --force` (or delete {lock_uri})."
        )

    def __reduce__(self) -> tuple:
        return (type(self), (self.lake_uri, self.lock_uri, self.holder))


class LockLost(RuntimeError):
    """This process's lock was taken over (it did not renew it in time): it must not write any more."""


def _now() -> datetime:
    return datetime.now(UTC)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def is_stale(holder: dict[str, Any], now: datetime | None = None) -> bool:
    """Whether a lock can be taken over: its lease ran out, or its holder is a dead process on this host."""
    try:
        expires = datetime.fromisoformat(holder["expires"])
    except (KeyError, TypeError, ValueError):
        return True  # not a lock this code wrote, or a torn one from a store without atomic writes
    if (now or _now()) > expires:
        return True
    pid = holder.get("pid")
    return holder.get("host") == socket.gethostname() and isinstance(pid, int) and not _pid_alive(pid)


class WriterLock:
    """The writer lock of one lake; a context manager. Re-entrant within a process."""

    def __init__(
        self,
        fs: fsspec.AbstractFileSystem,
        root: str,
        lake_uri: str,
        *,
        command: str | None = None,
        ttl: float | None = None,
    ) -> None:
        self.fs, self.lake_uri = fs, lake_uri
        self.path = f"{root.rstrip('/')}/{LOCK_PATH}"
        self.uri = f"{lake_uri}/{LOCK_PATH}"
        self.file = lease_file(fs, self.path)
        self.command = command or " ".join([os.path.basename(sys.argv[0]), *sys.argv[1:]]).strip() or "python"
        self.ttl = float(ttl if ttl is not None else get_settings().lock_ttl_seconds)
        self.token = uuid.uuid4().hex
        self.lost = False
        self.took_over: dict[str, Any] | None = None  # the stale holder this lock replaced, if any
        self._depth = 0
        self._started = ""
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # -- the lease object ---------------------------------------------------------------------------------
    def _body(self) -> bytes:
        now = _now()
        return json.dumps(
            {
                "token": self.token,
                "host": socket.gethostname(),
                "pid": os.getpid(),
                "command": self.command,
                "started": self._started,
                "heartbeat": now.isoformat(),
                "expires": (now + timedelta(seconds=self.ttl)).isoformat(),
                "ttl_seconds": self.ttl,
            },
            indent=1,
        ).encode()

    def _read_tagged(self) -> tuple[dict[str, Any] | None, Tag]:
        """The current holder (None when unlocked, {} for a lock that does not parse) and its version."""
        data, tag = self.file.read()
        if data is None:
            return None, None
        try:
            holder = json.loads(data)
        except (ValueError, UnicodeDecodeError):
            return {}, tag
        return (holder if isinstance(holder, dict) else {}), tag

    def read(self) -> dict[str, Any] | None:
        """The current holder, None when unlocked; {} for a lock that does not parse."""
        return self._read_tagged()[0]

    def _create(self) -> bool:
        """Write the lock if there is none; False if there is one."""
        self._started = _now().isoformat()
        return self.file.create(self._body())

    # -- acquire, renew, release ----------------------------------------------------------------------------
    def acquire(self) -> WriterLock:
        """Take the lock (or, in a process that holds it already, share that hold); LakeLocked if another
        writer holds it."""
        with _held_guard:
            held = _held.get(self.uri)
            if held is not None and not held.lost:
                held._depth += 1
                return held
            for _ in range(3):
                if self._create():
                    break
                holder, tag = self._read_tagged()
                if holder is None:
                    continue  # released meanwhile: try again
                if not is_stale(holder):
                    raise LakeLocked(self.lake_uri, self.uri, holder)
                # Stale: replace it only if it is still the version just read. Of two writers that both found
                # it stale, one wins; a holder that wakes up later fails its own conditional renewal.
                self._started = _now().isoformat()
                if self.file.replace(tag, self._body()):
                    self.took_over = holder
                    break
            else:
                raise LakeLocked(self.lake_uri, self.uri, self.read() or {})
            self._depth = 1
            self.lost = False
            _held[self.uri] = self
        self._stop.clear()
        self._thread = threading.Thread(target=self._heartbeat, name="lake-lock-heartbeat", daemon=True)
        self._thread.start()
        return self

    def _heartbeat(self) -> None:
        while not self._stop.wait(self.ttl / 3):
            try:
                self.renew()
            except Exception:  # a store hiccup: the next beat tries again, well before the lease runs out
                continue
            if self.lost:
                return

    def renew(self) -> None:
        current, tag = self._read_tagged()
        if not current or current.get("token") != self.token:
            self.lost = True  # taken over: this process must stop writing
            return
        if not self.file.replace(tag, self._body()):
            # Changed between the read and the write: taken over just now, unless the store failed.
            current = self.read()
            if not current or current.get("token") != self.token:
                self.lost = True

    def release(self) -> None:
        with _held_guard:
            held = _held.get(self.uri)
            if held is None:
                return
            held._depth -= 1
            if held._depth > 0:
                return
            del _held[self.uri]
        held._stop.set()
        if held._thread is not None and held._thread is not threading.current_thread():
            held._thread.join(timeout=5)
        current, tag = held._read_tagged()
        if current and current.get("token") == held.token:
            held.file.delete(tag)  # only this version: a lock taken over meanwhile stays

    def __enter__(self) -> WriterLock:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()


def check_not_lost(lake_uri: str) -> None:
    """Raise LockLost if this process held the lake's lock and another writer took it over."""
    held = _held.get(f"{lake_uri}/{LOCK_PATH}")
    if held is not None and held.lost:
        raise LockLost(
            f"this process lost the writer lock of {lake_uri} (it was not renewed for {held.ttl:g} s and another "
            "writer took it over); it stops writing"
        )


def release_all() -> None:
    """Release every lock this process holds, whatever its depth (for a forced exit after a signal)."""
    with _held_guard:
        held = list(_held.values())
    for lock in held:
        lock._depth = 1
        lock.release()
