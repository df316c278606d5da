"""The read-only HTTP endpoint (FastAPI): the Enface API's query routes, browsing routes and one HTML page."""

from .app import create_app

__all__ = ["create_app"]
