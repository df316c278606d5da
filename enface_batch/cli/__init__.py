"""The `enface` command. Each subcommand parses options, calls one function of enface_batch, prints JSON."""

from __future__ import annotations

import atexit
import functools
import json
import os
import sys
import threading
from typing import Annotated

import typer
from rich.console import Console

from ..analyze import FEATURES, Analyzer
from ..models import PackError, load_pack
from ..models.fetch import ModelFetchError

# This module holds the app and its command groups, the shared options and helpers, and main(); the commands
# live in one module per group (analysis, catalog, persons, runs, endpoint, lake_admin), imported at the end.
app = typer.Typer(add_completion=False, no_args_is_help=True, help=__doc__)
models_app = typer.Typer(no_args_is_help=True, help="Fetch and inspect model packs.")
list_app = typer.Typer(no_args_is_help=True, help="Person lists.")
group_app = typer.Typer(no_args_is_help=True, help="Data-source groups.")
source_app = typer.Typer(no_args_is_help=True, help="Data sources (archive locations with auto-enrolment rules).")
person_app = typer.Typer(no_args_is_help=True, help="Persons of a list.")
app.add_typer(models_app, name="models")
app.add_typer(list_app, name="list")
app.add_typer(group_app, name="group")
app.add_typer(source_app, name="source")
app.add_typer(person_app, name="person")
user_app = typer.Typer(no_args_is_help=True, help="Users of the endpoint (enface serve).")
token_app = typer.Typer(no_args_is_help=True, help="Permanent access tokens of the endpoint.")
app.add_typer(user_app, name="user")
app.add_typer(token_app, name="token")
lake_app = typer.Typer(no_args_is_help=True, help="The lake itself: check, unlock, optimize, vacuum.")
app.add_typer(lake_app, name="lake")

LakeOpt = Annotated[str | None, typer.Option("--lake", help="Lake folder or URI (default: ENFACE_LAKE)")]
ListId = Annotated[str | None, typer.Option("--list-id", help="Person list id (default: the default list)")]
Threshold = Annotated[str | None, typer.Option("--new-person-threshold", help="80, 85, 90, 95, no_match or never")]
SquareMin = Annotated[int | None, typer.Option("--new-person-square-min", help="50, 112 or 224 (pixels)")]
YawMax = Annotated[int | None, typer.Option("--new-person-yaw-max", help="5, 10, 20 ... 80 (degrees)")]
Features = Annotated[
    list[str] | None,
    typer.Option("--features", help=f"{', '.join(FEATURES)}: comma-separated or repeated (--features gender,age)"),
]
# The old spelling, kept so scripts written for it still run; merged into --features by _features().
FeatureCheck = Annotated[list[str] | None, typer.Option("--feature-check", hidden=True)]
Quiet = Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar (it shows only on a terminal anyway)")]
# Help text is rich markup: a literal "[" must be escaped or rich takes "[x1, y1, x2, y2]" for a style tag.
Bbox = Annotated[bool, typer.Option("--bbox", help="Return \\[x1, y1, x2, y2] per face")]
BboxPro = Annotated[bool, typer.Option("--bbox-pro", help="Return the box's 4 corners turned with the face")]
Thumb = Annotated[bool, typer.Option("--thumb", help="Return the 112x112 aligned thumb, base64 JPEG")]
Multi = Annotated[bool, typer.Option("--multi", help="Every face, not only the largest")]
err = Console(stderr=True)


# Exit codes (the README's table). The seed's HTTP errors: 400 -> 2 (like a usage error), 401/403 -> 3, 404 -> 4.
EXIT_ENVIRONMENT = 1  # models cannot be loaded, or an optional extra is not installed
_EXIT = {400: 2, 401: 3, 403: 3, 404: 4}
EXIT_LOCKED = 5  # another writer holds the lake
EXIT_STORAGE = 6  # a run finished but the storage failed for some files; run it again to retry them
EXIT_CORRUPT = 7  # a table's Delta log is damaged (see `enface lake check`)
# ... and the HTTP-like `code` a JSON error carries for each exit code.
_CODE = {1: 500, 2: 400, 3: 403, 4: 404, 5: 409, 6: 503, 7: 500}


def error_out(message: str, exit_code: int, *, code: int | None = None, printed: bool = False) -> None:
    """The one error contract: `{"status": "error", "code", "message"}` on stdout (unless the command printed
    its own JSON already), one line `error: ...` on stderr; the caller exits with exit_code."""
    if not printed:
        _print({"status": "error", "code": code or _CODE.get(exit_code, 500), "message": message})
    err.print("[red]error:[/red] ", end="")
    # one unbroken line, so paths can be copied and a script can take the last line of stderr
    err.print(" ".join(message.split()), markup=False, highlight=False, soft_wrap=True)


def _fail(message: str, code: int = 2, *, status: int | None = None, printed: bool = False) -> None:
    error_out(message, code, code=status, printed=printed)
    raise typer.Exit(code)


def _run(fn, *args, **kwargs) -> None:
    """Call one operation, print its JSON; an EnfaceError prints its seed meaning and exits non-zero.

    Lists print as bare JSON arrays, as the seed's list routes (and the endpoint) answer them."""
    _print(_call(fn, *args, **kwargs))


def _call(fn, *args, **kwargs):
    """Call one operation and return its result; an EnfaceError follows the error contract and exits."""
    from ..ops.errors import EnfaceError

    try:
        return fn(*args, **kwargs)
    except EnfaceError as exc:
        _fail(exc.message, _EXIT.get(exc.status_code, 2), status=exc.status_code)


