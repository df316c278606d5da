"""The seed's write routes: not served here (the endpoint is read-only). Each answers 405 naming the command
that does its job."""

from __future__ import annotations

from fastapi import APIRouter

from .responses import error

# The seed's write routes and the command that does their job here.
WRITE_ROUTES: dict[str, tuple[str, str]] = {
    "/person/create": (
        "POST",
        "enface person create IMAGE --list-id LIST_ID [--field TEXT]  (or enface enrol, or the scan flow: enface run)",
    ),
    "/person/update": ("POST", "enface person update --person-id PERSON_ID [--list-id LIST_ID] [--field TEXT]"),
    "/person/delete": ("DELETE", "enface person delete --person-id PERSON_ID [--list-id LIST_ID]"),
    "/person/list/create": ("POST", "enface list create NAME"),
    "/source/create": ("POST", "enface source create NAME --group-id GROUP_ID  (or enface apply CONFIG.yaml)"),
    "/source/group/create": ("POST", "enface group create NAME --person-list-search LIST_ID"),
}
ALL_METHODS = ["GET", "POST", "PUT", "PATCH", "DELETE"]


def _write_route(router: APIRouter, path: str, method: str, command: str) -> None:
    def refuse():
        return error(
            405,
            f"{path} is not served: this endpoint is read-only. Use the command line: {command}",
            {"Allow": ""},
        )

    refuse.__name__ = "refuse_" + path.strip("/").replace("/", "_")
    refuse.__doc__ = f"Not served (read-only endpoint): 405 naming the command that does it, `{command}`."
    router.add_api_route(
        path, refuse, methods=[method], tags=["not served"], responses={405: {"description": "Use the CLI"}}
    )
    others = [m for m in ALL_METHODS if m != method]
    router.add_api_route(path, refuse, methods=others, include_in_schema=False)


def add_write_routes(router: APIRouter) -> None:
    """Register the 405 stubs on a router (the app factory does, between the seed's and the browse routes)."""
    for path, (method, command) in WRITE_ROUTES.items():
        _write_route(router, path, method, command)
