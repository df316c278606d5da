"""The read-only endpoint, tested over real HTTP: `enface serve` runs in a subprocess on a free port over a lake
built from real photos (persons enrolled, a source scanned), and the tests talk to it with httpx.

Covered: every route with good input; the seed's error codes with bad input (401 missing/expired/garbage token,
403 wrong password, 400 bad uuid / corrupt / oversize upload / too many images / creation asked of /action,
404 unknown person); 405 on the seed's write routes; the /v1 prefix; new commits seen without restart; a
writer committing while 8 clients query (only whole snapshots, no errors); a schemathesis run over the OpenAPI
schema (no 5xx); and the HTML page in headless Chromium (log in, click to a person, thumbs render).
"""

from __future__ import annotations

import base64
import collections
import io
import os
import shutil
import subprocess
import sys
import threading
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

httpx = pytest.importorskip("httpx", reason="the api extra (and httpx) is needed for the endpoint tests")
pytest.importorskip("fastapi", reason="the api extra is needed for the endpoint tests")
jwt = pytest.importorskip("jwt", reason="the api extra (pyjwt) is needed for the endpoint tests")

from serving import free_port, serving  # noqa: E402

from enface_batch import auth  # noqa: E402
from enface_batch.lake.schemas import DEFAULT_GROUP_ID, DEFAULT_LIST_ID, TABLES  # noqa: E402
from enface_batch.lake.store import Lake, now  # noqa: E402
from enface_batch.ops import catalog, persons  # noqa: E402

EX = "fixtures/face_recognition_examples/examples"
SECRET = "test-only-secret-" + uuid.uuid4().hex  # made per run; never a default in code
EMAIL, PASSWORD = "analyst@example.com", "correct horse"
PHOTOS = ["obama2.jpg", "biden.jpg", "two_people.jpg", "alex-lacamoire.png", "obama_small.jpg"]
WRITE_ROUTES = {
    "/person/create": ("POST", "enface person create"),
    "/person/update": ("POST", "enface person update"),
    "/person/delete": ("DELETE", "enface person delete"),
    "/person/list/create": ("POST", "enface list create"),
    "/source/create": ("POST", "enface source create"),
    "/source/group/create": ("POST", "enface group create"),
}
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


class Server:
    def __init__(self, base: str, lake: Lake, ids: dict, ex: Path) -> None:
        self.base, self.lake, self.ids, self.ex = base, lake, ids, ex
        self.http = httpx.Client(base_url=base, timeout=120)
        r = self.http.post("/user/login", json={"email": EMAIL, "password": PASSWORD, "valid_days": 2})
        assert r.status_code == 200, r.text
        self.jwt = r.json()["token"]
        self.h = {"token": self.jwt}

    def photo(self, name: str) -> bytes:
        return (self.ex / name).read_bytes()


@pytest.fixture(scope="module")
def server(tmp_path_factory, test_data, analyzer):
    """A lake with enrolled persons (list vip), a scanned source (auto-enrolled list scanned), a user with
    tokens; `enface serve` over it in a subprocess."""
    from enface_batch.ops.dedup import dedup
    from enface_batch.scan import scan_source

    ex = test_data / EX
    root = tmp_path_factory.mktemp("api")
    photos = root / "photos"
    photos.mkdir()
    for name in PHOTOS:
        shutil.copy(ex / name, photos / name)
    lake = Lake(root / "lake")
    vip = catalog.create_list(lake, "vip")["list_id"]
    obama = persons.create_person(lake, analyzer, str(ex / "obama.jpg"), list_id=vip, fields=["Barack Obama"])
    biden = persons.create_person(lake, analyzer, str(ex / "biden.jpg"), list_id=vip, fields=["Joe Biden"])
    scanned = catalog.create_list(lake, "scanned")["list_id"]
    group = catalog.create_group(lake, "archive", [vip, scanned])["group_id"]
    source = catalog.create_source(
        lake,
        "photos",
        group,
        uri=str(photos),
        new_person_threshold="no_match",
        new_person_square_min=50,
        person_list_add=[scanned],
    )["source_id"]
    scan_source(lake, analyzer, source)
    dedup(lake, scanned, threshold="80")  # a lake the way users leave it: scanned, then de-duplicated
    user = auth.add_user(lake, EMAIL, PASSWORD)
    forever = auth.create_token(lake, user["user_id"], expires="never")["token"]["token"]
    expired = str(uuid.uuid4())
    lake.append(
        "tokens",
        [
            {
                "token_id": str(uuid.uuid4()),
                "user_id": user["user_id"],
                "token_hash": auth.token_hash(expired),
                "created": now() - timedelta(days=3),
                "expires": now() - timedelta(days=1),
            }
        ],
    )
    ids = {
        "vip": vip,
        "scanned": scanned,
        "group": group,
        "source": source,
        "obama": obama["persons"][0]["person_id"],
        "biden": biden["persons"][0]["person_id"],
        "user": user["user_id"],
        "forever": forever,
        "expired": expired,
    }
    with serving(lake.uri, root / "serve.log", SECRET) as base:
        srv = Server(base, lake, ids, ex)
        yield srv
        srv.http.close()


