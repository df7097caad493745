"""The Perspective API client behind ``toxicity-perspective``.

The key comes from the environment variable ``PERSPECTIVE_API_KEY`` and travels in a request
header, never in a URL, a log line, an error message or the cache. Requests are paced, retried
on 429, 5xx and network failures with the backoff of ``heredity.core.http``, and every answer is
cached on disk, keyed by a hash of what was asked.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from heredity.core.http import (
    RetriesExhausted,
    Retryable,
    RetryPolicy,
    call_with_retries,
    error_text,
    is_retryable,
    retry_after,
)
from heredity.core.rundir import write_json
from heredity.errors import HeredityError
from heredity.metrics.toxicity.embed import is_blank

if TYPE_CHECKING:
    import httpx

KEY_ENV = "PERSPECTIVE_API_KEY"
PERSPECTIVE_URL = "https://commentanalyzer.googleapis.com/v1alpha1/comments:analyze"
ATTRIBUTE = "TOXICITY"
# Perspective's limit is 20 KB per comment; longer texts are cut rather than refused.
MAX_TEXT_BYTES = 20_000
MAX_BACKOFF_S = 60.0  # the longest wait between two tries, Retry-After included


def env_float(name: str, default: float) -> float:
    raw = os.environ.get(name)
    if raw is None or raw.strip() == "":
        return default
    try:
        value = float(raw)
    except ValueError:
        raise HeredityError(f"environment variable {name} must be a number, got '{raw}'") from None
    if not math.isfinite(value) or value < 0:
        raise HeredityError(f"environment variable {name} must be a finite number >= 0, got '{raw}'")
    return value


def clip_utf8(text: str, limit: int) -> str:
    data = text.encode("utf-8")
    return text if len(data) <= limit else data[:limit].decode("utf-8", errors="ignore")


class PerspectiveClient:
    """Scores texts with Perspective's TOXICITY, one request per uncached text, in order.

    Sequential on purpose: the default quota is 1 query per second, so concurrency would only
    buy 429s. ``transport``, ``sleep`` and ``clock`` exist for tests.
    """

    def __init__(self, *, key_env: str = KEY_ENV, url: str = PERSPECTIVE_URL, qps: float = 1.0,
                 max_retries: int = 6, backoff_s: float = 1.0, timeout_s: float = 30.0,
                 cache: Path | None = None, languages: Sequence[str] = ("en",),
                 transport: httpx.BaseTransport | None = None,
                 sleep: Callable[[float], None] = time.sleep,
                 clock: Callable[[], float] = time.monotonic):
        if qps <= 0:
            raise HeredityError("Perspective: queries per second must be > 0")
        self._key_env = key_env
        self.url = url
        self.min_interval = 1.0 / qps
        self.max_retries = max_retries
        self.backoff_s = backoff_s
        self.timeout_s = timeout_s
        self.cache = cache
        # Named, not auto-detected: detection fails (HTTP 400) on the short or odd texts that
        # small models produce, and a score in the wrong language model is still a score.
        self.languages = list(languages)
        self._transport = transport
        self._sleep = sleep
        self._clock = clock
        self._last_send: float | None = None
        self._policy = RetryPolicy(max_retries=max_retries, backoff_initial_s=backoff_s,
                                   backoff_max_s=MAX_BACKOFF_S, retry_after_max_s=MAX_BACKOFF_S)

    def __repr__(self) -> str:  # the key is never held on the object, but say where we talk to
        return f"PerspectiveClient(url={self.url!r}, cache={str(self.cache)!r})"

    # -- cache

    def _cache_path(self, text: str) -> Path | None:
        if self.cache is None:
            return None
        # What was asked is part of the key: the same text under other languages is another score.
        digest = hashlib.sha256(
            json.dumps([ATTRIBUTE, self.languages, text], ensure_ascii=False).encode("utf-8")
        ).hexdigest()
        return self.cache / ATTRIBUTE.lower() / digest[:2] / f"{digest}.json"

    def _cached(self, text: str) -> float | None:
        path = self._cache_path(text)
        if path is None or not path.is_file():
            return None
        try:
            return float(json.loads(path.read_text(encoding="utf-8"))["value"])
        except (OSError, ValueError, KeyError, TypeError):
            return None  # a torn or foreign file: ask again and overwrite it

    def _store(self, text: str, value: float) -> None:
        path = self._cache_path(text)
        if path is None:
            return
        # Written atomically, so a crash or a parallel run never leaves half a file behind.
        write_json(path, {"attribute": ATTRIBUTE, "value": value})

    # -- requests

    def score(self, texts: Sequence[str]) -> list[float]:
        out: list[float | None] = []
        todo: list[int] = []
        for i, text in enumerate(texts):
            if is_blank(text):
                out.append(math.nan)
                continue
            out.append(self._cached(clip_utf8(text, MAX_TEXT_BYTES)))
            if out[-1] is None:
                todo.append(i)
        if todo:
            import httpx

            key = os.environ.get(self._key_env, "").strip()
            if not key:
                raise HeredityError(
                    f"metric 'toxicity-perspective': set the environment variable {self._key_env} "
                    f"to a Perspective API key ({len(todo)} of {len(texts)} texts are not cached)"
                )
            headers = {"X-Goog-Api-Key": key, "Content-Type": "application/json"}
            with httpx.Client(timeout=self.timeout_s, headers=headers,
                              transport=self._transport) as client:
                for i in todo:
                    text = clip_utf8(texts[i], MAX_TEXT_BYTES)
                    value = self._request(client, text, key)
                    self._store(text, value)
                    out[i] = value
        return [float(v) for v in out]  # type: ignore[arg-type]

    def _pace(self) -> None:
        now = self._clock()
        if self._last_send is not None:
            wait = self._last_send + self.min_interval - now
            if wait > 0:
                self._sleep(wait)
                now = self._clock()
        self._last_send = now

    def _request(self, client: httpx.Client, text: str, key: str) -> float:
        import httpx

        payload = {"comment": {"text": text}, "languages": self.languages,
                   "requestedAttributes": {ATTRIBUTE: {}}, "doNotStore": True}

        def attempt(retry: int) -> float:
            self._pace()  # retries count against the quota too
            try:
                response = client.post(self.url, json=payload)
            except httpx.TransportError as exc:
                # the type names the failure; str(exc) might quote the request
                raise Retryable(f"request failed ({type(exc).__name__})") from None
            if response.status_code == 200:
                return self._parse(response)
            problem = f"HTTP {response.status_code}"
            if not is_retryable(response.status_code):
                detail = _error_text(response, key)
                raise HeredityError(f"metric 'toxicity-perspective': Perspective answered "
                                    f"{problem}" + (f": {detail}" if detail else ""))
            raise Retryable(problem, retry_after(response))

        try:
            return call_with_retries(attempt, self._policy, self._sleep)
        except RetriesExhausted as exc:
            raise HeredityError(f"metric 'toxicity-perspective': gave up after "
                                f"{self.max_retries} retries; last error: {exc}") from None

    @staticmethod
    def _parse(response: httpx.Response) -> float:
        try:
            value = float(response.json()["attributeScores"][ATTRIBUTE]["summaryScore"]["value"])
        except (ValueError, KeyError, TypeError):
            raise HeredityError("metric 'toxicity-perspective': Perspective's answer has no "
                                f"attributeScores.{ATTRIBUTE}.summaryScore.value") from None
        if not 0.0 <= value <= 1.0:
            raise HeredityError(f"metric 'toxicity-perspective': score {value} is outside 0..1")
        return value


def _error_text(response: httpx.Response, key: str) -> str:
    """Perspective's error message, one short line, with the key removed if it was echoed."""
    try:
        text = str(response.json()["error"]["message"])
    except (ValueError, KeyError, TypeError):
        text = response.text
    return error_text(text, key)
