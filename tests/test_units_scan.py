"""Scanning with the fake model pack (tests/fakepack.py): no real weights, no ../shared/data.

chunks() cuts the work into worker tasks; ScanWriter stages rows, commits them with the images rows (the
"done" markers) last, and recover() removes exactly what a killed run left behind.
"""

from __future__ import annotations

import shutil

import pytest
from fakepack import identity_photo, write_pack

from enface_batch.analyze import Analyzer
from enface_batch.lake.schemas import DEFAULT_GROUP_ID, DEFAULT_LIST_ID
from enface_batch.lake.store import Lake
from enface_batch.models import load_pack
from enface_batch.ops import catalog
from enface_batch.scan import Plan, ScanWriter, analyze_chunk, chunks, plan, scan_source
from enface_batch.scan_plan import FileEntry


# ------------------------------------------------------------------------------------------------ chunks
def _plan(sizes: list[int]) -> Plan:
    files = [FileEntry(f"f{i}", s, "") for i, s in enumerate(sizes)]
    return Plan({}, files, [], [(f.uri, f"sha{i}") for i, f in enumerate(files)], {})


def test_chunks_hold_at_most_max_images_in_listing_order():
    got = list(chunks(_plan([1] * 7), max_images=3))
    assert got == [["f0", "f1", "f2"], ["f3", "f4", "f5"], ["f6"]]
    assert list(chunks(_plan([]))) == []


def test_chunks_hold_at_most_max_bytes_but_a_big_file_still_gets_a_task():
    got = list(chunks(_plan([6, 6, 6, 20, 1, 1]), max_images=10, max_bytes=12))
    assert got == [["f0", "f1"], ["f2"], ["f3"], ["f4", "f5"]]  # 6+6 = 12 fits; the 20-byte file goes alone


def test_chunks_cover_only_the_contents_to_analyse():
    p = _plan([1, 1, 1])
    p.analyse = [("f2", "x"), ("f0", "y")]  # the plan's order (f1 was unchanged or a copy)
    assert list(chunks(p)) == [["f2", "f0"]]


# ------------------------------------------------------------------------------------------------ ScanWriter
@pytest.fixture(scope="module")
def analyzer(tmp_path_factory):
    return Analyzer(load_pack(str(write_pack(tmp_path_factory.mktemp("fakepack"), identities=True)), threads=1))


@pytest.fixture
def archive(tmp_path):
    """Ann twice, Bob once plus a byte copy of his photo, and a file that is no image: 5 files, 4 contents."""
    root = tmp_path / "archive"
    root.mkdir()
    identity_photo(root / "a1.png", 1, 0)
    identity_photo(root / "a2.png", 1, 1)
    identity_photo(root / "b1.png", 2, 0)
    shutil.copy(root / "b1.png", root / "b1_copy.png")
    (root / "c_notes.png").write_text("not an image")
    return root


@pytest.fixture
def lake(tmp_path, archive):
    lake = Lake(tmp_path / "lake")
    sid = catalog.create_source(
        lake,
        "cam",
        DEFAULT_GROUP_ID,
        uri=str(archive),
        new_person_threshold="90",
        new_person_square_min=50,  # the fake faces are 96 px
        person_list_add=[DEFAULT_LIST_ID],
    )["source_id"]
    lake.sid = sid
    return lake


def _count(lake: Lake, table: str) -> int:
    return lake.read(table, where={"source_id": lake.sid}).num_rows


def test_rows_are_staged_then_committed_with_the_images_rows_last(lake, analyzer, monkeypatch):
    p = plan(lake, lake.sid)
    assert len(p.files) == 5 and len(p.analyse) == 4  # the copy is not analysed again
    calls = []
    for name in ("append", "upsert"):
        real = getattr(lake, name)
        monkeypatch.setattr(
            lake, name, lambda table, rows, *a, _real=real, **k: calls.append(table) or _real(table, rows, *a, **k)
        )
    writer = ScanWriter(lake, analyzer, p, commit_images=3, commit_seconds=1e9)
    uris = [u for u, _ in p.analyse]
    writer.write(analyze_chunk(analyzer, uris[:2], writer.features))
    assert calls == [] and _count(lake, "images") == 0 and _count(lake, "faces") == 0  # staged only

    writer.write(analyze_chunk(analyzer, uris[2:], writer.features))  # 4 >= 3: commit
    assert calls == ["persons", "person_faces", "faces", "actions", "images", "files"]
    s = writer.finish()
    assert calls[6:] == []  # all was committed, the copy's files row with its content's
    assert (_count(lake, "images"), _count(lake, "faces"), _count(lake, "actions"), _count(lake, "persons")) == (
        4,
        3,
        3,
        2,
    )
    assert _count(lake, "files") == 5
    assert (s.images_new, s.images_failed, s.faces, s.duplicates) == (4, 1, 3, 1)
    assert (s.persons_created, s.faces_matched) == (2, 1)  # Ann's second photo matched her first
    status = dict(zip(*lake.read("images", columns=["uri", "status"]).to_pydict().values(), strict=True))
    assert status[uris[-1]] == "error" and list(status.values()).count("faces") == 3  # c_notes.png is no image


def test_a_commit_is_due_at_the_time_bound_too(lake, analyzer):
    p = plan(lake, lake.sid)
    writer = ScanWriter(lake, analyzer, p, commit_images=100, commit_seconds=0.0)
    writer.write(analyze_chunk(analyzer, [p.analyse[0][0]], writer.features))
    assert _count(lake, "images") == 1


def test_recover_deletes_what_a_killed_run_left_and_the_rerun_completes_it(lake, analyzer, monkeypatch):
    p = plan(lake, lake.sid)
    writer = ScanWriter(lake, analyzer, p, commit_images=2, commit_seconds=1e9)
    uris = [u for u, _ in p.analyse]
    writer.write(analyze_chunk(analyzer, uris[:2], writer.features))  # committed: Ann x2
    assert _count(lake, "images") == 2

    real_append = lake.append

    def killed(table, rows, *a, **k):
        if table == "images":
            raise KeyboardInterrupt("killed before the done markers")
        return real_append(table, rows, *a, **k)

    monkeypatch.setattr(lake, "append", killed)
    with pytest.raises(KeyboardInterrupt):
        writer.write(analyze_chunk(analyzer, uris[2:], writer.features))  # Bob and the bad file
    monkeypatch.setattr(lake, "append", real_append)
    assert (_count(lake, "images"), _count(lake, "faces"), _count(lake, "persons")) == (2, 3, 2)  # orphans

    p2 = plan(lake, lake.sid)
    assert [u for u, _ in p2.analyse] == uris[2:]  # what has a marker is done
    removed = ScanWriter(lake, analyzer, p2).recover()
    assert removed == {"persons": 1, "person_faces": 1, "faces": 1, "actions": 1}  # Bob only
    assert (_count(lake, "images"), _count(lake, "faces"), _count(lake, "persons")) == (2, 2, 1)

    s = scan_source(lake, analyzer, lake.sid)
    assert s.recovered_rows == {} and s.images_new == 2
    assert (_count(lake, "images"), _count(lake, "faces"), _count(lake, "persons")) == (4, 3, 2)  # once each

    again = scan_source(lake, analyzer, lake.sid)  # nothing changed: nothing read, nothing written
    assert (again.files_unchanged, again.images_new) == (5, 0)
    assert (_count(lake, "images"), _count(lake, "faces"), _count(lake, "persons")) == (4, 3, 2)
