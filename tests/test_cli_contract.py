"""The CLI as one language, as a user meets it: progress on a real terminal (a pty) and none when piped,
`--version`, one `--features` spelling, one error contract (JSON on stdout, one line on stderr, the README's
exit codes), and `person ls` / `person photos` in JSON, CSV and a table, on a lake made by real scans."""

from __future__ import annotations

import csv
import io
import json
import os
import pty
import re
import shutil
import subprocess
import sys
from importlib.metadata import version
from pathlib import Path

import pytest

EX = "fixtures/face_recognition_examples/examples"
BAR = "━"  # rich's bar: drawn only on a terminal


def enface_cmd() -> list[str]:
    """The installed `enface` script beside this Python (what users run), else the module."""
    script = Path(sys.executable).parent / "enface"
    return [str(script)] if script.exists() else [sys.executable, "-m", "enface_batch"]


def _env(**extra: str) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_") and k != "NO_COLOR"}
    return {**env, "TERM": "xterm-256color", "COLUMNS": "200", **extra}


def run(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    """stdout and stderr piped, as in a script."""
    return subprocess.run(
        [*enface_cmd(), *args], capture_output=True, text=True, env=env or _env(), timeout=600, check=False
    )


def run_on_tty(*args: str, env: dict | None = None) -> tuple[int, str, str]:
    """stderr on a pseudo-terminal (as when a user runs it in a shell), stdout piped: (exit code, stdout, what
    the terminal showed)."""
    master, slave = pty.openpty()
    proc = subprocess.Popen(
        [*enface_cmd(), *args], stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=slave, env=env or _env()
    )
    os.close(slave)
    shown = []
    while True:
        try:
            data = os.read(master, 65536)
        except OSError:  # EIO: every holder of the terminal's other end has gone
            break
        if not data:
            break
        shown.append(data)
    out = proc.stdout.read().decode()
    proc.wait(timeout=600)
    os.close(master)
    return proc.returncode, out, b"".join(shown).decode(errors="replace")


def ok_json(p: subprocess.CompletedProcess):
    assert p.returncode == 0, p.stderr[-3000:]
    return json.loads(p.stdout)


def assert_error(p: subprocess.CompletedProcess, exit_code: int, code: int, *words: str) -> dict:
    """The error contract: the exit code, a JSON error on stdout, one human line on stderr."""
    assert p.returncode == exit_code, (p.returncode, p.stdout[-2000:], p.stderr[-2000:])
    out = json.loads(p.stdout)
    assert out["status"] == "error" and out["code"] == code and out["message"], out
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), p.stderr[-2000:]
    for w in words:
        assert w in lines[0] and w in out["message"], (w, lines[0])
    return out


@pytest.fixture(scope="module")
def photos(test_data, tmp_path_factory) -> Path:
    """Two archives of real photos: four (Obama three times, Biden twice) and one more Obama."""
    root = tmp_path_factory.mktemp("photos")
    ex = test_data / EX
    (root / "a").mkdir()
    (root / "b").mkdir()
    for name in ("obama.jpg", "obama2.jpg", "biden.jpg", "two_people.jpg"):
        shutil.copy(ex / name, root / "a" / name)
    shutil.copy(ex / "obama_small.jpg", root / "b" / "obama_small.jpg")
    return root


@pytest.fixture(scope="module")
def scanned(photos, tmp_path_factory) -> dict:
    """A lake made as a user makes it: a list, a group, two sources (set up with both feature spellings), one
    scanned with stderr on a terminal and one piped."""
    home = tmp_path_factory.mktemp("prefect-home")
    env = _env(PREFECT_HOME=str(home))
    lake = str(tmp_path_factory.mktemp("lake") / "lake")
    lst = ok_json(run("list", "create", "people", "--lake", lake))["list_id"]
    grp = ok_json(run("group", "create", "archive", "--person-list-search", lst, "--lake", lake))["group_id"]
    rules = ["--new-person-threshold", "no_match", "--new-person-square-min", "50", "--person-list-add", lst]
    for name, folder, feats in (("a", "a", ["--features", "gender,age"]), ("b", "b", ["--feature-check", "age"])):
        made = run(
            "source", "create", name, "--group-id", grp, "--uri", str(photos / folder), *rules, *feats, "--lake", lake
        )
        ok_json(made)
    tty = run_on_tty("run", "a", "--workers", "1", "--chunk-size", "2", "--lake", lake, env=env)
    piped = run("run", "b", "--workers", "1", "--lake", lake, env=env)
    return {"lake": lake, "list_id": lst, "group_id": grp, "tty": tty, "piped": piped}