def _versions(lake: Lake) -> dict:
    return {t: lake.version(t) for t in TABLES}


def _ok(r, code: int = 200):
    assert r.status_code == code, r.text
    return r.json()


def _err(r, code: int, *words: str) -> str:
    assert r.status_code == code, r.text
    body = r.json()
    assert body["status"] == "error"
    for w in words:
        assert w.lower() in body["message"].lower(), body["message"]
    return body["message"]


# -- startup ----------------------------------------------------------------------------------------------------------
def test_serve_refuses_to_start_without_a_jwt_secret(tmp_path):
    lake = Lake(tmp_path / "lake")
    env = {k: v for k, v in os.environ.items() if k != "ENFACE_JWT_SECRET"}
    env["PYTHONPATH"] = os.getcwd()
    out = subprocess.run(
        [sys.executable, "-m", "enface_batch", "serve", "--lake", lake.uri, "--port", str(free_port())],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,  # no .env here
        timeout=120,
    )
    assert out.returncode == 2
    assert "ENFACE_JWT_SECRET" in out.stderr


def test_cli_user_and_tokens(tmp_path):
    lake = str(tmp_path / "lake")
    env = {**os.environ, "ENFACE_PASSWORD": "s3cret-pw", "PYTHONPATH": os.getcwd()}

    def enface(*args):
        return subprocess.run(
            [sys.executable, "-m", "enface_batch", *args, "--lake", lake], capture_output=True, text=True, env=env
        )

    import json

    made = enface("user", "add", "Someone@Example.com")
    assert made.returncode == 0, made.stderr
    assert json.loads(made.stdout)["email"] == "someone@example.com"
    assert enface("user", "add", "someone@example.com").returncode == 2  # exists
    tok = json.loads(enface("token", "create", "--email", "someone@example.com", "--valid-days", "3").stdout)
    token = tok["token"]["token"]
    assert uuid.UUID(token) and tok["token"]["expires"] != "never"
    never = json.loads(enface("token", "create", "--email", "someone@example.com", "--expires", "never").stdout)
    assert never["token"]["expires"] == "never"
    listed = json.loads(enface("token", "ls", "--email", "someone@example.com").stdout)
    assert {t["token_id"] for t in listed} == {tok["token"]["token_id"], never["token"]["token_id"]}
    stored = Lake(lake).read("tokens").to_pylist()
    assert token not in str(stored) and auth.token_hash(token) in {r["token_hash"] for r in stored}
    users = Lake(lake).read("users").to_pylist()
    assert users[0]["password_hash"].startswith("$argon2id$") and "s3cret-pw" not in users[0]["password_hash"]
    assert enface("token", "create", "--email", "nobody@example.com").returncode == 4


# -- users and tokens -------------------------------------------------------------------------------------------------
def test_login_gives_a_jwt_valid_valid_days(server):
    claims = jwt.decode(server.jwt, SECRET, algorithms=["HS256"], issuer="enface-batch")
    assert claims["sub"] == server.ids["user"]
    assert claims["exp"] - claims["iat"] == 2 * 86400
    _err(server.http.post("/user/login", json={"email": EMAIL, "password": "wrong password"}), 403, "credentials")
    _err(server.http.post("/user/login", json={"email": "x@example.com", "password": PASSWORD}), 403)
    _err(server.http.post("/user/login", json={"email": EMAIL, "password": "short"}), 400, "password")
    _err(server.http.post("/user/login", json={"email": "not-an-email", "password": PASSWORD}), 400, "email")
    _err(server.http.post("/user/login", json={"email": EMAIL, "password": PASSWORD, "valid_days": 0}), 400)
    _err(server.http.post("/user/login", content=b"{not json", headers={"content-type": "application/json"}), 400)
    assert _ok(server.http.post("/v1/user/login", json={"email": EMAIL.upper(), "password": PASSWORD}))["token"]


