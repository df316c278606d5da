"""Issue 12 (endpoint side): each test is named for a defect and failed on the code before the fix.

A real `enface serve` runs over a lake built by scanning a folder that an attacker could have filled: a
symlink `holiday.jpg` to a file holding a secret outside the folder, an HTML page named `page.html` and one
renamed `page.jpg`, a TIFF, and photos that change or turn into a FIFO after the scan. Throttling and the
body gate are also driven in process (a fake clock; an ASGI receive that counts what was read).
"""

from __future__ import annotations

import asyncio
import io
import json
import os
import struct
import subprocess
import sys
import time
import uuid
import zlib
from datetime import UTC, datetime, timedelta

import numpy as np
import pytest
from PIL import Image

httpx = pytest.importorskip("httpx", reason="the api extra (and httpx) is needed for the endpoint tests")
pytest.importorskip("fastapi", reason="the api extra is needed for the endpoint tests")
jwt = pytest.importorskip("jwt", reason="the api extra (pyjwt) is needed for the endpoint tests")

from serving import serving  # noqa: E402

from enface_batch import auth  # noqa: E402
from enface_batch.lake.schemas import DEFAULT_GROUP_ID  # noqa: E402
from enface_batch.lake.store import Lake  # noqa: E402
from enface_batch.ops import catalog  # noqa: E402

SECRET = "test-only-secret-" + uuid.uuid4().hex
EMAIL, PASSWORD = "owner@example.com", "correct horse"
FILE_SECRET = "ENFACE_JWT_SECRET=" + uuid.uuid4().hex  # what the symlink points at
HTML = b"<!doctype html><html><body><script>fetch('/x?'+sessionStorage.getItem('enface-token'))</script></body></html>"


def _jpeg(seed: int, size=(96, 64)) -> bytes:
    arr = np.random.default_rng(seed).integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, "JPEG")
    return buf.getvalue()


def _tiff() -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (40, 30), (10, 200, 30)).save(buf, "TIFF")
    return buf.getvalue()


def big_png(side: int) -> bytes:
    """A real grayscale PNG of side x side black pixels: a few hundred KB that decode to side**2 pixels."""
    raw = zlib.compressobj(9)
    row = b"\x00" * (side + 1)  # filter byte + pixels
    idat = b"".join(raw.compress(row) for _ in range(side)) + raw.flush()

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", side, side, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


class Srv:
    def __init__(self, base, lake, root, photos, source, shas, user):
        self.base, self.lake, self.root, self.photos = base, lake, root, photos
        self.source, self.shas, self.user = source, shas, user
        self.http = httpx.Client(base_url=base, timeout=60)
        self.jwt = self.login()
        self.h = {"token": self.jwt}

    def login(self, email=EMAIL, password=PASSWORD, days=1) -> str:
        r = self.http.post("/user/login", json={"email": email, "password": password, "valid_days": days})
        assert r.status_code == 200, r.text
        return r.json()["token"]


@pytest.fixture(scope="module")
def srv(tmp_path_factory, analyzer):
    from enface_batch.scan import scan_source

    root = tmp_path_factory.mktemp("sec")
    (root / "secret.txt").write_text(FILE_SECRET)
    photos = root / "photos"
    photos.mkdir()
    (photos / "plain.jpg").write_bytes(_jpeg(1))
    (photos / "changes.jpg").write_bytes(_jpeg(2))
    (photos / "becomes-fifo.jpg").write_bytes(_jpeg(3))
    (photos / "scan.tif").write_bytes(_tiff())
    (photos / "page.html").write_bytes(HTML)
    (photos / "page.jpg").write_bytes(HTML + b" ")
    (photos / "holiday.jpg").symlink_to(root / "secret.txt")
    lake = Lake(root / "lake")
    source = catalog.create_source(lake, "photos", DEFAULT_GROUP_ID, uri=str(photos))["source_id"]
    scan_source(lake, analyzer, source)
    rows = lake.read("files", columns=["uri", "sha256"]).to_pylist()
    shas = {os.path.basename(r["uri"]): r["sha256"] for r in rows}
    # After the scan: one photo changes, one is replaced by a FIFO (a read of it would block forever).
    (photos / "changes.jpg").write_bytes(_jpeg(4))
    (photos / "becomes-fifo.jpg").unlink()
    os.mkfifo(photos / "becomes-fifo.jpg")
    user = auth.add_user(lake, EMAIL, PASSWORD)
    with serving(lake.uri, root / "serve.log", SECRET) as base:
        s = Srv(base, lake, root, photos, source, shas, user)
        yield s
        s.http.close()


def _image(srv, name: str, **kw):
    return srv.http.get(f"/browse/images/{srv.shas[name]}", headers=srv.h, timeout=10, **kw)