# ------------------------------------------------------------------------------------------------ progress
def test_run_draws_progress_on_a_terminal_and_logs_lines_when_piped(scanned):
    code, out, shown = scanned["tty"]
    assert code == 0, shown[-3000:]
    (summary,) = json.loads(out)["sources"]  # stdout stays clean JSON
    assert summary["images_new"] == 4 and summary["faces"] == 5
    assert BAR in shown and "4/4" in shown and "5 faces" in shown and "images/s" in shown and "ETA" in shown
    assert "images analysed" not in shown  # the bar replaces the per-chunk log lines on the console
    for line in re.finditer(r"\d\d:\d\d:\d\d\.\d{3} \| ", shown):  # Prefect's own lines print above the bar
        assert shown[: line.start()].endswith(("\n", "\x1b[2K")), shown[line.start() - 200 : line.start() + 80]
    piped = scanned["piped"]
    assert piped.returncode == 0, piped.stderr[-3000:]
    assert BAR not in piped.stderr and "\x1b[?25l" not in piped.stderr  # no bar, no cursor games
    assert "b: 1/1 images analysed, 1 faces" in piped.stderr  # a line per chunk in Prefect's log instead
    assert json.loads(piped.stdout)["sources"][0]["images_new"] == 1


def test_detect_progress_only_on_a_terminal_and_not_with_quiet(photos):
    code, out, shown = run_on_tty("detect", str(photos / "a"), "--multi")
    assert code == 0, shown[-3000:]
    assert len(json.loads(out)["results"]) == 4
    assert BAR in shown and "detect" in shown and "4/4" in shown and "5 faces" in shown and "images/s" in shown
    code, out, shown = run_on_tty("detect", str(photos / "a"), "--multi", "--quiet")
    assert code == 0 and BAR not in shown and "4/4" not in shown
    p = run("detect", str(photos / "a"), "--multi")
    assert p.returncode == 0 and BAR not in p.stderr and "4/4" not in p.stderr
    assert len(json.loads(p.stdout)["results"]) == 4


def test_enrol_and_dedup_show_progress_on_a_terminal(photos, test_data, tmp_path):
    lake = str(tmp_path / "lake")
    people = tmp_path / "people"
    for who, names in {"obama": ["obama.jpg", "obama2.jpg"], "biden": ["biden.jpg"]}.items():
        (people / who).mkdir(parents=True)
        for n in names:
            shutil.copy(test_data / EX / n, people / who / n)
    lst = ok_json(run("list", "create", "staff", "--lake", lake))["list_id"]
    code, out, shown = run_on_tty("enrol", str(people), "--list-id", lst, "--lake", lake)
    assert code == 0, shown[-3000:]
    assert json.loads(out)["persons_created"] == 2
    assert BAR in shown and "enrol" in shown and "3/3" in shown and "3 faces" in shown
    code, out, shown = run_on_tty("dedup", "--list-id", lst, "--lake", lake)
    assert code == 0, shown[-3000:]
    assert json.loads(out)["persons_after"] == 2
    assert BAR in shown and "neighbours" in shown and "3/3" in shown


# ------------------------------------------------------------------------------------------------ version, help
def test_version_prints_the_package_version():
    p = run("--version")
    assert p.returncode == 0 and p.stdout.strip() == f"enface-batch {version('enface-batch')}"


def test_help_shows_brackets_and_one_feature_spelling():
    for cmd in (["detect"], ["action"], ["person", "create"]):
        p = run(*cmd, "--help")
        assert p.returncode == 0
        assert "[x1, y1, x2, y2]" in p.stdout, cmd  # not eaten as rich markup
        assert "--features" in p.stdout and "--feature-check" not in p.stdout, cmd


# ------------------------------------------------------------------------------------------------ features
def test_features_repeated_or_comma_separated_and_the_old_spelling(photos, scanned):
    p = run("detect", str(photos / "a" / "obama.jpg"), "--features", "gender", "--features", "age,race")
    feats = ok_json(p)["results"][0]["faces"][0]["features"]
    assert {"gender", "age", "race"} <= set(feats)
    sources = {s["name"]: s for s in ok_json(run("source", "ls", "--lake", scanned["lake"]))}
    assert sources["a"]["feature_check"] == ["gender", "age"]  # --features gender,age
    assert sources["b"]["feature_check"] == ["age"]  # --feature-check age: the old spelling still works
    assert_error(run("detect", str(photos / "a"), "--features", "gender,mood"), 2, 400, "'mood'", "gender, age, race")
    assert_error(run("source", "ls", "--lake", scanned["lake"], "--features", "x"), 2, 400, "--features")


