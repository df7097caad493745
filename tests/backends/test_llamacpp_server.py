"""The openai backend and the LLM judge against a real OpenAI-compatible server: llama-cpp-python's
own (``python -m llama_cpp.server``) on the embedded model's GGUF file, started and stopped here.

The same GGUF runs in-process through the llamacpp backend, so the server's answers can be
checked token for token: greedy and seeded samples, token counts, judge verdicts. Also covered:
the server's API key, and a served model name the server does not hold (llama.cpp's server
would answer it with its own model; the backend stops first, in one line).
"""

from __future__ import annotations

import os
import secrets
import socket
import subprocess
import sys
import time

import pytest

pytest.importorskip("llama_cpp", reason="llama-cpp-python is optional (pip install 'llama-cpp-python[server]')")
pytest.importorskip("llama_cpp.server.app", reason="llama-cpp-python's server extra: pip install 'llama-cpp-python[server]'")
httpx = pytest.importorskip("httpx")

from heredity.backends import Request, open_backend  # noqa: E402
from heredity.config import SamplingConfig, TeacherConfig  # noqa: E402
from heredity.core.models import chat_messages, gguf_path  # noqa: E402
from heredity.errors import HeredityError  # noqa: E402
from heredity.judging import Pair, judge_config, open_judge, pairwise  # noqa: E402

MODEL = "embedded:smollm2-135m-instruct"
SERVED = "smollm2"  # the server's --model_alias: what /v1/models lists
KEY_ENV = "HEREDITY_TEST_LLAMACPP_KEY"
KEY = f"sk-heredity-llamacpp-{secrets.token_hex(8)}"
N_CTX = 2048
# llama.cpp's server samples with its own top-k (40), min-p (0.05) and repetition penalty (1.1)
# unless told otherwise; the in-process backend switches them off
NEUTRAL = {"repeat_penalty": 1.0, "top_k": 0, "min_p": 0.0}

