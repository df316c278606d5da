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
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from ..analyze import Analyzer
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
FeatureCheck = Annotated[list[str] | None, typer.Option("--feature-check", help="gender, age or race; repeatable")]
Bbox = Annotated[bool, typer.Option("--bbox", help="Return [x1, y1, x2, y2] per face")]
BboxPro = Annotated[bool, typer.Option("--bbox-pro", help="Return the box's 4 corners turned with the face")]
Thumb = Annotated[bool, typer.Option("--thumb", help="Return the 112x112 aligned thumb, base64 JPEG")]
Multi = Annotated[bool, typer.Option("--multi", help="Every face, not only the largest")]
err = Console(stderr=True)


def _fail(message: str, code: int = 2) -> None:
    err.print("[red]error:[/red] ", end="")
    err.print(message, markup=False, highlight=False, soft_wrap=True)  # unbroken, so paths can be copied
    raise typer.Exit(code)


# Exit codes for the seed's HTTP errors: 400 -> 2 (like a usage error), 401/403 -> 3, 404 -> 4.
_EXIT = {400: 2, 401: 3, 403: 3, 404: 4}
EXIT_LOCKED = 5  # another writer holds the lake
EXIT_STORAGE = 6  # a run finished but the storage failed for some files; run it again to retry them
EXIT_CORRUPT = 7  # a table's Delta log is damaged (see `enface lake check`)


def _run(fn, *args, **kwargs) -> None:
    """Call one operation, print its JSON; an EnfaceError prints its seed meaning and exits non-zero."""
    from ..ops.errors import EnfaceError

    try:
        result = fn(*args, **kwargs)
    except EnfaceError as exc:
        _print({"status": "error", "code": exc.status_code, "message": exc.message})
        _fail(f"{exc.status_code}: {exc.message}", _EXIT.get(exc.status_code, 2))
    _print(result if isinstance(result, dict) else {"status": "ok", "items": result})


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
        _fail(str(exc), 1)


def _features(value: str | None) -> list[str]:
    return [f.strip() for f in (value or "").split(",") if f.strip()]


def _progress(total: int) -> Progress:
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
        console=err,
        transient=True,
        disable=total < 5 or not err.is_terminal,
    )


def _print(obj: dict) -> None:
    sys.stdout.write(json.dumps(obj, ensure_ascii=False, default=str) + "\n")


def _stop_prefect_server() -> None:
    server = sys.modules.get("enface_batch.flows.prefect_server")  # only if this command started one
    if server is not None:
        server.stop()


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
        app()
    except shutdown.Terminated as exc:
        # The lake is freed at once; the temporary Prefect server stops in the exit handlers below, once
        # Prefect has flushed its logs to it (the shutdown watchdog stops it if that takes too long).
        code = exc.code
        release_all()
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    except (LakeCorrupt, LakeLocked) as exc:  # from any command or flow: the message says what to do
        err.print("[red]error:[/red] ", end="")
        err.print(str(exc), markup=False, highlight=False, soft_wrap=True)
        code = EXIT_CORRUPT if isinstance(exc, LakeCorrupt) else EXIT_LOCKED
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
