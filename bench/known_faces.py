"""What the writer's "faces that already have a person" set costs to load and hold, and a lookup, for N face ids.

    python bench/known_faces.py --sizes 1000000,10000000

The writer reads every face id of person_faces on its first chunk (ops/action.py, _known_faces). Before: a
Python set of the strings; now: ops.identity.FaceIdSet (16 bytes an id, sorted). Prints seconds to build from
the Arrow column, MB held (tracemalloc) and microseconds per lookup, for both.
"""

from __future__ import annotations

import argparse
import time
import tracemalloc

import pyarrow as pa

from enface_batch.ops.identity import FaceIdSet, new_ids


def measure(make, column, queries) -> tuple[float, float, float]:
    tracemalloc.start()
    t0 = time.perf_counter()
    known = make(column)
    built = time.perf_counter() - t0
    held = tracemalloc.get_traced_memory()[0] / 1e6
    tracemalloc.stop()
    t0 = time.perf_counter()
    for q in queries:
        _ = q in known
    return built, held, (time.perf_counter() - t0) / len(queries) * 1e6


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="100000,1000000")
    args = ap.parse_args()
    print(f"{'ids':>10} {'kind':>10} {'build s':>8} {'MB':>8} {'lookup us':>10}")
    for n in (int(x) for x in args.sizes.split(",")):
        ids = new_ids(n)
        column = pa.array(ids)
        queries = ids[:5000] + new_ids(5000)
        del ids
        for name, make in (("set", lambda c: set(c.to_pylist())), ("FaceIdSet", FaceIdSet)):
            built, held, lookup = measure(make, column, queries)
            print(f"{n:>10,} {name:>10} {built:>8.2f} {held:>8.0f} {lookup:>10.2f}")


if __name__ == "__main__":
    main()
