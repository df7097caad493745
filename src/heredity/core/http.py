"""What every HTTP client of heredity shares: which failures to retry, how long to wait, and
keeping secrets out of messages.

- ``RETRYABLE_STATUS``: 429 and every 5xx; timeouts and dropped connections are retried too
  (the caller maps them to :class:`Retryable`).
- ``retry_after(response, cap=...)``: the ``Retry-After`` header in seconds, given as a number
  or as an HTTP date, capped so a misconfigured proxy asking for hours cannot stall a run.
- :class:`RetryPolicy`: one backoff policy, exponential with equal jitter (between half and
  all of ``min(backoff_max_s, backoff_initial_s * 2**retry)``); a ``Retry-After`` header, when
  given, replaces the backoff (capped at ``retry_after_max_s``).
- ``call_with_retries`` / ``acall_with_retries``: the retry loop around one request. The attempt
  raises :class:`Retryable` for a failure worth retrying; anything else propagates at once; after
  ``max_retries`` retries the last problem is raised as :class:`RetriesExhausted`. The wait
  happens outside the attempt, so an attempt may hold a semaphore without blocking others
  while it backs off.
- ``redact`` / ``error_text`` / ``public_url``: API keys out of error texts, and credentials
  (``user:password@``), query strings and fragments out of URLs, before they reach a message.

Only the standard library here; httpx objects are only read (``response.headers``).
"""

from __future__ import annotations

import asyncio
import email.utils
import math
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar
from urllib.parse import urlsplit, urlunsplit

T = TypeVar("T")

RETRYABLE_STATUS = frozenset({429}) | frozenset(range(500, 600))
MAX_ERROR_TEXT = 200  # characters of a server's error text quoted in an exception
REDACTED = "[redacted]"


def is_retryable(status: int) -> bool:
    """True for the statuses a retry may fix: 429 (throttled) and 5xx (server trouble)."""
    return status in RETRYABLE_STATUS


def retry_after(response: Any, *, cap: float | None = None, now: float | None = None) -> float | None:
    """The ``Retry-After`` header of ``response`` in seconds, or None when absent or unreadable.

    Both forms of RFC 9110 are read: delay-seconds (``"2.5"``) and an HTTP date (seconds from
    ``now``, default the current time; a date in the past is 0). Negative delays are 0, and
    ``cap`` bounds the result.
    """
    raw = response.headers.get("retry-after")
    if raw is None:
        return None
    raw = raw.strip()
    try:
        seconds = float(raw)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(raw)
        except (TypeError, ValueError, IndexError):
            return None
        if when is None or when.tzinfo is None:  # RFC 9110 dates are GMT; a naive date is not one
            return None
        seconds = when.timestamp() - (time.time() if now is None else now)
    if math.isnan(seconds):
        return None
    seconds = max(seconds, 0.0)
    return min(seconds, cap) if cap is not None else seconds


def backoff_delay(retry: int, initial_s: float, max_s: float, rng: random.Random | None = None) -> float:
    """Exponential backoff with equal jitter before retry number ``retry`` (0 for the first).

    Uniform between half and all of ``min(max_s, initial_s * 2**retry)``: never longer than
    ``max_s``, never an immediate retry, and spread out so clients that failed together do not
    come back together.
    """
    ceiling = min(max_s, initial_s * 2.0 ** retry)
    return ceiling * (0.5 + 0.5 * (rng or random).random())


@dataclass
class RetryPolicy:
    """How often and how long to wait: ``max_retries`` retries after the first attempt."""

    max_retries: int = 6
    backoff_initial_s: float = 1.0
    backoff_max_s: float = 60.0
    retry_after_max_s: float = 60.0
    # jitter only spreads retries out in time; it never touches what is computed
    rng: random.Random = field(default_factory=random.Random, repr=False)

    def delay(self, retry: int, asked: float | None = None) -> float:
        """The wait before retry number ``retry``: what the server ``asked`` (Retry-After,
        capped), else the jittered backoff."""
        if asked is not None:
            return min(asked, self.retry_after_max_s)
        return backoff_delay(retry, self.backoff_initial_s, self.backoff_max_s, self.rng)


class Retryable(Exception):
    """Raised by an attempt whose failure a retry may fix; ``retry_after`` is the server's ask."""

    def __init__(self, problem: str, retry_after: float | None = None):
        super().__init__(problem)
        self.problem = problem
        self.retry_after = retry_after


class RetriesExhausted(Exception):
    """The attempt still failed after every retry; ``str()`` is the last problem."""

    def __init__(self, problem: str, retries: int):
        super().__init__(problem)
        self.problem = problem
        self.retries = retries


def call_with_retries(attempt: Callable[[int], T], policy: RetryPolicy,
                      sleep: Callable[[float], None] = time.sleep) -> T:
    """``attempt(retry)`` until it returns, raises something else than Retryable, or has been
    retried ``policy.max_retries`` times (then RetriesExhausted with its last problem)."""
    retry = 0
    while True:
        try:
            return attempt(retry)
        except Retryable as exc:
            problem, asked = exc.problem, exc.retry_after
        if retry >= policy.max_retries:
            raise RetriesExhausted(problem, retry)
        sleep(policy.delay(retry, asked))
        retry += 1


async def acall_with_retries(attempt: Callable[[int], Awaitable[T]], policy: RetryPolicy,
                             sleep: Callable[[float], Awaitable[None]] = asyncio.sleep) -> T:
    """The asynchronous ``call_with_retries``."""
    retry = 0
    while True:
        try:
            return await attempt(retry)
        except Retryable as exc:
            problem, asked = exc.problem, exc.retry_after
        if retry >= policy.max_retries:
            raise RetriesExhausted(problem, retry)
        await sleep(policy.delay(retry, asked))
        retry += 1


# --------------------------------------------------------------------------- secrets


def redact(text: str, *secrets: str | None) -> str:
    """``text`` with every non-empty secret replaced by ``[redacted]``."""
    for secret in secrets:
        if secret:
            text = text.replace(secret, REDACTED)
    return text


def error_text(text: str, *secrets: str | None, limit: int = MAX_ERROR_TEXT) -> str:
    """A server's error text fit for an exception: secrets removed, one line, at most ``limit`` characters."""
    text = " ".join(redact(text, *secrets).split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def public_url(url: str) -> str:
    """The URL for messages: without ``user:password@``, query string or fragment (where keys hide)."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if ":" in host:  # an IPv6 address keeps its brackets
        host = f"[{host}]"
    if parts.port is not None:
        host = f"{host}:{parts.port}"
    return urlunsplit((parts.scheme, host, parts.path, "", ""))