# -- 1: /browse/images serves only the scanned image's pixels ------------------------------------------------------
def test_browse_image_never_serves_a_symlinked_secret(srv):
    assert "holiday.jpg" in srv.shas  # the scan recorded the symlink (with the secret's hash)
    r = _image(srv, "holiday.jpg")
    assert FILE_SECRET.encode() not in r.content and r.status_code == 404, r.text
    # refused twice over: the scan records a link out of the source without reading it (issue 12, scan side),
    # and the endpoint would not serve a file outside the source anyway
    assert str(srv.root) not in r.text


def test_browse_image_never_serves_html_as_html(srv):
    for name, body in (("page.html", HTML), ("page.jpg", HTML + b" ")):
        r = _image(srv, name)
        assert "html" not in r.headers.get("content-type", ""), (name, r.headers)
        assert body not in r.content and r.status_code == 404, (name, r.text)
        assert r.headers["x-content-type-options"] == "nosniff"


def test_browse_image_serves_verified_images_with_a_fixed_type_and_safe_name(srv):
    sha = srv.shas["plain.jpg"]
    r = _image(srv, "plain.jpg")
    assert r.status_code == 200 and r.content == (srv.photos / "plain.jpg").read_bytes()
    assert r.headers["content-type"] == "image/jpeg" and r.headers["x-content-type-options"] == "nosniff"
    assert r.headers["content-disposition"] == f'inline; filename="{sha[:16]}.jpg"'
    assert "sandbox" in r.headers["content-security-policy"]
    tif = _image(srv, "scan.tif")  # browsers do not show TIFF: re-encoded
    assert tif.status_code == 200 and tif.headers["content-type"] == "image/jpeg"
    assert Image.open(io.BytesIO(tif.content)).size == (40, 30)


def test_browse_image_of_a_changed_file_is_410_not_the_new_bytes(srv):
    r = _image(srv, "changes.jpg")
    assert r.status_code == 410 and "changed" in r.json()["message"], r.text
    assert r.content != (srv.photos / "changes.jpg").read_bytes()


def test_browse_image_of_a_fifo_answers_at_once(srv):
    t0 = time.time()
    try:
        r = _image(srv, "becomes-fifo.jpg")
    except httpx.ReadTimeout:
        pytest.fail("the request hung on a FIFO")
    assert r.status_code == 404 and "regular file" in r.json()["message"] and time.time() - t0 < 10


def test_browse_images_show_paths_relative_to_the_source(srv):
    r = srv.http.get(f"/browse/sources/{srv.source}/images", headers=srv.h)
    assert r.status_code == 200
    body = r.json()
    assert str(srv.root) not in r.text and body["source_id"] == srv.source
    assert "plain.jpg" in {i["uri"] for i in body["images"]}


# -- 10: security headers on every response ------------------------------------------------------------------------
def test_every_response_has_security_headers_and_the_page_no_inline_script(srv):
    for path, kw in (("/ui", {}), ("/person/lists", {"headers": srv.h}), ("/person/lists", {}), ("/nope", {})):
        r = srv.http.get(path, **kw)
        assert r.headers["x-content-type-options"] == "nosniff", path
        assert r.headers["x-frame-options"] == "DENY", path
        assert "frame-ancestors 'none'" in r.headers["content-security-policy"], path
    page = srv.http.get("/ui")
    csp = page.headers["content-security-policy"]
    assert "script-src 'self'" in csp and "unsafe-inline" not in csp
    assert "<script>" not in page.text and "style=" not in page.text and " onclick=" not in page.text
    js = srv.http.get("/ui/app.js")
    assert (
        js.status_code == 200
        and js.headers["content-type"].startswith("text/javascript")
        and "sessionStorage" in js.text
    )
    assert srv.http.get("/ui/app.css").headers["content-type"].startswith("text/css")


# -- 8: revocation -------------------------------------------------------------------------------------------------
def _cli(srv, *args):
    env = {**os.environ, "PYTHONPATH": os.getcwd(), "ENFACE_PASSWORD": "another pw"}
    out = subprocess.run(
        [sys.executable, "-m", "enface_batch", *args, "--lake", srv.lake.uri], capture_output=True, text=True, env=env
    )
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def test_token_revoke_ends_a_permanent_token(srv):
    made = auth.create_token(srv.lake, srv.user["user_id"], expires="never")["token"]
    other = auth.create_token(srv.lake, srv.user["user_id"], valid_days=3)["token"]
    assert srv.http.get("/tokens", params={"token": made["token"]}).status_code == 200
    assert _cli(srv, "token", "revoke", made["token_id"])["token_id"] == made["token_id"]
    r = srv.http.get("/tokens", params={"token": made["token"]})
    assert r.status_code == 401, r.text
    assert srv.http.get("/tokens", params={"token": other["token"]}).status_code == 200
    out = _cli(srv, "token", "revoke", "--email", EMAIL, "--all")
    assert out["revoked"] >= 1
    assert srv.http.get("/tokens", params={"token": other["token"]}).status_code == 401


