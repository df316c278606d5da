"""Auto-enrolment over a folder: how many persons it creates against how many distinct people there are.

    python bench/enrolment.py            # face_recognition_examples and deepface_tests

Runs /action with auto-enrolment (threshold no_match, square 50, yaw 30; every face) over each set into a
fresh lake, then compares persons created with the labelled identities:
- face_recognition_examples: identity from the file or folder name (obama*, biden*, ...), single-face images;
- deepface_tests: identities from the "Yes" pairs of master.csv (connected components).
"""

from __future__ import annotations

import csv
import re
import tempfile
from collections import Counter, defaultdict
from pathlib import Path

from enface_batch import imaging
from enface_batch.analyze import Analyzer
from enface_batch.lake.store import Lake
from enface_batch.models import load_pack
from enface_batch.ops.action import action
from enface_batch.settings import get_settings


def fr_identity(path: str) -> str | None:
    p = Path(path)
    if "knn_examples" in p.parts and p.parent.name != "test":
        return p.parent.name
    name = re.sub(r"[-_]?(\d+|small|\d+p)$", "", p.stem.lower())
    return {
        "obama": "obama",
        "biden": "biden",
        "alex-lacamoire": "alex_lacamoire",
        "lin-manuel-miranda": "lin_manuel_miranda",
        "alex_lacamoire": "alex_lacamoire",
    }.get(name)


def deepface_identities(root: Path) -> dict[str, str]:
    parent: dict[str, str] = {}

    def find(x: str) -> str:
        parent.setdefault(x, x)
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    for row in csv.DictReader(open(root / "master.csv")):
        a, b = find(row["file_x"]), find(row["file_y"])
        if row["Decision"] == "Yes":
            parent[a] = b
    return {str(root / "images" / k): find(k) for k in parent}


def run(name: str, uris: list[str], label: dict[str, str | None], an: Analyzer) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        lake = Lake(tmp)
        out = action(lake, an, uris, multi=True, new_person_square_min=50, new_person_yaw_max=30)
        by_person: dict[str, Counter] = defaultdict(Counter)
        faces = 0
        for res in out["results"]:
            if len(res["faces"]) != 1 or label.get(res["image"]) is None:
                continue  # identity known only for single-face labelled photos
            faces += 1
            f = res["faces"][0]
            pid = (f["persons_created"] or f["matches"] or [{}])[0].get("person_id")
            if pid and (f["persons_created"] or f["matches"][0]["score"] >= 85):
                by_person[pid][label[res["image"]]] += 1
        people = {v for k, v in label.items() if k in {r["image"] for r in out["results"]} and v}
        created = lake.read("persons").num_rows
        pure = sum(c.most_common(1)[0][1] for c in by_person.values())
        split = Counter(c.most_common(1)[0][0] for c in by_person.values())
        print(
            f"{name}: {len(uris)} images, {sum(len(r['faces']) for r in out['results'])} faces; "
            f"{len(people)} labelled people; persons created {created} (all faces, incl. unlabelled ones); "
            f"labelled single-face photos {faces}: {len(by_person)} persons, purity {pure / max(faces, 1):.3f}, "
            f"people split over >1 person: {sorted(k for k, v in split.items() if v > 1)}"
        )


def main() -> None:
    data = Path(get_settings().test_data) / "fixtures"
    an = Analyzer(load_pack())
    fr = list(imaging.list_images([str(data / "face_recognition_examples/examples")]))
    run("face_recognition_examples", fr, {u: fr_identity(u) for u in fr}, an)
    df_root = data / "deepface_tests"
    ids = deepface_identities(df_root)
    df = sorted(ids)
    run("deepface_tests (master.csv images)", df, ids, an)


if __name__ == "__main__":
    main()
