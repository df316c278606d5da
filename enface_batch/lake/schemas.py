"""Arrow schemas of the tables, with their version. Embeddings are float32 lists."""

from __future__ import annotations

import pyarrow as pa

SCHEMA_VERSION = 1

point = pa.list_(pa.float32(), 2)

FACES = pa.schema(
    [
        ("image", pa.string()),  # the path or URI as given
        ("face_index", pa.int32()),  # 0 = largest face of the image
        ("bbox", pa.list_(pa.float32(), 4)),  # x1, y1, x2, y2 in original-image pixels
        ("bbox_pro", pa.list_(point, 4)),
        ("det_score", pa.float32()),
        ("landmarks", pa.list_(point, 5)),
        ("square", pa.float32()),
        ("yaw", pa.float32()),
        ("pitch", pa.float32()),
        ("roll", pa.float32()),
        ("embedding", pa.list_(pa.float32())),
        ("gender", pa.string()),
        ("gender_score", pa.float32()),
        ("age", pa.float32()),
        ("model", pa.string()),  # model pack version that produced the row
    ],
    metadata={"enface_schema_version": str(SCHEMA_VERSION), "table": "faces"},
)

IMAGES = pa.schema(
    [
        ("image", pa.string()),
        ("status", pa.string()),  # faces | no_faces | error
        ("reason", pa.string()),  # error code (empty, not_an_image, corrupt, truncated, too_large, unreadable)
        ("message", pa.string()),
        ("faces", pa.int32()),
        ("width", pa.int32()),
        ("height", pa.int32()),
        ("size_bytes", pa.int64()),
        ("format", pa.string()),
        ("spent_ms", pa.float32()),
    ],
    metadata={"enface_schema_version": str(SCHEMA_VERSION), "table": "images"},
)