def test_permanent_tokens_created_listed_and_accepted_as_parameter(server):
    http = server.http
    made = _ok(http.post("/token/create", json={"valid_days": 1.5}, headers=server.h), 201)
    assert made["message"] == "new token created"
    token = made["token"]["token"]
    exp = datetime.fromisoformat(made["token"]["expires"].replace("Z", "+00:00"))
    assert timedelta(hours=35) < exp - datetime.now(UTC) <= timedelta(hours=36)
    when = (datetime.now(UTC) + timedelta(days=30)).isoformat()
    # JSON field token; the operator's never-expiring token may mint a 30-day one (a 1.5-day one may not)
    at = _ok(http.post("/token/create", json={"expires": when, "token": server.ids["forever"]}), 201)
    assert at["token"]["expires"].startswith(when[:16]) and not at["token"]["capped"]
    listed = _ok(http.get("/tokens", params={"token": token}))  # query token
    assert {made["token"]["token_id"], at["token"]["token_id"]} <= {t["token_id"] for t in listed}
    assert all(token != t.get("token") for t in listed)
    assert [t for t in listed if t["expired"]]  # the fixture's expired token
    _err(http.post("/token/create", json={"valid_days": 2, "expires": "never"}, headers=server.h), 400, "not both")
    _err(http.post("/token/create", json={"expires": "2001-01-01T00:00:00Z"}, headers=server.h), 400, "future")
    _err(http.post("/token/create", json={"expires": "soon"}, headers=server.h), 400, "expires")
    _err(http.post("/token/create", json={"valid_days": 0.5}, headers=server.h), 400)
    _err(http.post("/token/create", json={"expires": "never"}), 401)
    # form field token on a multipart route
    r = http.post("/detect", data={"token": token}, files={"images": ("a.jpg", server.photo("obama_small.jpg"))})
    assert _ok(r)["results"][0]["status"] == "faces"


def test_anything_but_a_valid_token_is_401(server):
    http, ids = server.http, server.ids
    expired_jwt = jwt.encode(
        {"sub": ids["user"], "iss": "enface-batch", "exp": datetime.now(UTC) - timedelta(minutes=1)},
        SECRET,
        algorithm="HS256",
    )
    forged = jwt.encode(
        {"sub": ids["user"], "iss": "enface-batch", "exp": datetime.now(UTC) + timedelta(days=1)},
        "another-secret-that-is-long-enough-for-hs256",
        algorithm="HS256",
    )
    routes = [
        ("GET", "/person/lists", {}),
        ("GET", "/v1/person/lists", {}),
        ("GET", "/tokens", {}),
        ("GET", "/source/groups", {}),
        ("POST", "/sources", {"json": {"group_id": DEFAULT_GROUP_ID}}),
        ("POST", "/person", {"json": {"person_id": ids["obama"], "list_id": ids["vip"]}}),
        ("POST", "/token/create", {"json": {}}),
        ("POST", "/detect", {"files": {"images": ("a.jpg", b"x")}}),
        ("POST", "/compare", {"files": [("images", ("a.jpg", b"x")), ("images", ("b.jpg", b"x"))]}),
        ("POST", "/action", {"files": {"image": ("a.jpg", b"x")}}),
        ("GET", f"/browse/lists/{ids['vip']}/persons", {}),
    ]
    for method, path, kw in routes:
        _err(http.request(method, path, **kw), 401, "missing token")
        _err(http.request(method, path, headers={"token": expired_jwt}, **kw), 401, "expired")
        _err(http.request(method, path, headers={"token": forged}, **kw), 401)
        _err(http.request(method, path, headers={"token": ids["forever"]}, **kw), 401)  # permanent in the header
        _err(http.request(method, path, params={"token": ids["expired"]}, **kw), 401, "expired")
        _err(http.request(method, path, params={"token": str(uuid.uuid4())}, **kw), 401, "unknown")
        _err(http.request(method, path, params={"token": "not-a-uuid"}, **kw), 401)
    assert _ok(http.get("/person/lists", params={"token": ids["forever"]}))


# -- catalog and persons ----------------------------------------------------------------------------------------------
def test_catalog_routes(server):
    http, ids, h = server.http, server.ids, server.h
    lists = {x["name"]: x for x in _ok(http.get("/person/lists", headers=h))}
    assert lists["vip"]["persons"] == 2 and lists["default"]["list_id"] == DEFAULT_LIST_ID
    assert lists["scanned"]["persons"] >= 3  # auto-enrolled by the scan
    assert _ok(http.get("/v1/person/lists", headers=h)) == _ok(http.get("/person/lists", headers=h))
    groups = {g["name"]: g for g in _ok(http.get("/source/groups", headers=h))}
    assert groups["archive"]["person_list_search"] == [ids["vip"], ids["scanned"]]
    (src,) = _ok(http.post("/sources", json={"group_id": ids["group"]}, headers=h))
    assert src["source_id"] == ids["source"] and src["new_person_threshold"] == "no_match"
    _err(http.post("/sources", json={"group_id": "nope"}, headers=h), 400, "uuid")
    _err(http.post("/sources", json={"group_id": str(uuid.uuid4())}, headers=h), 404)
    _err(http.post("/sources", json={}, headers=h), 400, "group_id")


