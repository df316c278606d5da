"""What a scan of one source has to do: list its files (refusing what must not be read), hash the changed ones,
and compare with the lake (files and images tables) to plan which contents to analyse. Reads only.

scan.py runs the plan: chunks for the workers, and the one writer that commits the results.
"""

from __future__ import annotations

import hashlib
import os
import stat
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import cached_property

from . import fsio
from .lake.protocols import ReadLake
from .ops.catalog import get_source


@dataclass(frozen=True)
class FileEntry:
    uri: str
    size: int
    mtime: str
    # Set when the listing already shows the file must not be read (a FIFO, a device, a link out of the
    # source): an imaging reason code and its message. Such files are recorded, never opened.
    refused: str | None = None
    message: str | None = None


def _mtime(info: dict) -> str:
    for key in ("mtime", "LastModified", "last_modified", "ETag", "etag", "created"):
        if info.get(key) is not None:
            return str(info[key])
    return ""


def list_files(uri: str) -> list[FileEntry]:
    """Every non-hidden file under a source URI with its size and modification stamp, in sorted order.

    Local folders are walked without following links to folders; links to files are listed as what they point
    at, unless that is outside the source or not a regular file (see _local_entry).
    """
    if "://" not in uri and "::" not in uri:
        return _list_local(uri)
    fs, root = fsio.url_to_fs(uri)
    if fs.isfile(root):
        infos = {root: fs.info(root)}
    else:
        infos = fs.find(root, detail=True, withdirs=False)
    out = []
    prefix = uri[: len(uri) - len(uri.split("://", 1)[-1])] if "://" in uri else ""
    for path, info in sorted(infos.items()):
        rel = path[len(root.rstrip("/")) + 1 :] if path != root else path.rsplit("/", 1)[-1]
        if any(part.startswith(".") for part in rel.split("/")):
            continue
        full = prefix + path if prefix and not path.startswith(prefix) else path
        out.append(FileEntry(full, int(info.get("size") or 0), _mtime(info)))
    return out


def _inside(path: str, root: str) -> bool:
    return path == root or path.startswith(root.rstrip(os.sep) + os.sep)


def _local_entry(path: str, real_root: str | None) -> FileEntry:
    """A listed local file; refused (with a reason) when reading it could hang or leave the source."""
    try:
        lst = os.lstat(path)
    except OSError as exc:  # vanished since the walk: record why
        return FileEntry(path, 0, "", "unreadable", f"cannot read {path} ({exc.strerror})")
    link = stat.S_ISLNK(lst.st_mode)
    if link:
        target = os.path.realpath(path)
        try:
            st = os.stat(path)
        except OSError:
            return FileEntry(
                path, lst.st_size, str(lst.st_mtime), "unreadable", f"{path} is a broken symbolic link to {target}"
            )
    else:
        st = lst
    # Own size and time for refused entries: a link or FIFO left as it is stays skipped on later runs.
    own = (path, lst.st_size, str(lst.st_mtime))
    if not stat.S_ISREG(st.st_mode):
        what = f"a symbolic link to {target}, a" if link else "a"
        msg = f"{path} is {what} {fsio.file_kind(st.st_mode)}, not a regular file; only regular files are read"
        return FileEntry(*own, "not_a_regular_file", msg)
    if link and real_root is not None and not _inside(target, real_root):
        msg = (
            f"{path} is a symbolic link to {target}, outside the source folder; links out of a source are not followed"
        )
        return FileEntry(*own, "outside_source", msg)
    return FileEntry(path, st.st_size, str(st.st_mtime))  # what fsspec's local listing reported


def _list_local(uri: str) -> list[FileEntry]:
    root = os.path.abspath(uri)
    if not os.path.isdir(root):
        return [] if not os.path.lexists(root) else [_local_entry(root, None)]  # a single file: as named
    real_root = os.path.realpath(root)
    out: list[FileEntry] = []
    # followlinks=False: a linked folder is never walked into (no loops, no escaping the source); one that
    # points out of the source is recorded so its missing photos have an explanation.
    for dirpath, dirs, files in os.walk(root, followlinks=False):
        keep = []
        for d in dirs:
            if d.startswith("."):
                continue
            p = os.path.join(dirpath, d)
            if not os.path.islink(p):
                keep.append(d)
            elif not _inside(os.path.realpath(p), real_root):
                lst = os.lstat(p)
                msg = (
                    f"{p} is a symbolic link to the folder {os.path.realpath(p)}, outside the source folder; "
                    "links out of a source are not followed"
                )
                out.append(FileEntry(p, lst.st_size, str(lst.st_mtime), "outside_source", msg))
        dirs[:] = sorted(keep)
        out.extend(_local_entry(os.path.join(dirpath, n), real_root) for n in files if not n.startswith("."))
    return sorted(out, key=lambda e: e.uri)


