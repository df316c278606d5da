"""One way to reach files at any URI: every fsspec filesystem the project opens is made here.

S3 settings (ENFACE_S3_ENDPOINT_URL, the AWS_* variables, timeouts and retries) used to be passed by some
callers and forgotten by others, so listing an archive honoured the endpoint and reading its images did not.
Everything now goes through :func:`url_to_fs` / :func:`open_uri`, and delta-rs gets the same settings from
:func:`storage_options`.
"""

from __future__ import annotations

import errno
import os
import time
from collections.abc import Iterator
from typing import Any

import fsspec

from .settings import get_settings

_S3 = ("s3://", "s3a://")


def _endpoint() -> str | None:
    return get_settings().s3_endpoint_url or os.environ.get("AWS_ENDPOINT_URL")


def storage_options(uri: str) -> dict[str, str]:
    """delta-rs options for object stores, from ENFACE_S3_ENDPOINT_URL / the standard AWS_* variables."""
    if not uri.startswith(_S3):
        return {}
    opts: dict[str, str] = {}
    endpoint = _endpoint()
    if endpoint:
        opts["AWS_ENDPOINT_URL"] = endpoint
        if endpoint.startswith("http://"):
            opts["AWS_ALLOW_HTTP"] = "true"
    for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_REGION"):
        if os.environ.get(key):
            opts[key] = os.environ[key]
    opts.setdefault("AWS_REGION", os.environ.get("AWS_DEFAULT_REGION", "us-east-1"))
    return opts


def fsspec_options(uri: str) -> dict[str, Any]:
    """s3fs options matching storage_options(): endpoint, per-request timeouts and retries."""
    if not uri.startswith(_S3):
        return {}
    s = get_settings()
    opts: dict[str, Any] = {
        # Per request: a stalled connection fails (and is retried) instead of hanging a scan thread. botocore
        # retries each request; s3fs retries connection errors again around it (5 times, ~2 s of back-off).
        "config_kwargs": {
            "connect_timeout": 10,
            "read_timeout": min(60.0, s.read_timeout_seconds),
            "retries": {"max_attempts": s.s3_retries, "mode": "standard"},
        },
    }
    endpoint = _endpoint()
    if endpoint:
        opts["client_kwargs"] = {"endpoint_url": endpoint}
    return opts


def url_to_fs(uri: str) -> tuple[fsspec.AbstractFileSystem, str]:
    """(filesystem, path) for a local path or URI, configured as above."""
    return fsspec.core.url_to_fs(uri, **fsspec_options(uri))


def open_uri(uri: str, mode: str = "rb", **kwargs: Any) -> fsspec.core.OpenFile:
    """fsspec.open with the project's S3 settings (use as a context manager)."""
    return fsspec.open(uri, mode, **fsspec_options(uri), **kwargs)


def is_local(uri: str) -> bool:
    """A path on this machine (a plain path or a file:// URI)."""
    return ("://" not in uri and "::" not in uri) or uri.startswith("file://")


# -- reading files that may never end -------------------------------------------------------------------------
# A scanned folder is input we do not control: a FIFO blocks open() until someone writes to it, /dev/zero (or
# a symlink to it) never reaches EOF, a network mount can stall. Reads here only open regular files, stop
# one byte past a cap, and give up after a deadline, so one such file cannot hang a scan.


class NotRegularFile(OSError):
    """A FIFO, device, socket or folder where a file was expected."""

    def __init__(self, uri: str, kind: str) -> None:
        super().__init__(f"{uri} is a {kind}, not a regular file")
        self.uri, self.kind = uri, kind


class FileTooLarge(OSError):
    def __init__(self, uri: str, size: int | None, limit: int) -> None:
        what = f"is {size:,} bytes" if size is not None else f"has more than {limit:,} bytes"
        super().__init__(f"{uri} {what}, over the {limit:,}-byte limit; raise ENFACE_MAX_FILE_BYTES to read it")
        self.uri, self.size, self.limit = uri, size, limit


class ReadTimedOut(TimeoutError):
    def __init__(self, uri: str, seconds: float) -> None:
        super().__init__(
            f"reading {uri} took longer than {seconds:g} s; raise ENFACE_READ_TIMEOUT_SECONDS if the store is slow"
        )
        self.uri = uri


def file_kind(mode: int) -> str:
    import stat

    for test, name in (
        (stat.S_ISREG, "regular file"),
        (stat.S_ISDIR, "folder"),
        (stat.S_ISFIFO, "FIFO (named pipe)"),
        (stat.S_ISCHR, "character device"),
        (stat.S_ISBLK, "block device"),
        (stat.S_ISSOCK, "socket"),
    ):
        if test(mode):
            return name
    return "special file"


def _local_path(uri: str) -> str:
    return uri[len("file://") :] if uri.startswith("file://") else uri