def test_person_route(server):
    http, ids, h = server.http, server.ids, server.h
    p = _ok(http.post("/person", json={"person_id": ids["obama"], "list_id": ids["vip"]}, headers=h))
    assert p["fields"] == ["Barack Obama"] and p["list_id"] == ids["vip"] and p["image"] is True
    assert set(p) >= {"person_id", "list_id", "created", "group_id", "source_id", "status", "features", "yaw"}
    assert p == persons.get_person(server.lake, ids["obama"], ids["vip"])
    _err(http.post("/person", json={"person_id": "12", "list_id": ids["vip"]}, headers=h), 400, "person_id")
    _err(http.post("/person", json={"person_id": ids["obama"], "list_id": "x"}, headers=h), 400, "list_id")
    _err(http.post("/person", json={"person_id": str(uuid.uuid4()), "list_id": ids["vip"]}, headers=h), 404)
    _err(http.post("/person", json={"person_id": ids["obama"]}, headers=h), 404)  # not in the default list


# -- detect, compare, action ------------------------------------------------------------------------------------------
def test_detect(server):
    http, h = server.http, server.h
    files = [("images", ("two.jpg", server.photo("two_people.jpg"))), ("images", ("b.jpg", server.photo("biden.jpg")))]
    out = _ok(
        http.post(
            "/detect",
            files=files,
            data={"multi": "true", "bbox": "true", "thumb": "true", "feature_check": ["gender", "age"]},
            headers=h,
        )
    )
    two, biden = out["results"]
    assert out["status"] == "ok" and isinstance(out["spent"], int)
    assert two["image"] == "two.jpg" and len(two["faces"]) == 2 and len(biden["faces"]) == 1
    face = biden["faces"][0]
    assert len(face["bbox"]) == 4 and face["features"]["gender"] in ("male", "female")
    assert Image.open(io.BytesIO(base64.b64decode(face["thumb"]))).size == (112, 112)
    single = _ok(http.post("/v1/detect", files={"images": ("t.jpg", server.photo("two_people.jpg"))}, headers=h))
    assert len(single["results"][0]["faces"]) == 1  # multi defaults to false: the largest face
    _err(
        http.post("/detect", files={"images": ("b.jpg", server.photo("biden.jpg"))}, data={"feature_check": "race"}),
        401,
    )
    raced = _ok(
        http.post(
            "/detect", files={"images": ("b.jpg", server.photo("biden.jpg"))}, data={"feature_check": "race"}, headers=h
        )
    )
    assert "race" in raced["results"][0]["faces"][0]["features"]
    _err(
        http.post(
            "/detect", files={"images": ("b.jpg", server.photo("biden.jpg"))}, data={"feature_check": "mood"}, headers=h
        ),
        400,
        "mood",
    )


def test_bad_uploads(server):
    http, h = server.http, server.h
    good = server.photo("obama_small.jpg")
    truncated = server.photo("biden.jpg")[:60_000]
    # corrupt: 400 when nothing could be read; per-image errors when some could
    _err(http.post("/detect", files={"images": ("bad.jpg", truncated)}, headers=h), 400, "bad.jpg")
    mixed = _ok(
        http.post("/detect", files=[("images", ("ok.jpg", good)), ("images", ("bad.jpg", b"not an image"))], headers=h)
    )
    assert [r["status"] for r in mixed["results"]] == ["faces", "error"]
    assert mixed["results"][1]["reason"] == "not_an_image"
    _err(http.post("/action", files={"image": ("bad.jpg", truncated)}, headers=h), 400, "truncated")
    _err(http.post("/action", files={"image": ("empty.jpg", b"")}, headers=h), 400, "empty")
    _err(
        http.post("/compare", files=[("images", ("a.jpg", good)), ("images", ("b.jpg", truncated))], headers=h),
        400,
        "b.jpg",
    )
    # too many images, or the wrong number
    many = [("images", (f"{i}.jpg", b"x")) for i in range(101)]
    _err(http.post("/detect", files=many, headers=h), 400, "1 to 100")
    _err(http.post("/compare", files={"images": ("a.jpg", good)}, headers=h), 400, "exactly 2")
    _err(http.post("/detect", data={"bbox": "true"}, headers=h), 400, "images")
    _err(http.post("/action", files={"image": ("a.jpg", good)}, data={"results": "0"}, headers=h), 400, "results")
    # oversize: over 10 MB in one request, declared or streamed (chunked)
    big = np.random.default_rng(0).bytes(11 * 1024 * 1024)
    _err(http.post("/detect", files={"images": ("big.jpg", big)}, headers=h), 400, "bytes")
    _err(
        http.post(
            "/action",
            content=iter([big[i : i + (1 << 20)] for i in range(0, len(big), 1 << 20)]),
            headers={**h, "content-type": "multipart/form-data; boundary=x"},
        ),
        400,
        "bytes",
    )
    # the server is fine afterwards
    assert _ok(http.post("/detect", files={"images": ("ok.jpg", good)}, headers=h))["results"][0]["faces"]


