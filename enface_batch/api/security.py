"""Response security headers and login throttling for the endpoint.

Headers: every response says nosniff, may not be framed, sends no Referer (permanent tokens travel in query
strings) and carries a Content-Security-Policy. The page at /ui loads its script and style from the same
origin only (no inline code, so an injected ``<script>`` does not run); every other response is data and gets
``default-src 'none'; sandbox``, so even a response a browser is tricked into rendering runs nothing.

Login throttling: failed logins are counted per account (the normalised email) and per client address in a
sliding window; past a threshold each key is locked for an exponentially growing time (1 s, 2 s, 4 s, ...,
at most the window) and login attempts on a locked key are answered 429 with Retry-After, without checking
the password. State is in memory, per process: a restart forgets it, and several server processes each count
on their own.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field

PAGE_CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data: blob:; connect-src 'self'; "
    "form-action 'self'; base-uri 'none'; frame-ancestors 'none'"
)
DATA_CSP = "default-src 'none'; frame-ancestors 'none'; sandbox"
PAGE_PATHS = ("/ui", "/ui/", "/v1/ui")

COMMON_HEADERS: list[tuple[bytes, bytes]] = [
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"no-referrer"),
    (b"cross-origin-resource-policy", b"same-origin"),
    (b"cross-origin-opener-policy", b"same-origin"),
]


class SecurityHeaders:
    """ASGI middleware: adds the headers above to every HTTP response (errors and 404s included)."""

    def __init__(self, app) -> None:
        self.app = app

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        csp = (PAGE_CSP if scope.get("path") in PAGE_PATHS else DATA_CSP).encode()

        async def send_with_headers(message) -> None:
            if message["type"] == "http.response.start":
                names = {k.lower() for k, _ in message.get("headers", [])}
                extra = [(k, v) for k, v in COMMON_HEADERS if k not in names]
                if b"content-security-policy" not in names:
                    extra.append((b"content-security-policy", csp))
                message = {**message, "headers": [*message.get("headers", []), *extra]}
            await send(message)

        await self.app(scope, receive, send_with_headers)


# -- login throttling --------------------------------------------------------------------------------------------
@dataclass
class _Record:
    failures: list[float] = field(default_factory=list)  # times of failures inside the window
    locked_until: float = 0.0


@dataclass(frozen=True)
class ThrottlePolicy:
    window_s: float = 900.0  # failures older than this are forgotten
    account_failures: int = 5  # failures per account before it is locked
    address_failures: int = 20  # per client address: higher, several people may share one (NAT, proxy)
    first_lock_s: float = 1.0  # doubled at each further failure, at most window_s
    max_keys: int = 100_000  # memory bound: the oldest keys are forgotten first


class Throttled(Exception):
    """Login refused without checking the password: too many recent failures for this account or address."""

    def __init__(self, retry_after: float, what: str) -> None:
        self.retry_after = max(1, int(retry_after + 0.999))
        super().__init__(
            f"too many failed logins for this {what}: try again in {self.retry_after} s "
            "(failed logins are throttled per account and per client address)"
        )


class LoginThrottle:
    """Counts failed logins per key ("account:EMAIL", "address:IP"); thread-safe (routes run in a pool)."""

    def __init__(self, policy: ThrottlePolicy | None = None, clock: Callable[[], float] = time.monotonic) -> None:
        self.policy = policy or ThrottlePolicy()
        self.clock = clock
        self._lock = threading.Lock()
        self._records: OrderedDict[str, _Record] = OrderedDict()

    def _limit(self, key: str) -> int:
        return self.policy.account_failures if key.startswith("account:") else self.policy.address_failures

    def check(self, account: str, address: str) -> None:
        """Raise Throttled while the account or the address is locked."""
        t = self.clock()
        with self._lock:
            for key, what in ((f"account:{account}", "account"), (f"address:{address}", "client address")):
                rec = self._records.get(key)
                if rec is not None and rec.locked_until > t:
                    raise Throttled(rec.locked_until - t, what)

    def failed(self, account: str, address: str) -> None:
        t = self.clock()
        p = self.policy
        with self._lock:
            for key in (f"account:{account}", f"address:{address}"):
                rec = self._records.pop(key, None) or _Record()
                rec.failures = [x for x in rec.failures if t - x < p.window_s] + [t]
                over = len(rec.failures) - self._limit(key)
                if over >= 0:
                    rec.locked_until = t + min(p.first_lock_s * 2.0**over, p.window_s)
                self._records[key] = rec  # most recently failed last
            while len(self._records) > p.max_keys:
                self._records.popitem(last=False)

    def succeeded(self, account: str) -> None:
        """A right password clears the account's failures; the address keeps its count, so one valid account
        cannot be used to reset the count of guesses at others from the same address."""
        with self._lock:
            self._records.pop(f"account:{account}", None)
