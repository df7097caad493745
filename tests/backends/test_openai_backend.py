"""The openai backend against a real local server (the embedded model behind FastAPI).

Covers: agreement with the transformers backend at temperature 0, usage accounting, bounded
concurrency, exactly-once answers in order under 30% injected failures (500, 429, hangs),
the API key's handling (sent, never written, logged or raised), and a pipeline run up to
selection with an openai teacher.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time

import pyarrow.parquet as pq
import pytest

pytest.importorskip("httpx")
pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")

from openai_server import Faults, LocalChatServer, request_id  # noqa: E402

from heredity.backends import (  # noqa: E402
    BatchIncomplete,  # noqa: E402
    Request,
    open_backend,
)
from heredity.backends.transformers_backend import generate_batch  # noqa: E402
from heredity.config import SamplingConfig, TeacherConfig  # noqa: E402
from heredity.core.models import chat_messages, load_model, load_tokenizer  # noqa: E402
from heredity.errors import HeredityError  # noqa: E402
from heredity.plan import config_from_dict  # noqa: E402

MODEL = "embedded:smollm2-135m-instruct"
KEY_ENV = "HEREDITY_TEST_OPENAI_KEY"
# unique per session, so finding it anywhere can only mean it leaked from here
KEY = f"sk-heredity-test-{secrets.token_hex(12)}"

PROMPTS = [
    "Name a colour. Answer in one word.",
    "What is two plus two? Answer with a number.",
    "Give a synonym of happy. Answer in one word.",
]


@pytest.fixture(scope="module")
def model_and_tokenizer():
    return load_model(MODEL), load_tokenizer(MODEL)


@pytest.fixture(scope="module")
def server(model_and_tokenizer):
    model, tokenizer = model_and_tokenizer
    with LocalChatServer(model, tokenizer, served_model=MODEL) as srv:
        yield srv


@pytest.fixture
def fresh(server, monkeypatch):
    """The server with clean counters and no faults; the API key in the environment."""
    server.reset(Faults())
    server.max_batch = 1
    monkeypatch.setenv(KEY_ENV, KEY)
    return server


def teacher(srv: LocalChatServer, **options) -> TeacherConfig:
    opts = {"base_url": srv.base_url, "api_key_env": KEY_ENV, "backoff_initial_s": 0.05,
            "backoff_max_s": 0.5, **options}
    return TeacherConfig(model=MODEL, name="remote", backend="openai", openai=opts)


def requests_for(prompts: list[str], first_seed: int = 100) -> list[Request]:
    return [Request(chat_messages(p, None), first_seed + i) for i, p in enumerate(prompts)]


def sent_id(req: Request, sampling: SamplingConfig) -> str:
    """The id the server gives a request, from what the backend must send."""
    return request_id({"model": MODEL, "messages": req.messages, "seed": req.seed,
                       "temperature": sampling.temperature, "top_p": sampling.top_p,
                       "max_tokens": sampling.max_new_tokens})


# ------------------------------------------------------------------------ (a) real server


def test_greedy_matches_transformers_backend(fresh, model_and_tokenizer):
    model, tokenizer = model_and_tokenizer
    sampling = SamplingConfig(temperature=0.0, max_new_tokens=12)
    reqs = requests_for(PROMPTS)
    backend = open_backend(teacher(fresh, concurrency=2), "cpu")
    got = backend.generate(reqs, sampling)
    want = [generate_batch(model, tokenizer, [r], sampling)[0] for r in reqs]
    assert [c.text for c in got] == [c.text for c in want]
    assert [c.finish_reason for c in got] == [c.finish_reason for c in want]
    assert [(c.prompt_tokens, c.completion_tokens) for c in got] == [
        (c.prompt_tokens, c.completion_tokens) for c in want]
    assert all(c.prompt_tokens > 0 and c.completion_tokens > 0 for c in got)
    assert all(c.latency_s is not None and c.latency_s > 0 and c.extra == {"retries": 0} for c in got)
    assert fresh.stats.max_in_flight <= 2  # concurrency bound honoured
    assert fresh.stats.authorization == {f"Bearer {KEY}"}  # the key is sent, as a Bearer token

    # from inside a running event loop (a notebook, an async caller) it works all the same
    async def inside_loop():
        return backend.generate(reqs[:1], sampling)

    assert asyncio.run(inside_loop())[0].text == got[0].text
    backend.close()


# -------------------------------------------------------------- (b) failures, exactly once


def test_exactly_once_in_order_under_injected_failures(fresh):
    # seed 3 injects every kind (500, 429 and hangs) into these requests' attempts
    fresh.reset(Faults(rate=0.3, seed=3))
    fresh.max_batch = 4  # batch waiting requests, so normal answers stay far below the timeout
    sampling = SamplingConfig(temperature=1.0, max_new_tokens=4)
    reqs = requests_for([f"Name an animal that starts with the letter {c}." for c in "ABCDEFGH"])
    backend = open_backend(teacher(fresh, concurrency=4, timeout_s=8.0, max_retries=8), "cpu")
    out = backend.generate(reqs, sampling)

    stats = fresh.stats
    assert set(stats.injected) == {"500", "429", "hang"}, stats.injected
    assert len(out) == len(reqs)
    ids = [sent_id(r, sampling) for r in reqs]
    assert len(set(ids)) == len(ids)
    for i, (rid, completion) in enumerate(zip(ids, out)):
        assert stats.successes[rid] == 1, (i, stats.successes[rid])  # answered exactly once
        assert stats.delivered[rid] == [completion.text]  # ...and this answer is in slot i
    assert set(stats.successes) == set(ids)
    # every failed attempt was retried, and the retries are reported per request
    assert sum(c.extra["retries"] for c in out) == sum(stats.attempts.values()) - len(reqs)
    assert any(c.extra["retries"] > 0 for c in out)


def test_exhausted_retries_raise_after_the_batch_settles(fresh):
    fresh.force_status = 503
    reqs = requests_for(PROMPTS[:2])
    backend = open_backend(teacher(fresh, max_retries=2, backoff_initial_s=0.01), "cpu")
    with pytest.raises(BatchIncomplete) as err:
        backend.generate(reqs, SamplingConfig(temperature=0.0, max_new_tokens=4))
    message = str(err.value)
    assert "'remote'" in message and "2 of 2 requests" in message and "503" in message
    assert "\n" not in message and KEY not in message
    assert err.value.completions == [None, None]
    # one first attempt and two retries per request, no more
    assert sorted(fresh.stats.attempts.values()) == [3, 3]


# ---------------------------------------------------------------------------- (c) the key


def test_client_error_fails_at_once_in_one_line_without_the_key(fresh, caplog, capfd):
    fresh.force_status = 400
    # a careless server that echoes the request's credentials in its error text
    fresh.force_message = f"bad request (authorization: Bearer {KEY})"
    caplog.set_level(logging.DEBUG)
    backend = open_backend(teacher(fresh, max_retries=5), "cpu")
    started = time.perf_counter()
    with pytest.raises(HeredityError) as err:
        backend.generate(requests_for(PROMPTS), SamplingConfig(temperature=0.0, max_new_tokens=4))
    assert time.perf_counter() - started < 5
    message = str(err.value)
    assert "'remote'" in message and "HTTP 400" in message and "bad request" in message
    assert "\n" not in message and KEY not in message and KEY not in repr(err.value)
    assert all(n == 1 for n in fresh.stats.attempts.values())  # never retried
    assert KEY not in repr(backend)
    out, errors = capfd.readouterr()
    assert KEY not in caplog.text and KEY not in out and KEY not in errors


def test_missing_key_variable_is_a_clear_error(server, monkeypatch):
    monkeypatch.delenv(KEY_ENV, raising=False)
    with pytest.raises(HeredityError, match=f"'remote'.*{KEY_ENV}.*not set"):
        open_backend(teacher(server), "cpu")


@pytest.mark.parametrize("header, seconds", [("1", 1.0), ("0.6", 0.6)])
def test_retry_after_is_waited_out_before_the_retry(fresh, header, seconds):
    fresh.throttle_first = header
    # jittered backoff alone would retry within 10 ms, so only the header can explain a longer wait
    backend = open_backend(teacher(fresh, backoff_initial_s=0.01, backoff_max_s=0.01), "cpu")
    sampling = SamplingConfig(temperature=0.0, max_new_tokens=2)
    reqs = requests_for(PROMPTS[:2])
    started = time.perf_counter()
    out = backend.generate(reqs, sampling)
    elapsed = time.perf_counter() - started
    assert [c.extra["retries"] for c in out] == [1, 1] and all(c.text for c in out)
    assert fresh.stats.injected["throttle"] == 2
    for req in reqs:
        first, second = fresh.stats.attempt_times[sent_id(req, sampling)]
        # measured where the server saw the attempts arrive; the upper bound catches a backend
        # that waits far longer than asked (e.g. backoff added on top of the header)
        assert seconds <= second - first < seconds + 1.0
    assert elapsed >= seconds
    # latency runs from the first attempt, so it includes the wait the server asked for
    assert all(c.latency_s >= seconds for c in out)


def test_retry_after_longer_than_the_cap_waits_the_cap(fresh):
    fresh.throttle_first = "30"
    backend = open_backend(teacher(fresh, backoff_initial_s=0.01, backoff_max_s=0.01, retry_after_max_s=0.5), "cpu")
    sampling = SamplingConfig(temperature=0.0, max_new_tokens=2)
    reqs = requests_for(PROMPTS[:1])
    out = backend.generate(reqs, sampling)
    assert out[0].text and out[0].extra["retries"] == 1
    first, second = fresh.stats.attempt_times[sent_id(reqs[0], sampling)]
    assert 0.5 <= second - first < 1.5


# ------------------------------------------------------------------- (d) in the pipeline


def test_pipeline_until_select_with_an_openai_teacher(fresh, tmp_path, caplog):
    from heredity import pipeline

    caplog.set_level(logging.DEBUG)
    fresh.max_batch = 8
    cfg = config_from_dict({
        "name": "openai-teacher",
        "prompts": {"source": "bundled:quickstart", "limit_train": 3, "limit_eval": 2},
        "teachers": [{"model": MODEL, "name": "remote", "backend": "openai",
                      "openai": {"base_url": fresh.base_url, "api_key_env": KEY_ENV, "concurrency": 4},
                      "sampling": {"temperature": 1.0, "max_new_tokens": 16, "seed": 0}}],
        "k": 2,
        "score": {"metrics": ["length"]},
        "select": {"target": "length", "direction": "max"},
    })
    out = tmp_path / "run"
    result = pipeline.run(cfg, out, until="select")
    assert result["stopped_after"] == "select"

    pool = pq.read_table(out / "generate" / "candidates.parquet").to_pylist()
    assert len(pool) == 6
    assert {r["backend"] for r in pool} == {"openai"} and {r["teacher"] for r in pool} == {"remote"}
    assert sorted(r["sample_index"] for r in pool) == [0, 0, 0, 1, 1, 1]
    assert all(r["completion_tokens"] > 0 and r["text"] for r in pool)
    assert sum(fresh.stats.successes.values()) == 6
    assert (out / "select" / "active.parquet").is_file()

    files = [p for p in out.rglob("*") if p.is_file()]
    assert files
    leaked = [str(p.relative_to(out)) for p in files if KEY.encode() in p.read_bytes()]
    assert leaked == []
    assert KEY not in caplog.text
