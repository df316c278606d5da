"""Arrow schemas of every table, with their version. Embeddings are float32 lists (Delta has no fixed-size
lists); timestamps are UTC microseconds; lists of uuids are list<string>."""

from __future__ import annotations

import pyarrow as pa

SCHEMA_VERSION = 3  # 2: person_faces holds every face of every person (score, how, source, run, action)
# 3: faces (and the detect export) gain age_bin, race and race_score

DEFAULT_LIST_ID = "13814001-1dd2-11b2-b619-5502c27ed19c"  # the seed's default person list
# Fixed ids for the default group and source, so every lake agrees on them.
DEFAULT_GROUP_ID = "13814001-1dd2-11b2-b619-5502c27ed19d"
DEFAULT_SOURCE_ID = "13814001-1dd2-11b2-b619-5502c27ed19e"

# A source's rules when its creator leaves them out: the seed's /source/create defaults (read-only: copy to change).
SOURCE_DEFAULTS = {
    "uri": None,
    "new_person_threshold": "never",
    "new_person_square_min": 112,
    "new_person_angle_max": 60,
    "person_list_add": [],
    "feature_check": [],
}
# The seed's /action and /person/create defaults: the default source's rules, which apply when a request names
# no group or source.
ACTION_DEFAULTS = {
    **SOURCE_DEFAULTS,
    "new_person_threshold": "no_match",
    "new_person_angle_max": 30,
    "person_list_add": [DEFAULT_LIST_ID],
}

ts = pa.timestamp("us", tz="UTC")
floats = pa.list_(pa.float32())
strings = pa.list_(pa.string())
point = pa.list_(pa.float32(), 2)


def _schema(name: str, fields: list[tuple[str, pa.DataType]]) -> pa.Schema:
    return pa.schema(fields, metadata={"enface_schema_version": str(SCHEMA_VERSION), "table": name})


# The face columns `enface detect` produces; shared by the faces table and the --out export.
FACE_COLUMNS: list[tuple[str, pa.DataType]] = [
    ("face_index", pa.int32()),  # 0 = largest face of the image
    ("bbox", pa.list_(pa.float32(), 4)),  # x1, y1, x2, y2 in original-image pixels
    ("bbox_pro", pa.list_(point, 4)),
    ("det_score", pa.float32()),
    ("landmarks", pa.list_(point, 5)),
    ("square", pa.float32()),
    ("yaw", pa.float32()),
    ("pitch", pa.float32()),
    ("roll", pa.float32()),
    ("embedding", floats),
    ("gender", pa.string()),
    ("gender_score", pa.float32()),
    ("age", pa.float32()),
    ("age_bin", pa.string()),  # FairFace's bin (0-2, 3-9, ..., more than 70); null when age was not asked
    ("race", pa.string()),  # one of FairFace's 7 perceived-race labels or "unknown"; null when not asked
    ("race_score", pa.float32()),  # the top class's probability
]
# Columns each schema version added to faces (the migration adds them to older lakes, nulls for old rows).
FACE_COLUMNS_ADDED = {3: ["age_bin", "race", "race_score"]}

# `enface detect --out F.parquet`: plain Parquet, not the lake.
FACES_EXPORT = _schema("faces_export", [("image", pa.string()), *FACE_COLUMNS, ("model", pa.string())])
IMAGES_EXPORT = _schema(
    "images_export",
    [
        ("image", pa.string()),
        ("status", pa.string()),  # faces | no_faces | error
        ("reason", pa.string()),  # empty, not_an_image, corrupt, truncated, too_large, unreadable
        ("message", pa.string()),
        ("faces", pa.int32()),
        ("width", pa.int32()),
        ("height", pa.int32()),
        ("size_bytes", pa.int64()),
        ("format", pa.string()),
        ("spent_ms", pa.float32()),
    ],
)