def _writes(fn):
    """Hold the lake's writer lock while a command runs (one writer per lake); another holder: exit 5.

    The lock is taken before the lake is opened, since opening a new lake creates its tables.
    """

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        from ..lake.lock import LakeLocked
        from ..lake.store import Lake

        if kwargs.get("dry_run"):  # writes nothing
            return fn(*args, **kwargs)
        try:
            with Lake(kwargs.get("lake"), create=False).writer_lock(" ".join(["enface", *sys.argv[1:]])):
                return fn(*args, **kwargs)
        except LakeLocked as exc:
            _fail(str(exc), EXIT_LOCKED)

    return wrapper


def _lake(uri: str | None):
    from ..lake.store import Lake

    return Lake(uri)


def _analyzer() -> Analyzer:
    try:
        return Analyzer(load_pack())
    except (ModelFetchError, PackError) as exc:
        _fail(str(exc), EXIT_ENVIRONMENT)


def _features(*values: list[str] | None) -> list[str] | None:
    """Feature names from --features (and its old spelling --feature-check), repeated or comma-separated, in
    order and once each; None when neither was given (so a source's or group's own setting applies)."""
    if all(v is None for v in values):
        return None
    names = [f.strip().lower() for v in values for item in v or [] for f in item.split(",") if f.strip()]
    bad = [f for f in names if f not in FEATURES]
    if bad:
        _fail(f"unknown feature {', '.join(map(repr, bad))}: --features takes {', '.join(FEATURES)}")
    return list(dict.fromkeys(names))


def _print(obj: dict | list) -> None:
    sys.stdout.write(json.dumps(obj, ensure_ascii=False, default=str) + "\n")


def _stop_prefect_server() -> None:
    server = sys.modules.get("enface_batch.flows.prefect_server")  # only if this command started one
    if server is not None:
        server.stop()


# Modules of the optional extras, so a command that needs one names the extra instead of a traceback.
_EXTRAS = {
    "jwt": "api",
    "argon2": "api",
    "fastapi": "api",
    "uvicorn": "api",
    "multipart": "api",
    "python_multipart": "api",
    "s3fs": "s3",
    "prefect_dask": "dask",
    "distributed": "dask",
    "dask": "dask",
    "matplotlib": "bench",
}


def _version(value: bool) -> None:
    if value:
        from importlib.metadata import version

        print(f"enface-batch {version('enface-batch')}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version and exit")
    ] = False,
) -> None:
    pass


def _invoke() -> int:
    """Run the app; click's usage errors follow the error contract too (JSON, one line, exit 2)."""
    try:  # typer >= 0.2x carries its own copy of click
        from typer._click import exceptions as cx
    except ImportError:  # pragma: no cover - older typer on the real click
        from click import exceptions as cx

    try:
        rv = app(standalone_mode=False)
    except cx.NoArgsIsHelpError as exc:  # `enface list`: the group's help was shown, as click does
        return exc.exit_code
    except cx.UsageError as exc:
        hint = f" (see `{exc.ctx.command_path} --help`)" if exc.ctx else ""
        error_out(exc.format_message() + hint, exc.exit_code, code=400)
        return exc.exit_code
    except cx.ClickException as exc:
        error_out(exc.format_message(), exc.exit_code)
        return exc.exit_code
    except typer.Abort:
        err.print("Aborted.")
        return 1
    return rv if isinstance(rv, int) else 0


def main() -> None:
    """The `enface` entry point: run the command, then leave without the interpreter's native teardown.

    With Arrow's, delta-rs' and onnxruntime's thread pools loaded, Python's final teardown aborted ~5 % of
    short commands under load after they had printed their result ("terminate called without an active
    exception", exit -6; apache/arrow#34314, delta-io/delta-rs#2184). Threads are joined and exit handlers
    (Prefect's, the temporary server's, logging's) run as at a normal exit; then the process ends with the
    command's own exit code.
    """
    from .. import shutdown
    from ..lake.errors import LakeCorrupt
    from ..lake.lock import LakeLocked, release_all

    shutdown.cleanups.extend([release_all, _stop_prefect_server])
    shutdown.install()
    code = 0
    try:
        code = _invoke()
    except shutdown.Terminated as exc:
        # The lake is freed at once; the temporary Prefect server stops in the exit handlers below, once
        # Prefect has flushed its logs to it (the shutdown watchdog stops it if that takes too long).
        code = exc.code
        release_all()
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    except (LakeCorrupt, LakeLocked) as exc:  # from any command or flow: the message says what to do
        code = EXIT_CORRUPT if isinstance(exc, LakeCorrupt) else EXIT_LOCKED
        error_out(str(exc), code)
    except ModuleNotFoundError as exc:
        extra = _EXTRAS.get((exc.name or "").split(".")[0])
        if extra is None:
            import traceback

            traceback.print_exc()
            code = 1
        else:
            code = EXIT_ENVIRONMENT
            error_out(
                f"this command needs the '{extra}' extra (no module {exc.name!r}): pip install 'enface-batch[{extra}]'",
                code,
            )
    except BaseException:  # click re-raises what it does not handle: show it, as Python would
        import traceback

        traceback.print_exc()
        code = 1
    try:
        # What Python's own exit does first, in this order: join non-daemon threads (Prefect's log and event
        # workers flush there, while the temporary server still answers), then the atexit handlers.
        threading._shutdown()
        atexit._run_exitfuncs()
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)


# The commands register themselves on `app` and its groups when their modules load; the order of these imports
# is the order `enface --help` lists them in.
from . import analysis, catalog, persons, runs, endpoint, lake_admin  # noqa: E402, F401, I001