def test_user_remove_ends_the_users_jwts_and_tokens(srv):
    email = f"leaver-{uuid.uuid4().hex[:6]}@example.com"
    user = auth.add_user(srv.lake, email, PASSWORD)
    tok = auth.create_token(srv.lake, user["user_id"], expires="never")["token"]["token"]
    jwt_token = srv.login(email)
    assert srv.http.get("/person/lists", headers={"token": jwt_token}).status_code == 200
    out = _cli(srv, "user", "remove", email)
    assert out["tokens_revoked"] == 1
    assert srv.http.get("/person/lists", headers={"token": jwt_token}).status_code == 401
    assert srv.http.get("/person/lists", params={"token": tok}).status_code == 401
    assert not srv.lake.read("tokens", where={"user_id": user["user_id"]}).num_rows


def test_new_password_revokes_earlier_jwts(srv):
    email = f"rotate-{uuid.uuid4().hex[:6]}@example.com"
    auth.add_user(srv.lake, email, PASSWORD)
    old = srv.login(email)
    _cli(srv, "user", "passwd", email)  # ENFACE_PASSWORD="another pw"
    r = srv.http.get("/person/lists", headers={"token": old})
    assert r.status_code == 401 and "revoked" in r.json()["message"]
    assert srv.http.get("/person/lists", headers={"token": srv.login(email, "another pw")}).status_code == 200


def test_jwt_cannot_mint_a_token_that_outlives_it(srv):
    short = srv.login(days=1)
    exp = datetime.fromtimestamp(jwt.decode(short, SECRET, algorithms=["HS256"], issuer="enface-batch")["exp"], UTC)
    for body in (
        {"expires": "never"},
        {"valid_days": 30},
        {"expires": (datetime.now(UTC) + timedelta(days=9)).isoformat()},
    ):
        r = srv.http.post("/token/create", json=body, headers={"token": short})
        assert r.status_code == 201, r.text
        t = r.json()["token"]
        assert t["capped"] is True and t["expires"] != "never", body
        assert datetime.fromisoformat(t["expires"].replace("Z", "+00:00")) <= exp
        # and the minted token cannot mint a longer one either
        again = srv.http.post("/token/create", json={"expires": "never", "token": t["token"]}).json()["token"]
        assert again["expires"] == t["expires"]
    # the operator's CLI token is not capped, and may mint a long one
    cli = _cli(srv, "token", "create", "--email", EMAIL, "--expires", "never")["token"]
    long = srv.http.post("/token/create", json={"valid_days": 30, "token": cli["token"]}).json()["token"]
    assert long["capped"] is False


# -- 8: login throttling -------------------------------------------------------------------------------------------
class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


@pytest.fixture
def app_client(srv):
    from fastapi.testclient import TestClient

    from enface_batch.api import create_app

    app = create_app(srv.lake.uri, secret=SECRET)
    clock = Clock()
    try:
        from enface_batch.api.security import LoginThrottle

        app.state.enface.throttle = LoginThrottle(clock=clock)
    except ImportError:  # before the fix: nothing to give the clock to
        pass
    with TestClient(app) as client:
        yield client, clock


def test_login_200_wrong_passwords_are_throttled_per_account(app_client, srv):
    client, clock = app_client
    email = f"target-{uuid.uuid4().hex[:6]}@example.com"
    auth.add_user(srv.lake, email, PASSWORD)
    codes = []
    for _ in range(200):
        r = client.post("/user/login", json={"email": email, "password": "wrong password"})
        codes.append(r.status_code)
        clock.t += 0.1  # 10 a second
    assert codes.count(403) <= 10 and codes.count(429) >= 190, codes[:20]
    r = client.post("/user/login", json={"email": email, "password": PASSWORD})
    assert r.status_code == 429 and int(r.headers["retry-after"]) >= 1  # locked: not even the right one
    clock.t += 901
    assert client.post("/user/login", json={"email": email, "password": PASSWORD}).status_code == 200


def test_login_failures_are_throttled_per_client_address(app_client, srv):
    client, clock = app_client
    codes = [
        client.post("/user/login", json={"email": f"u{i}@example.com", "password": "wrong password"}).status_code
        for i in range(30)
    ]
    assert codes[:20] == [403] * 20 and set(codes[20:]) == {429}, codes