def file_sha256(uri: str) -> str:
    """Hash in blocks: the archive may hold files far larger than memory should."""
    h = hashlib.sha256()
    for block in fsio.read_blocks(uri):
        h.update(block)
    return h.hexdigest()


def hash_files(
    entries: Iterable[FileEntry], threads: int = 8
) -> Iterator[tuple[FileEntry, str | None, Exception | None]]:
    """(entry, sha256, error) in input order. sha256 is None when the file cannot be read: then error says why
    (a bad file is analysed to record why; a storage failure is left for the next run)."""

    def one(e: FileEntry) -> tuple[FileEntry, str | None, Exception | None]:
        try:
            return e, file_sha256(e.uri), None
        except Exception as exc:  # fsspec back ends raise anything from OSError to botocore errors
            return e, None, exc

    with ThreadPoolExecutor(max_workers=threads, thread_name_prefix="hash") as pool:
        yield from pool.map(one, entries)


@dataclass
class Plan:
    """What a run has to do for one source."""

    source: dict
    files: list[FileEntry]
    unchanged: list[FileEntry]
    analyse: list[tuple[str, str]]  # (uri, sha256) of contents never analysed, first path of each
    aliases: dict[str, list[FileEntry]]  # sha256 -> every changed file holding it (for the files table)
    refused: list[FileEntry] = field(default_factory=list)  # changed files recorded without reading them
    storage_failed: list[tuple[FileEntry, str]] = field(default_factory=list)  # (file, message): retried next run
    stale_errors: set[str] = field(default_factory=set)  # "unreadable:<uri>" image rows of files now readable
    recorded: set[str] = field(default_factory=set)  # uris the files table already has a row for (any state)

    def key(self, uri: str) -> str:
        """The images key a file of this plan is recorded under: its content hash, or unreadable:<uri>."""
        return self._keys.get(uri) or f"unreadable:{uri}"

    @cached_property
    def _keys(self) -> dict[str, str]:
        return {uri: sha for uri, sha in self.analyse if sha}


def plan(lake: ReadLake, source_id: str, *, hash_threads: int = 8) -> Plan:
    source = get_source(lake, source_id)
    if not source["uri"]:
        raise ValueError(f"source {source['name']!r} ({source_id}) has no uri to scan; set one with `enface apply`")
    files = list_files(source["uri"])
    sid = source["source_id"]
    file_rows = lake.read("files", where={"source_id": sid}, columns=["uri", "size_bytes", "mtime"]).to_pylist()
    known_files = {(r["uri"], r["size_bytes"], r["mtime"]) for r in file_rows}
    known = set(lake.read("images", where={"source_id": sid}, columns=["image_sha256"])["image_sha256"].to_pylist())
    unchanged = [f for f in files if (f.uri, f.size, f.mtime) in known_files]
    changed = [f for f in files if (f.uri, f.size, f.mtime) not in known_files]
    analyse: list[tuple[str, str]] = []
    aliases: dict[str, list[FileEntry]] = {}
    refused: list[FileEntry] = []
    storage_failed: list[tuple[FileEntry, str]] = []
    for entry in changed:
        if entry.refused:
            key = f"unreadable:{entry.uri}"
            if key not in known:
                refused.append(entry)
            aliases.setdefault(key, []).append(entry)
    readable = [f for f in changed if not f.refused]
    for entry, sha, error in hash_files(readable, threads=hash_threads):
        if error is not None and fsio.is_transient(error):
            # The storage failed, not the file: recording it would hide the file from every later run.
            storage_failed.append((entry, f"cannot read {entry.uri}: {type(error).__name__}: {error}"))
            continue
        key = sha or f"unreadable:{entry.uri}"
        if key not in known and key not in aliases:
            analyse.append((entry.uri, sha or ""))
        aliases.setdefault(key, []).append(entry)
    # Rows an earlier run wrote for files it could not read (storage outages before they were told apart):
    # replaced by the row of the content once it is read.
    stale = {f"unreadable:{e.uri}" for k, es in aliases.items() if not k.startswith("unreadable:") for e in es}
    stale &= known
    recorded = {r["uri"] for r in file_rows}
    return Plan(source, files, unchanged, analyse, aliases, refused, storage_failed, stale, recorded)
