"""The writer lock's one object on storage, changed only by compare-and-swap.

A lease is taken over when its holder stalled; a holder that wakes up between reading its lease and writing the
renewal must then fail, not overwrite the taker. So every change after creation names the version it read:

- local lakes: create with ``os.link`` (fails if the file exists); replace and delete under an exclusive
  ``flock`` on a guard file beside it, comparing the bytes read before;
- S3 (AWS, MinIO, moto): create with ``If-None-Match: *``; replace and delete with ``If-Match: <ETag>``;
- other fsspec stores: the same steps without atomicity (check, then act), as documented in lock.py.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import time
import uuid
from typing import Any

import fsspec
from fsspec.asyn import sync

# What a replace or delete must find unchanged: the bytes read (local, other stores) or the ETag (S3).
Tag = Any


class LeaseFile:
    """Check-then-act on any fsspec store (not atomic; the fallback)."""

    def __init__(self, fs: fsspec.AbstractFileSystem, path: str) -> None:
        self.fs, self.path = fs, path

    def read(self) -> tuple[bytes | None, Tag]:
        try:
            data = self.fs.cat_file(self.path)
        except FileNotFoundError:
            return None, None
        return data, data

    def create(self, body: bytes) -> bool:
        if self.fs.exists(self.path):
            return False
        self.fs.pipe_file(self.path, body)
        return True

    def replace(self, tag: Tag, body: bytes) -> bool:
        if self.read()[1] != tag:
            return False
        self.fs.pipe_file(self.path, body)
        return True

    def delete(self, tag: Tag) -> bool:
        if tag is None or self.read()[1] != tag:
            return False
        with contextlib.suppress(FileNotFoundError):
            self.fs.rm_file(self.path)
        return True


class LocalLeaseFile(LeaseFile):
    """A lease in a local directory; replace/delete serialised by flock on `<path>.guard`."""

    guard_wait = 10.0  # seconds; the guarded steps take microseconds unless a process is frozen inside one

    def _write_tmp(self, body: bytes) -> str:
        os.makedirs(os.path.dirname(self.path), exist_ok=True)
        tmp = f"{self.path}.{uuid.uuid4().hex}.tmp"
        with open(tmp, "wb") as f:
            f.write(body)
            f.flush()
            os.fsync(f.fileno())
        return tmp

    def create(self, body: bytes) -> bool:
        tmp = self._write_tmp(body)
        try:
            os.link(tmp, self.path)  # atomic, and fails if the lock exists; readers never see half a lock
            return True
        except FileExistsError:
            return False
        finally:
            os.unlink(tmp)

    @contextlib.contextmanager
    def _guard(self):
        os.makedirs(os.path.dirname(self.path), exist_ok=True)
        fd = os.open(f"{self.path}.guard", os.O_RDWR | os.O_CREAT, 0o644)
        try:
            deadline = time.monotonic() + self.guard_wait
            while True:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if time.monotonic() > deadline:
                        raise TimeoutError(f"{self.path}.guard stayed locked for {self.guard_wait:g} s") from None
                    time.sleep(0.01)
            yield
        finally:
            os.close(fd)  # also releases the flock

    def replace(self, tag: Tag, body: bytes) -> bool:
        tmp = self._write_tmp(body)
        try:
            with self._guard():
                if self.read()[1] != tag:
                    return False
                os.replace(tmp, self.path)  # readers see the old lease or the new one, never half of one
                return True
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)

    def delete(self, tag: Tag) -> bool:
        with self._guard():
            if tag is None or self.read()[1] != tag:
                return False
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.path)
            return True


class S3LeaseFile(LeaseFile):
    """A lease object on S3, changed by conditional requests on its ETag."""

    def __init__(self, fs: fsspec.AbstractFileSystem, path: str) -> None:
        super().__init__(fs, path)
        self.bucket, self.key, _ = fs.split_path(path)

    def read(self) -> tuple[bytes | None, Tag]:
        async def get() -> tuple[bytes, str]:
            resp = await self.fs._call_s3("get_object", Bucket=self.bucket, Key=self.key)
            async with resp["Body"] as body:
                return await body.read(), resp["ETag"]

        try:
            return sync(self.fs.loop, get)
        except FileNotFoundError:
            return None, None

    def create(self, body: bytes) -> bool:
        try:
            self.fs.pipe_file(self.path, body, mode="create")  # PUT with If-None-Match: *
            return True
        except FileExistsError:
            return False

    def _conditional(self, method: str, tag: Tag, **kw: Any) -> bool:
        if tag is None:
            return False
        try:
            self.fs.call_s3(method, Bucket=self.bucket, Key=self.key, IfMatch=tag, **kw)
        except (FileNotFoundError, OSError):
            # 412 (changed since it was read) or gone: the caller re-reads and decides from what it finds.
            return False
        finally:
            self.fs.invalidate_cache(self.path)
        return True

    def replace(self, tag: Tag, body: bytes) -> bool:
        return self._conditional("put_object", tag, Body=body)

    def delete(self, tag: Tag) -> bool:
        return self._conditional("delete_object", tag)


def lease_file(fs: fsspec.AbstractFileSystem, path: str) -> LeaseFile:
    protocols = fs.protocol if isinstance(fs.protocol, tuple) else (fs.protocol,)
    if "file" in protocols or "local" in protocols:
        return LocalLeaseFile(fs, path)
    if "s3" in protocols or "s3a" in protocols:
        return S3LeaseFile(fs, path)
    return LeaseFile(fs, path)