def test_compare(server):
    http, h = server.http, server.h
    same = [("images", ("a.jpg", server.photo("obama.jpg"))), ("images", ("b.jpg", server.photo("obama2.jpg")))]
    other = [("images", ("a.jpg", server.photo("obama.jpg"))), ("images", ("b.jpg", server.photo("biden.jpg")))]
    s = _ok(http.post("/compare", files=same, data={"bbox_pro": "true"}, headers=h))
    o = _ok(http.post("/compare", files=other, headers=h))
    assert s["score"] >= 85 > o["score"]
    assert len(s["image1"][0]["bbox_pro"]) == 4 and s["image1"][0]["matches"][0]["face"] == 0


def test_action_searches_and_creates_nothing(server):
    http, ids, h, lake = server.http, server.ids, server.h, server.lake
    before = _versions(lake)
    photo = {"image": ("o.jpg", server.photo("obama2.jpg"))}
    out = _ok(http.post("/action", files=photo, data={"results": "3"}, headers=h))
    assert out["person_list_search"] == [DEFAULT_LIST_ID]  # the default group's list: empty
    assert out["results"][0]["faces"][0]["matches"] == []
    found = _ok(http.post("/action", files=photo, data={"person_list_search": ids["vip"], "results": 3}, headers=h))
    face = found["results"][0]["faces"][0]
    assert face["matches"][0]["person_id"] == ids["obama"] and face["matches"][0]["score"] >= 85
    assert len(face["matches"]) == 2 and face["persons_created"] == [] and face["decision"] == "never"
    by_source = _ok(http.post("/action", files=photo, data={"source_id": ids["source"], "thumb": "1"}, headers=h))
    assert by_source["person_list_search"] == [ids["vip"], ids["scanned"]]  # the source's group
    assert by_source["results"][0]["faces"][0]["persons_created"] == []  # though the source's rules create
    assert by_source["results"][0]["faces"][0]["thumb"]
    assert _ok(http.post("/action", files=photo, data={"new_person_threshold": "never"}, headers=h))
    for data in ({"new_person_threshold": "90"}, {"person_list_add": ids["vip"]}, {"new_person_threshold": "no_match"}):
        _err(http.post("/action", files=photo, data=data, headers=h), 400, "enface run", "creates no persons")
    _err(http.post("/action", files=photo, data={"new_person_threshold": "77"}, headers=h), 400)
    _err(http.post("/action", files=photo, data={"person_list_search": "nope"}, headers=h), 400, "uuid")
    _err(http.post("/action", files=photo, data={"person_list_search": str(uuid.uuid4())}, headers=h), 404)
    _err(http.post("/action", files=photo, data={"source_id": str(uuid.uuid4())}, headers=h), 404)
    _err(http.post("/action", files=photo, data={"new_person_yaw_max": "33"}, headers=h), 400, "yaw")
    assert _versions(lake) == before  # nothing written


def test_write_routes_answer_405_with_the_command(server):
    for path, (method, command) in WRITE_ROUTES.items():
        for prefix in ("", "/v1"):
            r = server.http.request(method, prefix + path, headers=server.h, json={"name": "x"})
            _err(r, 405, command, "read-only")
        _err(server.http.get(path), 405, command)


