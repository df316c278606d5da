"""One writer per lake: a lease object, `_lock/writer.json`, created exclusively and renewed while held.

Delta commits are atomic, but two scans of one lake would each analyse the same new files and both commit
them: every image, face, action and person twice, silently. So every writing entry point (the scan, enrol,
dedup and reindex flows, and the CLI's writing commands) holds this lock; readers never take it.

- Create-exclusive: a local lake links a fully written temporary file into place (``os.link`` fails if the
  lock exists, so no reader ever sees a half-written lock); an S3 lake uses a conditional put
  (``If-None-Match: *``, s3fs ``mode="create"``; AWS S3, MinIO and moto honour it). Other fsspec stores get a
  check-then-write, which is not atomic.
- The lock names its holder (host, pid, command, start) and carries a lease: the holder renews ``expires``
  every third of ENFACE_LOCK_TTL_SECONDS. A lock whose lease ran out, or whose holder is a dead process on this
  host, is stale and the next writer takes it over. A holder that finds its lock taken over (it stalled for a
  whole lease) marks it lost, and the lake refuses its further writes.
- Taking over re-reads the stale lock just before deleting it, so two writers that both found it stale do not
  both win; a window of a few milliseconds remains between that read and the delete.
"""

from __future__ import annotations

import contextlib
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
        self.command = command or " ".join([os.path.basename(sys.argv[0]), *sys.argv[1:]]).strip() or "python"
        self.ttl = float(ttl if ttl is not None else get_settings().lock_ttl_seconds)
        self.token = uuid.uuid4().hex
        self.lost = False
        self.took_over: dict[str, Any] | None = None  # the stale holder this lock replaced, if any
        self._depth = 0
        self._started = ""
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def _local(self) -> bool:
        return "file" in (self.fs.protocol if isinstance(self.fs.protocol, tuple) else (self.fs.protocol,))

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

    def read(self) -> dict[str, Any] | None:
        """The current holder, None when unlocked; {} for a lock that does not parse."""
        try:
            data = self.fs.cat_file(self.path)
        except FileNotFoundError:
            return None
        try:
            holder = json.loads(data)
        except (ValueError, UnicodeDecodeError):
            return {}
        return holder if isinstance(holder, dict) else {}

    def _create(self) -> bool:
        """Write the lock if there is none; False if there is one."""
        self._started = _now().isoformat()
        body = self._body()
        if self._local:
            parent = os.path.dirname(self.path)
            os.makedirs(parent, exist_ok=True)
            tmp = f"{self.path}.{self.token}.tmp"
            with open(tmp, "wb") as f:
                f.write(body)
                f.flush()
                os.fsync(f.fileno())
            try:
                os.link(tmp, self.path)  # atomic, and fails if the lock exists
                return True
            except FileExistsError:
                return False
            finally:
                os.unlink(tmp)
        if "s3" in self.fs.protocol or "s3a" in self.fs.protocol:
            try:
                self.fs.pipe_file(self.path, body, mode="create")  # PUT with If-None-Match: *
                return True
            except FileExistsError:
                return False
        if self.fs.exists(self.path):  # other stores: not atomic (see the module docstring)
            return False
        self.fs.pipe_file(self.path, body)
        return True

    def _overwrite(self) -> None:
        body = self._body()
        if self._local:
            tmp = f"{self.path}.{self.token}.tmp"
            with open(tmp, "wb") as f:
                f.write(body)
            os.replace(tmp, self.path)  # readers see the old lease or the new one, never half of one
        else:
            self.fs.pipe_file(self.path, body)

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
                holder = self.read()
                if holder is None:
                    continue  # released meanwhile: try again
                if not is_stale(holder):
                    raise LakeLocked(self.lake_uri, self.uri, holder)
                # Stale: delete it only if it is still the same lock, then race for it like everyone else.
                if self.read() == holder:
                    with contextlib.suppress(FileNotFoundError):
                        self.fs.rm_file(self.path)
                    self.took_over = holder
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
        current = self.read()
        if not current or current.get("token") != self.token:
            self.lost = True  # taken over: this process must stop writing
            return
        self._overwrite()

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
        current = held.read()
        if current and current.get("token") == held.token:
            with contextlib.suppress(FileNotFoundError):
                held.fs.rm_file(held.path)

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