def _open_local_regular(uri: str):
    """Open a local regular file for reading; refuse anything else without blocking on it.

    O_NONBLOCK makes open() of a FIFO return at once (instead of waiting for a writer); fstat on the open
    descriptor then says what it is, with no window for the path to be swapped between check and open.
    """
    import stat

    fd = os.open(_local_path(uri), os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            kind = file_kind(st.st_mode)
            if kind == "folder":
                raise IsADirectoryError(f"{uri} is a folder, not a file")
            raise NotRegularFile(uri, kind)
        os.set_blocking(fd, True)
        return os.fdopen(fd, "rb"), st.st_size
    except BaseException:
        os.close(fd)
        raise


def read_blocks(
    uri: str, *, limit: int | None = None, timeout: float | None = None, block: int = 1 << 20
) -> Iterator[bytes]:
    """The bytes of a regular file (local path or URI) in blocks, refusing what would never end.

    Raises NotRegularFile, FileTooLarge (from the size before reading, or after reading one byte past
    ``limit``), ReadTimedOut, or the store's own error. Defaults: ENFACE_MAX_FILE_BYTES and
    ENFACE_READ_TIMEOUT_SECONDS.
    """
    s = get_settings()
    limit = s.max_file_bytes if limit is None else limit
    timeout = s.read_timeout_seconds if timeout is None else timeout
    deadline = time.monotonic() + timeout
    if is_local(uri):
        fh, size = _open_local_regular(uri)
    else:
        fs, path = url_to_fs(uri)
        size = fs.size(path)  # None where the store cannot say (some HTTP servers)
        if size is not None and size > limit:
            raise FileTooLarge(uri, size, limit)
        fh = fs.open(path, "rb")
    with fh:
        if size is not None and size > limit:
            raise FileTooLarge(uri, size, limit)
        total = 0
        while True:
            # Read one byte past the limit: a file that grows, or reports size 0, is still caught.
            chunk = fh.read(min(block, limit + 1 - total))
            if not chunk:
                return
            total += len(chunk)
            if total > limit:
                raise FileTooLarge(uri, None, limit)
            if time.monotonic() > deadline:
                raise ReadTimedOut(uri, timeout)
            yield chunk


def read_capped(uri: str, *, limit: int | None = None, timeout: float | None = None) -> bytes:
    """All bytes of a regular file, with :func:`read_blocks`' guards."""
    return b"".join(read_blocks(uri, limit=limit, timeout=timeout))


# -- telling a storage outage from a bad file ------------------------------------------------------------------
_TRANSIENT_ERRNOS = frozenset(
    getattr(errno, name)
    for name in (
        "ECONNREFUSED",
        "ECONNRESET",
        "ECONNABORTED",
        "ETIMEDOUT",
        "EHOSTUNREACH",
        "ENETUNREACH",
        "ENETDOWN",
        "EPIPE",
        "EAGAIN",
        "EBUSY",
        "EREMOTEIO",
    )
    if hasattr(errno, name)
)
_TRANSIENT_NAMES = frozenset(
    {
        # botocore / aiohttp / urllib3 names, matched by name so none of them has to be installed
        "EndpointConnectionError",
        "ConnectionClosedError",
        "ConnectTimeoutError",
        "ReadTimeoutError",
        "ProxyConnectionError",
        "HTTPClientError",
        "ResponseStreamingError",
        "IncompleteReadError",
        "ClientConnectorError",
        "ClientOSError",
        "ServerDisconnectedError",
        "ClientPayloadError",
        "ServerTimeoutError",
        "FSTimeoutError",
        "ProtocolError",
        "IncompleteRead",
    }
)


def is_transient(exc: BaseException) -> bool:
    """Whether an error says the storage failed (connection refused or reset, timeout, HTTP 5xx, throttling)
    rather than the file: such a read is worth retrying later, and its file must not be marked bad."""
    seen: set[int] = set()
    cur: BaseException | None = exc
    while cur is not None and id(cur) not in seen:
        seen.add(id(cur))
        if isinstance(cur, ReadTimedOut | ConnectionError | TimeoutError):
            return True
        if isinstance(cur, NotRegularFile | FileTooLarge | FileNotFoundError | IsADirectoryError | PermissionError):
            return False
        if type(cur).__name__ in _TRANSIENT_NAMES:
            return True
        if isinstance(cur, OSError) and cur.errno in _TRANSIENT_ERRNOS:
            return True
        response = getattr(cur, "response", None)  # botocore ClientError
        if isinstance(response, dict):
            status = response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0
            code = str(response.get("Error", {}).get("Code", ""))
            if status >= 500 or code in {"SlowDown", "ServiceUnavailable", "InternalError", "RequestTimeout"}:
                return True
        cur = cur.__cause__ or cur.__context__
    return False