# -- browsing ---------------------------------------------------------------------------------------------------------
def test_browse_persons_faces_and_images(server):
    http, ids, h = server.http, server.ids, server.h
    page = _ok(http.get(f"/browse/lists/{ids['vip']}/persons", headers=h))
    assert page["total"] == 2 and page["name"] == "vip"
    assert [p["name"] for p in page["persons"]] == ["Barack Obama", "Joe Biden"]  # most photos first
    assert page["persons"][0]["photos"] > page["persons"][1]["photos"] and page["sort"] == "photos"
    oldest = _ok(http.get(f"/browse/lists/{ids['vip']}/persons?sort=created", headers=h))["persons"]
    assert [p["person_id"] for p in oldest] == [ids["obama"], ids["biden"]]
    _err(http.get(f"/browse/lists/{ids['vip']}/persons?sort=name", headers=h), 400)
    assert all(Image.open(io.BytesIO(base64.b64decode(p["thumb"]))).size == (112, 112) for p in page["persons"])
    second = _ok(http.get(f"/browse/lists/{ids['vip']}/persons?offset=1&limit=1&thumbs=false", headers=h))
    assert [p["person_id"] for p in second["persons"]] == [ids["biden"]] and second["persons"][0]["thumb"] is None
    _err(http.get("/browse/lists/nope/persons", headers=h), 400, "uuid")
    _err(http.get(f"/browse/lists/{uuid.uuid4()}/persons", headers=h), 404)
    _err(http.get(f"/browse/lists/{ids['vip']}/persons?limit=0", headers=h), 400)

    obama = _ok(http.get(f"/browse/lists/{ids['vip']}/persons/{ids['obama']}", headers=h))
    face, *matched = obama["faces"]
    assert face["kind"] == "enrolled" and face["thumb"] and face["crop"] and face["image_uri"].endswith("obama.jpg")
    assert matched and all(f["kind"] == "matched" and f["score"] >= 85 and f["thumb"] for f in matched)
    assert {f["image_uri"].rsplit("/", 1)[-1] for f in matched} >= {"obama2.jpg", "obama_small.jpg"}
    seen = {a["image_uri"].rsplit("/", 1)[-1] for a in obama["appearances"]}
    assert "obama2.jpg" in seen and "biden.jpg" not in seen  # scanned photos matched to him
    assert all(a["score"] >= obama["min_score"] for a in obama["appearances"])
    # every person of every list answers, the scanned-and-deduplicated list included, and pages past the end
    for lid in (ids["vip"], ids["scanned"]):
        every = _ok(http.get(f"/browse/lists/{lid}/persons?limit=500", headers=h))["persons"]
        assert every
        for p in every:
            page = _ok(http.get(f"/browse/lists/{lid}/persons/{p['person_id']}", headers=h))
            assert len(page["faces"]) == p["faces"] >= 1
        assert _ok(http.get(f"/browse/lists/{lid}/persons?offset=60", headers=h))["persons"] == []
    # every photo of a person, newest first, in pages; each with its face thumb and match score
    photos = _ok(http.get(f"/browse/lists/{ids['vip']}/persons/{ids['obama']}/photos", headers=h))
    assert photos["name"] == "Barack Obama" and photos["total"] == len(obama["faces"]) >= 3
    assert all(p["thumb"] for p in photos["photos"])
    assert [p["how"] for p in photos["photos"]][-1] == "enrolled"  # the enrolment photo is the oldest
    assert all(p["score"] >= 80 for p in photos["photos"] if p["how"] == "matched")
    one = f"/browse/lists/{ids['vip']}/persons/{ids['obama']}/photos?limit=1&offset="
    paged = [p["image_sha256"] for o in range(photos["total"]) for p in _ok(http.get(f"{one}{o}", headers=h))["photos"]]
    assert paged == [p["image_sha256"] for p in photos["photos"]]
    _err(http.get(f"/browse/lists/{ids['vip']}/persons/{uuid.uuid4()}/photos", headers=h), 404)
    _err(http.get(f"/browse/lists/{ids['vip']}/persons/{uuid.uuid4()}", headers=h), 404)
    _err(http.get(f"/browse/lists/{ids['vip']}/persons/xyz", headers=h), 400)

    imgs = _ok(http.get(f"/browse/sources/{ids['source']}/images", headers=h))
    assert imgs["total"] == len(PHOTOS)
    by_name = {i["uri"].rsplit("/", 1)[-1]: i for i in imgs["images"]}
    assert by_name["two_people.jpg"]["faces"] == 2 and len(by_name["two_people.jpg"]["face_list"]) == 2
    assert _ok(http.get(f"/browse/sources/{ids['source']}/images?status=error", headers=h))["total"] == 0
    _err(http.get(f"/browse/sources/{uuid.uuid4()}/images", headers=h), 404)

    sha = by_name["biden.jpg"]["image_sha256"]
    r = http.get(f"/browse/images/{sha}", headers=h)
    assert r.status_code == 200 and r.content == server.photo("biden.jpg")
    assert r.headers["content-type"] == "image/jpeg"
    _err(http.get(f"/browse/images/{'0' * 64}", headers=h), 404)
    _err(http.get("/browse/images/zz", headers=h), 400)


def test_browse_shows_paths_relative_to_the_source_not_server_paths(server):
    http, ids, h = server.http, server.ids, server.h
    root = os.path.dirname(server.lake.uri)
    obama = http.get(f"/browse/lists/{ids['vip']}/persons/{ids['obama']}", headers=h)
    images = http.get(f"/browse/sources/{ids['source']}/images", headers=h)
    photos = http.get(f"/browse/lists/{ids['vip']}/persons/{ids['obama']}/photos", headers=h)
    for r in (obama, images, photos):
        assert r.status_code == 200 and root not in r.text and str(server.ex) not in r.text, r.text[:300]
    assert obama.json()["faces"][0]["image_uri"] == "obama.jpg"  # enrolled by name: the file name only
    assert {a["image_uri"] for a in obama.json()["appearances"]} <= set(PHOTOS)  # relative to the source
    assert all(a["source_id"] == ids["source"] for a in obama.json()["appearances"])


def test_new_commits_are_seen_without_restart(server):
    http, h, lake = server.http, server.h, server.lake
    made = catalog.create_list(lake, "added later")["list_id"]
    assert made in {x["list_id"] for x in _ok(http.get("/person/lists", headers=h))}