# ------------------------------------------------------------------------------------------------ error contract
def test_every_failure_follows_the_error_contract(photos, scanned, tmp_path):
    lake = ["--lake", scanned["lake"]]
    empty = tmp_path / "empty"
    empty.mkdir()
    assert_error(run("detect", str(empty)), 2, 400, "no images found")
    assert_error(run("action", str(empty), *lake), 2, 400, "no images found")
    assert_error(run("token", "create", "--email", "nobody@example.com", *lake), 4, 404, "nobody@example.com")
    assert_error(run("person", "get", "--person-id", "00000000-0000-0000-0000-000000000000", *lake), 4, 404)
    assert_error(run("person", "ls", "--list-id", "nope", *lake), 2, 400, "list_id")
    assert_error(run("person", "get", *lake), 2, 400, "--person-id")  # click's own usage errors too
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"not a photo")
    out = assert_error(run("compare", str(photos / "a" / "obama.jpg"), str(bad)), 2, 400, "bad.jpg")
    assert out["image1"] and out["image2"] == [] and out["score"] is None  # the seed's shape, kept
    out = assert_error(run("detect", str(bad), str(tmp_path / "missing.jpg")), 2, 400, "none of the 2")
    assert {r["status"] for r in out["results"]} == {"error"}
    p = run("detect", str(bad), str(photos / "a" / "obama.jpg"))  # one good image: the run did its job
    assert p.returncode == 0 and json.loads(p.stdout)["status"] == "ok"


def test_a_missing_extra_names_the_pip_command(tmp_path, scanned):
    # Without the api extra: jwt cannot be imported, as in an environment that lacks it.
    blocker = tmp_path / "no-api" / "jwt"
    blocker.mkdir(parents=True)
    (blocker / "__init__.py").write_text("raise ModuleNotFoundError(\"No module named 'jwt'\", name='jwt')\n")
    env = _env(PYTHONPATH=str(blocker.parent), ENFACE_PASSWORD="secret-pass")
    p = run("user", "add", "someone@example.com", "--lake", scanned["lake"], env=env)
    assert_error(p, 1, 500, "pip install 'enface-batch[api]'")
    assert "Traceback" not in p.stderr


def test_detect_out_counts_images_and_faces_apart(photos, tmp_path):
    out = ok_json(run("detect", str(photos / "a"), "--multi", "--out", str(tmp_path / "f.parquet")))
    assert out["images"] == 4 and out["images_with_faces"] == 4 and out["images_failed"] == 0
    assert out["faces"] == 5  # rows of the Parquet, not images


# ------------------------------------------------------------------------------------------------ person ls/photos
def test_person_ls_answers_who_is_in_the_archive_in_json_csv_and_a_table(scanned):
    lake = ["--lake", scanned["lake"], "--list-id", scanned["list_id"]]
    people = ok_json(run("person", "ls", *lake))
    assert isinstance(people, list)  # a bare array, like the other ls commands
    assert [(p["photos"], p["faces"]) for p in people] == [(4, 4), (2, 2)]  # most photos first
    rows = list(csv.DictReader(io.StringIO(run("person", "ls", *lake, "--format", "csv").stdout)))
    assert [(r["person_id"], int(r["photos"])) for r in rows] == [(p["person_id"], p["photos"]) for p in people]
    table = run("person", "ls", *lake, "--format", "table").stdout
    assert "photos" in table and all(p["person_id"] in table for p in people)


def test_person_photos_lists_every_path_in_json_csv_and_a_table(scanned, photos):
    obama = ok_json(run("person", "ls", "--lake", scanned["lake"], "--list-id", scanned["list_id"]))[0]
    args = ["person", "photos", "--person-id", obama["person_id"], "--list-id", scanned["list_id"]]
    args += ["--lake", scanned["lake"]]
    out = ok_json(run(*args))
    assert out["photos_total"] == 4
    rows = list(csv.DictReader(io.StringIO(run(*args, "-f", "csv").stdout)))
    names = {Path(r["path"]).name for r in rows}
    assert names == {"obama.jpg", "obama2.jpg", "two_people.jpg", "obama_small.jpg"}
    matched = [r for r in rows if r["how"] == "matched"]
    assert matched and all(float(r["match_score"]) >= 80 for r in matched)  # the Enface %, named apart
    table = run(*args, "--format", "table").stdout
    assert "match_score" in table and "obama2.jpg" in table
