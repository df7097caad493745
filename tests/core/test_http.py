"""heredity.core.http: Retry-After, the backoff policy, the retry loop and keeping secrets out of messages."""

from __future__ import annotations

import asyncio
import email.utils
import random

import pytest

httpx = pytest.importorskip("httpx")

from heredity.core.http import (  # noqa: E402
    RETRYABLE_STATUS,
    RetriesExhausted,
    Retryable,
    RetryPolicy,
    acall_with_retries,
    backoff_delay,
    call_with_retries,
    error_text,
    is_retryable,
    public_url,
    redact,
    retry_after,
)

NOW = 1_700_000_000.0


def test_retry_after_in_seconds():
    assert retry_after(httpx.Response(429, headers={"Retry-After": "2.5"})) == 2.5
    assert retry_after(httpx.Response(429, headers={"retry-after": " 7 "})) == 7.0
    assert retry_after(httpx.Response(429, headers={"Retry-After": "-3"})) == 0.0
    assert retry_after(httpx.Response(429, headers={"Retry-After": "nan"})) is None
    assert retry_after(httpx.Response(429, headers={"Retry-After": "soon"})) is None
    assert retry_after(httpx.Response(503)) is None


def test_retry_after_as_an_http_date():
    later = email.utils.formatdate(NOW + 120, usegmt=True)
    assert retry_after(httpx.Response(429, headers={"Retry-After": later}), now=NOW) == pytest.approx(120.0)
    past = "Wed, 21 Oct 2015 07:28:00 GMT"
    assert retry_after(httpx.Response(429, headers={"Retry-After": past}), now=NOW) == 0.0


def test_retry_after_is_capped():
    assert retry_after(httpx.Response(429, headers={"Retry-After": "3600"}), cap=30.0) == 30.0
    later = email.utils.formatdate(NOW + 86_400, usegmt=True)
    assert retry_after(httpx.Response(503, headers={"Retry-After": later}), cap=5.0, now=NOW) == 5.0
    assert retry_after(httpx.Response(429, headers={"Retry-After": "1"}), cap=30.0) == 1.0


def test_retryable_statuses():
    assert is_retryable(429) and is_retryable(500) and is_retryable(503) and is_retryable(599)
    assert not any(is_retryable(s) for s in (200, 400, 401, 403, 404, 418, 600))
    assert RETRYABLE_STATUS == frozenset({429}) | frozenset(range(500, 600))


@pytest.mark.parametrize("retry", range(8))
def test_backoff_jitter_stays_between_half_and_all_of_the_capped_exponential(retry):
    rng = random.Random(retry)
    ceiling = min(10.0, 0.5 * 2 ** retry)
    delays = [backoff_delay(retry, 0.5, 10.0, rng) for _ in range(500)]
    assert all(ceiling / 2 <= d <= ceiling for d in delays)
    assert max(delays) - min(delays) > ceiling / 4  # jittered, not constant


def test_policy_prefers_retry_after_capped():
    policy = RetryPolicy(backoff_initial_s=1.0, backoff_max_s=4.0, retry_after_max_s=20.0, rng=random.Random(0))
    assert policy.delay(0, 7.0) == 7.0
    assert policy.delay(3, 300.0) == 20.0
    assert 2.0 <= policy.delay(5) <= 4.0


def test_redaction_of_keys():
    key = "sk-secret-123"
    assert redact(f"bad key {key}!", key) == "bad key [redacted]!"
    assert redact("nothing here", None, "") == "nothing here"
    text = error_text(f"line one\n  line two {key}\n" + "x" * 500, key)
    assert key not in text and "\n" not in text and len(text) == 200 and text.endswith("…")
    assert error_text("short", key) == "short"


@pytest.mark.parametrize("url, public", [
    ("https://user:pa55@api.example.com:8443/v1/chat?key=abc#frag", "https://api.example.com:8443/v1/chat"),
    ("http://token@localhost/v1", "http://localhost/v1"),
    ("https://api.example.com/v1?api_key=sk-1", "https://api.example.com/v1"),
    ("http://[::1]:8000/v1", "http://[::1]:8000/v1"),
    ("http://127.0.0.1:8000/v1/chat/completions", "http://127.0.0.1:8000/v1/chat/completions"),
])
def test_public_url_drops_userinfo_and_query(url, public):
    assert public_url(url) == public
    assert "pa55" not in public_url(url) and "sk-1" not in public_url(url)


def scripted(statuses, headers=None):
    """A MockTransport answering ``statuses`` in turn (then 200), counting requests."""
    seen = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        status = statuses[len(seen) - 1] if len(seen) <= len(statuses) else 200
        return httpx.Response(status, headers=(headers or {}) if status != 200 else {}, json={"n": len(seen)})

    return handler, seen


def attempt_with(client: httpx.Client):
    def attempt(retry: int) -> dict:
        response = client.get("https://api.example.com/x")
        if response.status_code == 200:
            return response.json()
        if not is_retryable(response.status_code):
            raise ValueError(f"HTTP {response.status_code}")
        raise Retryable(f"HTTP {response.status_code}", retry_after(response))
    return attempt


def test_retries_429_and_5xx_then_succeeds():
    handler, seen = scripted([429, 503, 500], headers={"Retry-After": "3"})
    sleeps: list[float] = []
    policy = RetryPolicy(max_retries=5, retry_after_max_s=2.0)
    with httpx.Client(transport=httpx.MockTransport(handler)) as client:
        assert call_with_retries(attempt_with(client), policy, sleeps.append) == {"n": 4}
    assert len(seen) == 4 and sleeps == [2.0, 2.0, 2.0]  # Retry-After, capped


def test_gives_up_after_max_retries_with_the_last_problem():
    handler, seen = scripted([503, 503, 502])
    sleeps: list[float] = []
    policy = RetryPolicy(max_retries=2, backoff_initial_s=1.0, backoff_max_s=60.0, rng=random.Random(1))
    with httpx.Client(transport=httpx.MockTransport(handler)) as client:
        with pytest.raises(RetriesExhausted, match="HTTP 502") as info:
            call_with_retries(attempt_with(client), policy, sleeps.append)
    assert len(seen) == 3 and info.value.retries == 2
    assert 0.5 <= sleeps[0] <= 1.0 and 1.0 <= sleeps[1] <= 2.0  # exponential, jittered


def test_a_client_error_is_not_retried():
    handler, seen = scripted([404])
    with httpx.Client(transport=httpx.MockTransport(handler)) as client:
        with pytest.raises(ValueError, match="HTTP 404"):
            call_with_retries(attempt_with(client), RetryPolicy(max_retries=5), lambda s: None)
    assert len(seen) == 1


def test_async_retries():
    handler, seen = scripted([429, 500])
    sleeps: list[float] = []

    async def fake_sleep(s: float) -> None:
        sleeps.append(s)

    async def run() -> dict:
        async with httpx.AsyncClient(transport=httpx.MockTransport(handler)) as client:
            async def attempt(retry: int) -> dict:
                response = await client.get("https://api.example.com/x")
                if response.status_code == 200:
                    return response.json()
                raise Retryable(f"HTTP {response.status_code}", retry_after(response))
            return await acall_with_retries(attempt, RetryPolicy(max_retries=3, backoff_initial_s=0.1), fake_sleep)

    assert asyncio.run(run()) == {"n": 3}
    assert len(seen) == 3 and len(sleeps) == 2 and all(0.05 <= s <= 0.2 for s in sleeps)