PROMPTS = [
    "Name a colour. Answer in one word.",
    "List five fruits, then list them again.",  # repeats itself: the repetition penalty would show
    "Write one sentence about the sea.",
]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def server():
    """llama-cpp-python's server on the embedded GGUF; its base URL. Always stopped afterwards."""
    port = free_port()
    cmd = [sys.executable, "-m", "llama_cpp.server", "--model", str(gguf_path(MODEL)), "--model_alias", SERVED,
           "--host", "127.0.0.1", "--port", str(port), "--n_ctx", str(N_CTX), "--n_threads", "1",
           "--api_key", KEY, "--verbose", "false"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "OMP_NUM_THREADS": "1"})
    base_url = f"http://127.0.0.1:{port}/v1"
    try:
        deadline = time.monotonic() + 60
        while True:
            if proc.poll() is not None:
                pytest.fail(f"llama_cpp.server exited with {proc.returncode}: {proc.stderr.read()[-2000:]}")
            try:
                if httpx.get(f"{base_url}/models", headers={"Authorization": f"Bearer {KEY}"},
                             timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                pytest.fail("llama_cpp.server did not answer /v1/models within 60 s")
            time.sleep(0.2)
        yield base_url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.fixture(scope="module")
def in_process():
    """The same GGUF through the in-process llamacpp backend: the reference."""
    backend = open_backend(TeacherConfig(backend="llamacpp", llamacpp={"n_threads": 1, "n_ctx": N_CTX}), "cpu")
    yield backend
    backend.close()


@pytest.fixture
def with_key(monkeypatch):
    monkeypatch.setenv(KEY_ENV, KEY)


def remote(base_url: str, **options) -> TeacherConfig:
    opts = {"base_url": base_url, "served_model": SERVED, "api_key_env": KEY_ENV, "extra_body": NEUTRAL,
            "concurrency": 2, "max_retries": 1, "backoff_initial_s": 0.05, **options}
    return TeacherConfig(model=MODEL, name="served", backend="openai", openai=opts)


def test_greedy_and_seeded_answers_match_the_in_process_backend(server, in_process, with_key):
    backend = open_backend(remote(server, concurrency=1), "cpu")  # the server sees the requests in order
    greedy = SamplingConfig(temperature=0.0, max_new_tokens=16)
    # seeds as the generate stage makes them (60-bit) and small ones; llama.cpp keeps the low 32 bits
    # in-process (seed % 2**31 there), so the two agree only where that is the same number
    requests = [Request(chat_messages(p, None), seed) for p, seed in zip(PROMPTS, (3, 2**31 - 1, 12345))]
    got = backend.generate(requests, greedy)
    want = in_process.generate(requests, greedy)
    assert [c.text for c in got] == [c.text for c in want]
    assert all(c.text for c in got)
    assert [(c.prompt_tokens, c.completion_tokens, c.finish_reason) for c in got] == [
        (c.prompt_tokens, c.completion_tokens, c.finish_reason) for c in want]
    assert all(c.prompt_tokens > 20 and 0 < c.completion_tokens <= 16 for c in got)
    assert all(c.extra == {"retries": 0} and c.latency_s > 0 for c in got)

    sampled = SamplingConfig(temperature=1.0, top_p=0.9, max_new_tokens=8)
    poem = chat_messages("Write a short poem about rain.", None)
    seeds = [Request(poem, s) for s in (7, 8, 7)]
    # One request at a time, another prompt between two poems: llama-cpp-python's server (0.3.36)
    # answers a prompt sent twice in a row by replaying its last token alone, whose slightly other
    # numbers can change a sample; the in-process backend starts every request afresh.
    got = [c for r in seeds for c in backend.generate([r, Request(chat_messages(PROMPTS[2], None), 0)], sampled)][::2]
    assert got[0].text == got[2].text and got[0].text != got[1].text  # seeded per request, on the server too
    assert [c.text for c in got] == [c.text for c in in_process.generate(seeds, sampled)]
    assert all(c.finish_reason == "length" and c.completion_tokens == 8 for c in got)
    # extra_body reaches the server: without it, its own samplers pick another sample
    defaults = open_backend(remote(server, extra_body={}), "cpu").generate(seeds[:1], sampled)
    assert defaults[0].text != got[0].text


def test_stage_sized_seeds_are_accepted(server, with_key):
    """The generate stage's seeds have 60 bits; the server must take them (not answer 4xx/5xx)."""
    backend = open_backend(remote(server, concurrency=1), "cpu")
    sampled = SamplingConfig(temperature=1.0, max_new_tokens=4)
    request = Request(chat_messages(PROMPTS[0], None), 2**60 - 12345)
    other = Request(chat_messages(PROMPTS[1], None), 1)  # between the two: see the test above
    first, _, second = backend.generate([request, other, request], sampled)
    assert first.text and first.text == second.text


def test_wrong_served_model_name_stops_in_one_line(server, with_key):
    backend = open_backend(remote(server, served_model="HuggingFaceTB/SmolLM2-1.7B-Instruct"), "cpu")
    started = time.perf_counter()
    with pytest.raises(HeredityError) as err:
        backend.generate([Request(chat_messages(PROMPTS[0], None), 0)], SamplingConfig(max_new_tokens=4))
    message = str(err.value)
    assert "\n" not in message and "'served'" in message and f"'{SERVED}'" in message
    assert "'HuggingFaceTB/SmolLM2-1.7B-Instruct'" in message and "openai.served_model" in message
    assert time.perf_counter() - started < 5  # before any completion was asked for
    # without the check, the server answers the unknown name with the model it holds
    unchecked = open_backend(remote(server, served_model="no-such-model", check_model=False), "cpu")
    assert unchecked.generate([Request(chat_messages(PROMPTS[0], None), 0)],
                              SamplingConfig(temperature=0.0, max_new_tokens=4))[0].text


def test_wrong_api_key_is_one_line_without_the_key(server, monkeypatch):
    wrong = f"sk-wrong-{secrets.token_hex(8)}"
    monkeypatch.setenv(KEY_ENV, wrong)
    backend = open_backend(remote(server, check_model=False), "cpu")
    with pytest.raises(HeredityError) as err:
        backend.generate([Request(chat_messages(PROMPTS[0], None), 0)], SamplingConfig(max_new_tokens=4))
    message = str(err.value)
    assert "\n" not in message and "'served'" in message and "HTTP 401" in message
    assert wrong not in message and KEY not in message


def test_llm_judge_through_the_server_matches_the_in_process_judge(server, with_key):
    pairs = [
        Pair("capital", "What is the capital of France?", "Paris.", "The capital of France is Berlin.", "good", "bad"),
        Pair("sky", "What colour is the sky on a clear day?", "Green.", "Blue.", "bad", "good"),
    ]
    settings = {"method": "generate", "max_new_tokens": 6, "max_answer_chars": 200, "bootstrap_samples": 200,
                "device": "cpu"}
    served = pairwise(judge_config({"model": remote(server).model_dump(), **settings}), pairs)
    local = open_judge(judge_config({"model": {"model": MODEL, "backend": "llamacpp", "batch_size": 8,
                                               "llamacpp": {"n_threads": 1, "n_ctx": N_CTX}}, **settings}))
    try:
        reference = pairwise(local, pairs)
    finally:
        local.close()
    assert len(served.rows) == 2 and served.summary["verdicts"] == 4
    for got, want in zip(served.rows, reference.rows):
        assert got["raw_ab"] and got["raw_ba"]  # every verdict decoded, in both orders
        assert (got["raw_ab"], got["raw_ba"]) == (want["raw_ab"], want["raw_ba"])
        assert (got["choice_ab"], got["choice_ba"]) == (want["choice_ab"], want["choice_ba"])
    s = served.summary
    assert s["unparseable"]["count"] == sum((r["choice_ab"] is None) + (r["choice_ba"] is None) for r in served.rows)
    assert s["protocol"]["method"] == "generate" and s["protocol"]["backend"] == "openai"
    assert s["win_rate"] == reference.summary["win_rate"]