TABLES: dict[str, pa.Schema] = {
    "person_lists": _schema(
        "person_lists",
        [("list_id", pa.string()), ("name", pa.string()), ("created", ts)],
    ),
    "source_groups": _schema(
        "source_groups",
        [("group_id", pa.string()), ("name", pa.string()), ("person_list_search", strings), ("created", ts)],
    ),
    "sources": _schema(
        "sources",
        [
            ("source_id", pa.string()),
            ("group_id", pa.string()),
            ("name", pa.string()),
            ("uri", pa.string()),  # archive location: folder, s3://bucket/prefix, any fsspec URI
            ("new_person_threshold", pa.string()),  # 80 85 90 95 no_match never
            ("new_person_square_min", pa.int32()),  # 50 112 224
            ("new_person_angle_max", pa.int32()),  # 5..80 (the action's new_person_yaw_max)
            ("person_list_add", strings),
            ("feature_check", strings),
            ("created", ts),
        ],
    ),
    "persons": _schema(
        "persons",
        [
            ("person_id", pa.string()),
            ("list_id", pa.string()),
            ("created", ts),
            ("updated", ts),
            ("source_id", pa.string()),
            ("group_id", pa.string()),
            ("status", pa.string()),  # init
            ("fields", strings),
            ("features", pa.string()),  # JSON object: {"gender": ..., "age": ...}
            ("yaw", pa.float32()),
            ("square", pa.float32()),
            ("bbox", pa.list_(pa.float32(), 4)),
            ("embedding", floats),
            ("image", pa.binary()),  # JPEG of the face region; null after drop_image
            ("thumb", pa.binary()),  # 112x112 aligned JPEG; null after drop_image
            ("image_uri", pa.string()),  # where the face came from; null after drop_image
            ("image_sha256", pa.string()),
            ("face_index", pa.int32()),
            ("action_id", pa.string()),  # the actions row of the face that created it (null for person create)
            ("model", pa.string()),
        ],
    ),
    "files": _schema(
        "files",
        [
            ("uri", pa.string()),  # every path seen under a source: copies and renames each have a row
            ("source_id", pa.string()),
            ("sha256", pa.string()),  # the content it held when last read; joins images.image_sha256
            ("size_bytes", pa.int64()),
            ("mtime", pa.string()),  # modification time or ETag as the store reports it: unchanged => not re-read
            ("run_id", pa.string()),
            ("seen", ts),
        ],
    ),
    "images": _schema(
        "images",
        [
            ("image_sha256", pa.string()),  # content hash: a renamed copy is the same image
            ("uri", pa.string()),
            ("source_id", pa.string()),
            ("size_bytes", pa.int64()),
            ("width", pa.int32()),
            ("height", pa.int32()),
            ("format", pa.string()),
            ("status", pa.string()),  # faces | no_faces | error
            ("reason", pa.string()),
            ("message", pa.string()),
            ("faces", pa.int32()),
            ("run_id", pa.string()),
            ("scanned", ts),
            ("model", pa.string()),
        ],
    ),
    "faces": _schema(
        "faces",
        [
            ("image_sha256", pa.string()),
            ("uri", pa.string()),
            ("source_id", pa.string()),
            *FACE_COLUMNS,
            ("run_id", pa.string()),
            ("model", pa.string()),
        ],
    ),
    "actions": _schema(
        "actions",
        [
            ("action_id", pa.string()),
            ("run_id", pa.string()),
            ("created", ts),
            ("source_id", pa.string()),
            ("group_id", pa.string()),
            ("image_sha256", pa.string()),
            ("image_uri", pa.string()),  # null with drop_image
            ("face_index", pa.int32()),
            ("bbox", pa.list_(pa.float32(), 4)),
            ("square", pa.float32()),
            ("yaw", pa.float32()),
            (
                "matches",
                pa.list_(pa.struct([("person_id", pa.string()), ("list_id", pa.string()), ("score", pa.float32())])),
            ),
            ("persons_created", strings),
            ("decision", pa.string()),  # matched | created | never | below_square | above_yaw | no_add_list
            ("rules", pa.string()),  # JSON: the effective threshold, square, yaw, lists and where each came from
            ("spent_ms", pa.float32()),
        ],
    ),
    # Who is in which photo: one row per face and list, naming the face's current person in that list. Every
    # operation that changes persons keeps it true (scan, enrol, person create/replace/delete, dedup); a
    # person's template (what new faces are matched against) is the mean of its rows' embeddings.
    "person_faces": _schema(
        "person_faces",
        [
            ("person_id", pa.string()),
            ("list_id", pa.string()),
            ("face_id", pa.string()),  # uuid5(list, image_sha256, face_index): a face has one person per list
            ("embedding", floats),
            ("image_sha256", pa.string()),
            ("image_uri", pa.string()),  # null with drop_image
            ("face_index", pa.int32()),
            ("thumb", pa.binary()),  # 112x112 aligned JPEG; null for faces matched by a scan and with drop_image
            ("from_person_id", pa.string()),  # the person it belonged to before a merge
            ("added", ts),
            ("score", pa.float32()),  # Enface % against the person's template when matched; null when it made it
            ("how", pa.string()),  # created | matched | enrolled | merged | replaced | moved
            ("source_id", pa.string()),  # the scanned source (null for person create / enrol)
            ("run_id", pa.string()),
            ("action_id", pa.string()),  # the actions row of the face (scans and `enface action`)
        ],
    ),
    "merges": _schema(
        "merges",
        [
            ("merge_id", pa.string()),
            ("run_id", pa.string()),
            ("list_id", pa.string()),
            ("kept_person_id", pa.string()),
            ("merged_person_ids", strings),
            ("score", pa.float32()),  # the lowest link score that joined the cluster
            ("created", ts),
        ],
    ),
    "users": _schema(
        "users",
        [("user_id", pa.string()), ("email", pa.string()), ("password_hash", pa.string()), ("created", ts)],
    ),
    "tokens": _schema(
        "tokens",
        [
            ("token_id", pa.string()),
            ("user_id", pa.string()),
            ("token_hash", pa.string()),
            ("created", ts),
            ("expires", ts),  # null = never
        ],
    ),
}
