"""The read-lake protocol: a Lake and the endpoint's reader Snapshot both provide it, so the read-only ops
(typed against ReadLake) run on either; only the Snapshot offers the light "__has_image" columns."""

from __future__ import annotations

import typing

from enface_batch.lake.protocols import ReadLake
from enface_batch.lake.reader import LakeReader, Snapshot
from enface_batch.lake.store import Lake
from enface_batch.ops import browse, catalog, identity, persons


def test_lake_and_snapshot_are_read_lakes(tmp_path):
    lake = Lake(str(tmp_path / "lake"))
    snap = LakeReader(lake).snapshot()
    assert isinstance(lake, ReadLake) and isinstance(snap, ReadLake)
    assert (lake.light_columns, snap.light_columns) == (False, True)
    # what the protocol names, both classes have with the same signature
    for name in ("read", "version"):
        assert typing.get_type_hints(getattr(Lake, name)) == typing.get_type_hints(getattr(Snapshot, name)), name
    assert catalog.list_lists(snap) == catalog.list_lists(lake)


def test_read_only_ops_are_typed_against_the_protocol():
    for fn in (
        browse.list_persons,
        browse.person_detail,
        browse.source_images,
        browse.image_locations,
        catalog.list_lists,
        catalog.list_groups,
        catalog.list_sources,
        catalog.get_source,
        persons.get_person,
        identity.photos_of,
        identity.person_sums,
    ):
        assert typing.get_type_hints(fn)["lake"] is ReadLake, fn.__qualname__
