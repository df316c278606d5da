"""Load on the read-only endpoint: requests/s and p50/p99 latency under concurrent clients.

    python bench/api_load.py                       # 10k persons, 8 clients, 20 s per route
    python bench/api_load.py --persons 100000 --clients 16 --seconds 30

Builds a lake in a temporary folder: one person list of N synthetic persons (random unit 128-d embeddings, one
commit) plus one real enrolled face, a user and a permanent token. Starts `enface serve` in a subprocess on a
free port (models load on the first request, before timing), then for each route runs `--clients` threads, each
with its own HTTP connection, sending requests back to back for `--seconds`:

* POST /action: one photo with one face (obama.jpg from the test data, or the demo photo), searched in the list
  (person_list_search = the list, results = 10): decode, detect, align, embed and a FAISS search per request.
* POST /person: a person record by id (random ids of the list), JSON in and out: auth, snapshot, lookup.
* GET /person/lists: every list with its person counts.

Figures, never assertions. Latency is measured by the client (connection reuse, JSON parsing included).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import secrets
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

import httpx
import numpy as np

from enface_batch import auth
from enface_batch.lake.store import Lake, now
from enface_batch.ops import catalog
from enface_batch.settings import get_settings


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def photo() -> Path:
    cand = get_settings().test_data / "fixtures/face_recognition_examples/examples/obama.jpg"
    if cand.exists():
        return cand
    from enface_batch.models.fetch import DEMO_PHOTOS, ensure_files

    paths = ensure_files([m.target for m in DEMO_PHOTOS.members])
    return Path(next(p for p in paths.values() if "Tom_Hanks" in str(p)))


def build_lake(root: Path, n: int, image: Path) -> tuple[Lake, str, list[str], str]:
    from enface_batch.analyze import Analyzer
    from enface_batch.models import load_pack
    from enface_batch.ops.persons import create_person

    lake = Lake(root / "lake")
    list_id = catalog.create_list(lake, f"bench {n}")["list_id"]
    rng = np.random.default_rng(0)
    t = now()
    ids = []
    for start in range(0, n, 50_000):  # one commit per 50k rows keeps memory flat
        m = min(50_000, n - start)
        emb = rng.normal(size=(m, 128)).astype(np.float32)
        emb /= np.linalg.norm(emb, axis=1, keepdims=True)
        rows = [
            {
                "person_id": str(uuid.uuid4()),
                "list_id": list_id,
                "created": t,
                "updated": t,
                "status": "init",
                "fields": [f"synthetic {start + i}"],
                "features": "{}",
                "yaw": 0.0,
                "square": 120.0,
                "embedding": emb[i].tolist(),
                "model": "synthetic",
            }
            for i in range(m)
        ]
        ids += [r["person_id"] for r in rows]
        lake.append("persons", rows)
    made = create_person(lake, Analyzer(load_pack()), str(image), list_id=list_id, fields=["the real one"])
    ids.append(made["persons"][0]["person_id"])
    user = auth.add_user(lake, "bench@example.com", "bench-password")
    token = auth.create_token(lake, user["user_id"], expires="never")["token"]["token"]
    return lake, list_id, ids, token


def run(base: str, clients: int, seconds: float, make_request) -> dict:
    lat: list[float] = []
    errors: list[str] = []
    lock = threading.Lock()
    start = threading.Barrier(clients + 1)

    def worker(seed: int) -> None:
        rnd = random.Random(seed)
        mine, bad = [], []
        with httpx.Client(base_url=base, timeout=300) as c:
            start.wait()
            end = time.perf_counter() + seconds
            while time.perf_counter() < end:
                t0 = time.perf_counter()
                r = make_request(c, rnd)
                mine.append(time.perf_counter() - t0)
                if r.status_code != 200:
                    bad.append(f"{r.status_code} {r.text[:120]}")
        with lock:
            lat.extend(mine)
            errors.extend(bad)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(clients)]
    for t in threads:
        t.start()
    start.wait()
    t0 = time.perf_counter()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0
    ms = np.array(lat) * 1000
    return {
        "requests": len(lat),
        "errors": len(errors),
        "first_error": errors[0] if errors else None,
        "rps": round(len(lat) / wall, 1),
        "p50_ms": round(float(np.percentile(ms, 50)), 1),
        "p99_ms": round(float(np.percentile(ms, 99)), 1),
        "mean_ms": round(float(statistics.fmean(ms)), 1),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--persons", type=int, default=10_000)
    ap.add_argument("--clients", type=int, default=8)
    ap.add_argument("--seconds", type=float, default=20)
    ap.add_argument("--routes", default="action,person,lists")
    args = ap.parse_args()

    image = photo()
    with tempfile.TemporaryDirectory(prefix="enface-api-load-") as tmp:
        t0 = time.perf_counter()
        lake, list_id, ids, token = build_lake(Path(tmp), args.persons, image)
        built = time.perf_counter() - t0
        print(f"lake: {args.persons:,} synthetic persons + 1 real in one list, built in {built:.1f} s")
        port = free_port()
        env = {**os.environ, "ENFACE_JWT_SECRET": secrets.token_urlsafe(48)}
        log = open(Path(tmp) / "serve.log", "w")  # noqa: SIM115
        proc = subprocess.Popen(
            [sys.executable, "-m", "enface_batch", "serve", "--lake", lake.uri, "--port", str(port)],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
        )
        base = f"http://127.0.0.1:{port}"
        try:
            for _ in range(600):
                try:
                    if httpx.get(base + "/health", timeout=2).status_code == 200:
                        break
                except httpx.TransportError:
                    time.sleep(0.2)
            data = image.read_bytes()
            q = {"token": token}

            def action(c, _rnd):
                return c.post(
                    "/action",
                    params=q,
                    files={"image": (image.name, data)},
                    data={"person_list_search": list_id, "results": "10"},
                )

            def person(c, rnd):
                return c.post("/person", json={"person_id": rnd.choice(ids), "list_id": list_id, "token": token})

            def lists(c, _rnd):
                return c.get("/person/lists", params=q)

            routes = {"action": ("POST /action", action), "person": ("POST /person", person)}
            routes["lists"] = ("GET /person/lists", lists)
            with httpx.Client(base_url=base, timeout=300) as c:  # warm up: models, indexes, caches
                t1 = time.perf_counter()
                first = action(c, None)
                assert first.status_code == 200, first.text
                best = first.json()["results"][0]["faces"][0]["matches"][0]
                assert best["person_id"] == ids[-1], best
                print(f"first /action (loads the models, builds the index): {time.perf_counter() - t1:.1f} s")
                for _ in range(3):
                    action(c, None), person(c, random.Random(0)), lists(c, None)
            print(
                f"{platform.node()}: {os.cpu_count()} CPUs; {args.clients} clients, {args.seconds:g} s per route; "
                f"photo {image.name} ({len(data):,} bytes)"
            )
            print(f"{'route':<18} {'requests':>8} {'errors':>6} {'req/s':>8} {'p50 ms':>8} {'p99 ms':>8}")
            out = {}
            for key in args.routes.split(","):
                label, fn = routes[key]
                res = run(base, args.clients, args.seconds, fn)
                out[key] = res
                print(
                    f"{label:<18} {res['requests']:>8} {res['errors']:>6} {res['rps']:>8} "
                    f"{res['p50_ms']:>8} {res['p99_ms']:>8}"
                )
                if res["first_error"]:
                    print("  first error:", res["first_error"])
            print(json.dumps({"persons": args.persons, "clients": args.clients, "results": out}))
        finally:
            proc.terminate()
            proc.wait(timeout=30)
            log.close()


if __name__ == "__main__":
    main()
