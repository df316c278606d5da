"""Errors with the seed's HTTP meaning; the CLI turns them into messages and exit codes, the API into 4xx."""

from __future__ import annotations


class EnfaceError(Exception):
    status_code = 400

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def response(self) -> dict:
        return {"status": "error", "message": self.message}


class BadRequest(EnfaceError):
    status_code = 400


class Unauthorized(EnfaceError):
    status_code = 401


class Forbidden(EnfaceError):
    status_code = 403


class NotFound(EnfaceError):
    status_code = 404