# -- a writer commits while 8 clients query ---------------------------------------------------------------------------
def test_consistent_answers_while_a_writer_commits(server, analyzer):
    """Persons are added in batches of 3 (one commit each) with the query photo's own embedding: every answer
    must count a multiple of 3 persons (a whole commit) and never go back."""
    http, h, lake = server.http, server.h, server.lake
    live = catalog.create_list(lake, "live")["list_id"]
    photo = server.photo("obama2.jpg")
    (res,) = analyzer.analyze_uris([str(server.ex / "obama2.jpg")], multi=False)
    emb = res.faces[0].embedding.tolist()
    batch, stop, errors, observed = 3, threading.Event(), [], set()

    def writer():
        try:
            for i in range(30):
                if stop.is_set():
                    break
                t = now()
                rows = [
                    {
                        "person_id": str(uuid.uuid4()),
                        "list_id": live,
                        "created": t,
                        "updated": t,
                        "status": "init",
                        "fields": [f"batch {i}"],
                        "features": "{}",
                        "embedding": emb,
                        "model": "test",
                    }
                    for _ in range(batch)
                ]
                lake.append("persons", rows)
                time.sleep(0.15)
        except Exception as exc:  # noqa: BLE001
            errors.append(f"writer: {exc!r}")

    def client(n: int):
        seen_lists, seen_matches = [], []
        with httpx.Client(base_url=server.base, timeout=120, headers=h) as c:
            deadline = time.time() + 8
            while time.time() < deadline:
                r = c.get("/person/lists")
                if r.status_code != 200:
                    errors.append(f"lists {r.status_code} {r.text[:200]}")
                    continue
                count = {x["list_id"]: x["persons"] for x in r.json()}[live]
                seen_lists.append(count)
                if n % 2 == 0:
                    r = c.post(
                        "/action",
                        files={"image": ("o.jpg", photo)},
                        data={"person_list_search": live, "results": "100"},
                    )
                    if r.status_code != 200:
                        errors.append(f"action {r.status_code} {r.text[:200]}")
                        continue
                    matches = r.json()["results"][0]["faces"][0]["matches"]
                    if any(m["score"] < 99 for m in matches):
                        errors.append(f"unexpected match scores {matches}")
                    seen_matches.append(len(matches))
        observed.update(seen_lists + seen_matches)
        for name, seq in (("lists", seen_lists), ("action", seen_matches)):
            if any(x % batch for x in seq):
                errors.append(f"{name} saw a partial commit: {seq}")
            if seq != sorted(seq):
                errors.append(f"{name} went back in time: {seq}")
        return len(seen_lists) + len(seen_matches)

    w = threading.Thread(target=writer)
    w.start()
    counts: list[int] = []
    threads = [threading.Thread(target=lambda n=n: counts.append(client(n))) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    stop.set()
    w.join()
    assert not errors, errors[:5]
    assert sum(counts) >= 40 and len(observed) >= 5, (counts, sorted(observed))  # commits landed mid-run
    final = {x["list_id"]: x["persons"] for x in _ok(http.get("/person/lists", headers=h))}[live]
    assert final == lake.read("persons", where={"list_id": live}, columns=["person_id"]).num_rows


# -- schemathesis: no server error anywhere in the schema -------------------------------------------------------------
def test_openapi_schema_fuzz_finds_no_server_error(server):
    schemathesis = pytest.importorskip("schemathesis", reason="schemathesis is in the test extra")
    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st

    schema = schemathesis.openapi.from_url(server.base + "/openapi.json")
    ops = [r.ok() for r in schema.get_all_operations()]
    paths = {op.path for op in ops}
    assert {"/user/login", "/person", "/action", "/detect", "/compare", "/sources", "/person/lists"} <= paths
    failures: list[str] = []
    answered: dict[str, list[int]] = collections.defaultdict(list)

    def fuzz(op):
        @settings(
            max_examples=15,
            deadline=None,
            database=None,
            suppress_health_check=list(HealthCheck),
            derandomize=True,
        )
        @given(case=op.as_strategy(), authed=st.booleans())
        def run(case, authed):
            r = case.call(base_url=server.base, headers=server.h if authed else None, timeout=120)
            answered[f"{op.method.upper()} {op.path}"].append(r.status_code)
            if r.status_code >= 500:
                failures.append(f"{op.method.upper()} {op.path}: {r.status_code} {r.text[:300]}")

        run()

    for op in ops:
        fuzz(op)
    assert not failures, failures[:5]
    assert set(answered) == {f"{op.method.upper()} {op.path}" for op in ops}
    assert {200, 400, 401, 405} <= {code for codes in answered.values() for code in codes}


# -- the page, in headless Chromium -----------------------------------------------------------------------------------
def test_page_in_headless_chromium(server, tmp_path):
    """The gallery as a person uses it: log in, the persons by name (most photos first), a person's photos in
    pages with their scores, a photo opened, a search by upload. Screenshots go to a temporary folder, or to
    ENFACE_GALLERY_SHOTS (`make gallery-shots` points it at reports/gallery/, which the README shows): a test
    run leaves the repository as it was."""
    if not CHROMIUM:
        pytest.skip("chromium is not installed (make test installs Debian's chromium and chromium-driver)")
    pw = pytest.importorskip("playwright.sync_api", reason="playwright (python package) is in the test extra")
    ids = server.ids
    shots = Path(os.environ.get("ENFACE_GALLERY_SHOTS") or tmp_path / "gallery")
    shots.mkdir(parents=True, exist_ok=True)

    def shot(page, name: str) -> None:
        page.wait_for_timeout(300)  # let the last thumbs paint
        page.screenshot(path=str(shots / f"{name}.png"))

    def loaded(page, selector: str) -> list:
        widths = page.eval_on_selector_all(selector, "els => els.map(e => e.complete && e.naturalWidth)")
        assert widths and all(w and w > 0 for w in widths), (selector, widths)
        return widths

    with pw.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_FLAGS)
        try:
            page = browser.new_page(viewport={"width": 1100, "height": 720})
            page.set_default_timeout(60_000)
            page.goto(server.base + "/ui?per_page=2")
            page.fill("#login-email", EMAIL)
            page.fill("#login-password", PASSWORD)
            page.click("#login-submit")
            page.click(f".list-item[data-list-id='{ids['vip']}']")
            page.wait_for_selector(f".person-card[data-person-id='{ids['obama']}'] img")
            loaded(page, "#gallery img")
            names = page.eval_on_selector_all("#gallery .person-card .name", "els => els.map(e => e.textContent)")
            assert names == ["Barack Obama", "Joe Biden"]  # by name, most photos first
            counts = page.inner_text(f".person-card[data-person-id='{ids['obama']}'] .count")
            total = _ok(server.http.get(f"/browse/lists/{ids['vip']}/persons/{ids['obama']}/photos", headers=server.h))
            assert counts.startswith(f"{total['total']} photos")
            shot(page, "persons")

            # the person: photos two to a page (?per_page=2), newest first, each with its score
            page.click(f".person-card[data-person-id='{ids['obama']}']")
            page.wait_for_selector("#photos .photo-card img")
            assert page.inner_text("#person-title") == "Barack Obama"
            loaded(page, "#photos img")
            assert page.inner_text("#photos-range") == f"1–2 of {total['total']}"
            first_page = page.eval_on_selector_all("#photos .photo-card", "els => els.map(e => e.dataset.sha)")
            scores = page.eval_on_selector_all("#photos .score", "els => els.map(e => e.textContent)")
            assert len(first_page) == 2 and all(s.endswith("%") for s in scores), scores  # newest: matched faces
            shot(page, "person")
            page.click(".photo-card >> nth=0")
            page.wait_for_selector("#photo-box img#photo")
            assert page.eval_on_selector("#photo", "e => e.complete && e.naturalWidth") > 0
            page.click("#photos-next")
            page.wait_for_selector("#photos-range:text-matches('^3–')")  # (the page's CSP forbids eval)
            second_page = page.eval_on_selector_all("#photos .photo-card", "els => els.map(e => e.dataset.sha)")
            assert second_page and not set(second_page) & set(first_page)
            assert second_page == [x["image_sha256"] for x in total["photos"][2:4]]
            loaded(page, "#photos img")
            page.click("#photos-prev")
            page.wait_for_selector("#photos-range:text-matches('^1–')")

            # the search box: a photo in, its best matches (names, scores, thumbs) out; nothing is created
            before = server.lake.read("persons").num_rows
            page.set_input_files("#search-file", str(server.ex / "obama2.jpg"))
            page.click("#search-submit")
            page.wait_for_selector(f"#search-results .match-card[data-person-id='{ids['obama']}'] .name")
            assert page.inner_text(f"#search-results .match-card[data-person-id='{ids['obama']}'] .name") == (
                "Barack Obama"
            )
            loaded(page, "#search-results .match-card img")
            assert server.lake.read("persons").num_rows == before
            shot(page, "search")

            # a person of the scanned-and-deduplicated list opens too, with its photos
            scanned = _ok(server.http.get(f"/browse/lists/{ids['scanned']}/persons", headers=server.h))["persons"]
            page.click(f".list-item[data-list-id='{ids['scanned']}']")
            page.click(f".person-card[data-person-id='{scanned[0]['person_id']}']")
            page.wait_for_selector("#photos .photo-card img")
            loaded(page, "#photos img")

            # a token handed over in the fragment logs a new tab in, and leaves the address bar
            fresh = browser.new_page(viewport={"width": 1100, "height": 720})
            fresh.goto(server.base + f"/ui#token={ids['forever']}")
            fresh.wait_for_selector(".list-item")
            assert "token" not in fresh.url
        finally:
            browser.close()
    assert all((shots / f"{n}.png").stat().st_size < 300_000 for n in ("persons", "person", "search"))