def test_throttle_lock_doubles_and_a_success_clears_the_account():
    from enface_batch.api.security import LoginThrottle, ThrottlePolicy

    clock = Clock()
    th = LoginThrottle(ThrottlePolicy(account_failures=3, address_failures=100), clock=clock)
    for _ in range(3):
        th.check("a", "ip")
        th.failed("a", "ip")
    locks = []
    for _ in range(4):
        try:
            th.check("a", "ip")
        except Exception as exc:  # noqa: BLE001
            locks.append(exc.retry_after)
        clock.t += 100
        th.failed("a", "ip")
    assert locks[0] == 1
    th.succeeded("a")
    th.check("a", "ip")


# -- 10: bodies are not read before authentication, nor past the limit ---------------------------------------------
CHUNK = 16 * 1024
UNAUTHENTICATED = 64 * 1024  # enface_batch.api.limits.UNAUTHENTICATED_BYTES


@pytest.fixture(scope="module")
def asgi(srv, analyzer):
    """The endpoint's ASGI app in process, and a permanent token of its user."""
    from enface_batch.api import create_app

    token = auth.create_token(srv.lake, srv.user["user_id"], valid_days=2)["token"]["token"]
    return create_app(srv.lake.uri, secret=SECRET, analyzer=analyzer), token


def _drive(app, chunks: list[bytes], headers: dict, *, query: bytes = b""):
    """Send a request through the whole app with a receive that counts the body bytes pulled from the
    client; returns (status, bytes read)."""
    read, sent = [0], []
    it = iter(chunks)

    async def receive():
        c = next(it, None)
        if c is None:
            return {"type": "http.request", "body": b"", "more_body": False}
        read[0] += len(c)
        return {"type": "http.request", "body": c, "more_body": True}

    async def send(msg):
        sent.append(msg)

    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": "/detect",
        "raw_path": b"/detect",
        "root_path": "",
        "query_string": query,
        "headers": [(k.encode(), v.encode()) for k, v in headers.items()],
        "client": ("127.0.0.1", 50000),
        "server": ("127.0.0.1", 80),
    }
    asyncio.run(app(scope, receive, send))
    return sent[0]["status"], read[0]


def _multipart(token: str | None, size: int) -> list[bytes]:
    head = b""
    if token is not None:
        head = b'--xx\r\nContent-Disposition: form-data; name="token"\r\n\r\n' + token.encode() + b"\r\n"
    body = head + b'--xx\r\nContent-Disposition: form-data; name="images"; filename="a.jpg"\r\n\r\n' + b"\0" * size
    body += b"\r\n--xx--\r\n"
    return [body[i : i + CHUNK] for i in range(0, len(body), CHUNK)]


MP = {"content-type": "multipart/form-data; boundary=xx"}


def test_unauthenticated_upload_is_refused_before_its_body_is_read(asgi):
    app, _ = asgi
    status, read = _drive(app, _multipart(None, 9 << 20), MP)
    assert status == 401 and read <= UNAUTHENTICATED + CHUNK, (status, read)
    status, read = _drive(app, _multipart(str(uuid.uuid4()), 9 << 20), MP)  # unknown token, sent first
    assert status == 401 and read <= CHUNK, (status, read)
    status, read = _drive(app, _multipart(None, 9 << 20), {**MP, "token": "forged.jwt.value"})
    assert status == 401 and read <= UNAUTHENTICATED + CHUNK, (status, read)
    declared = {"content-type": "application/json", "content-length": str(9 << 20)}
    status, read = _drive(app, _multipart(None, 9 << 20), declared)
    assert status == 401 and read == 0, (status, read)


def test_authenticated_upload_is_read_whole(asgi):
    app, token = asgi
    whole = sum(map(len, _multipart(token, 5 << 20)))
    for chunks, headers, query in (
        (_multipart(token, 5 << 20), MP, b""),  # the token form field first
        (_multipart(None, 5 << 20), MP, f"token={token}".encode()),
    ):
        status, read = _drive(app, chunks, headers, query=query)
        assert status == 400 and read >= sum(map(len, chunks)) >= whole - 200, (status, read)  # zeros: not an image


def test_chunked_body_over_the_limit_stops_being_read_at_the_limit(asgi):
    app, token = asgi
    status, read = _drive(app, _multipart(None, 40 << 20), MP, query=f"token={token}".encode())
    limit = 10 * 1024 * 1024 + 256 * 1024
    assert status == 400 and read <= limit + CHUNK, (status, read)


# -- 4: a decoded-pixel budget per request -------------------------------------------------------------------------
def test_images_decoding_past_the_request_pixel_budget_are_refused_before_decoding(srv):
    png = big_png(12_000)  # 144 Mpx each: 3 decode to > 1 GiB of RGB
    assert len(png) < 1 << 20
    files = [("images", (f"{i}.png", png)) for i in range(3)]
    t0 = time.time()
    r = srv.http.post("/detect", files=files, headers=srv.h)
    assert r.status_code == 400 and "ENFACE_API_MAX_REQUEST_PIXEL_BYTES" in r.json()["message"], r.text
    assert time.time() - t0 < 10
