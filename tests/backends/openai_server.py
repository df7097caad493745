"""A local OpenAI-compatible chat-completions server on a real model, for tests and benchmarks.

``LocalChatServer(model, tokenizer)`` serves ``POST /v1/chat/completions`` on 127.0.0.1 at a
free port, from a uvicorn server in a daemon thread; use it as a context manager so it stops
when the test ends. Decoding goes through heredity's own transformers ``generate_batch``:
greedy when ``temperature == 0``, otherwise sampled with the request's ``seed``.

Failure injection (``Faults``): a fraction of attempts answers 500, 429 (``Retry-After: 0``)
or hangs (says nothing until the client times out and leaves, at most ``hang_s``).
``throttle_first = "1"`` instead answers every request's first attempt with 429 and
``Retry-After: 1``, deterministically, to check that a client waits as long as asked. Whether
an attempt fails is drawn from an RNG seeded with (fault seed, request id, attempt number),
so the same requests fail the same way however their arrivals interleave. A request's id hashes everything that
defines it (model, messages, seed, sampling), which is what a retry repeats.

``stats`` counts attempts and delivered successes per request id (and keeps the delivered
texts), so a test can check that every request was answered exactly once, with its own answer.
A request whose client disconnects while it waits for the model is dropped, not decoded.

With ``max_batch > 1`` requests waiting together (or arriving within ``batch_wait_s``) are
decoded in one batch, as vLLM or TGI batch concurrent requests; the default decodes one
request at a time. heredity samples each row from its own seed, so batching does not change
what a request gets.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import random
import socket
import threading
import time
from collections import Counter
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

from fastapi import FastAPI
from fastapi import (
    Request as HTTPRequest,  # module level: FastAPI resolves the (string) annotation here
)
from fastapi.responses import JSONResponse

from heredity.backends import Request
from heredity.backends.transformers_backend import generate_batch
from heredity.config import SamplingConfig

LOOPBACK = "127.0.0.1"


@dataclass
class Faults:
    rate: float = 0.0  # share of attempts that fail
    seed: int = 0
    kinds: tuple[str, ...] = ("500", "429", "hang")
    hang_s: float = 60.0  # longest a "hang" waits for the client to give up


@dataclass
class Stats:
    attempts: Counter = field(default_factory=Counter)  # request id -> attempts seen
    attempt_times: dict = field(default_factory=dict)  # request id -> monotonic arrival time of each attempt
    successes: Counter = field(default_factory=Counter)  # request id -> 200s delivered
    abandoned: Counter = field(default_factory=Counter)  # request id -> dropped: the client left first
    injected: Counter = field(default_factory=Counter)  # fault kind -> times injected
    delivered: dict = field(default_factory=dict)  # request id -> texts answered with 200
    authorization: set = field(default_factory=set)  # Authorization header values received
    in_flight: int = 0
    max_in_flight: int = 0
    batch_sizes: list = field(default_factory=list)


def request_id(body: dict[str, Any]) -> str:
    keys = ("model", "messages", "seed", "temperature", "top_p", "max_tokens")
    canonical = json.dumps({k: body.get(k) for k in keys}, sort_keys=True)
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]


def _error(status: int, message: str, headers: dict[str, str] | None = None):
    return JSONResponse({"error": {"message": message, "code": status}}, status_code=status, headers=headers)


class LocalChatServer:
    def __init__(self, model, tokenizer, *, served_model: str = "embedded:smollm2-135m-instruct",
                 faults: Faults | None = None, max_batch: int = 1, start_timeout_s: float = 30.0,
                 max_wait_s: float = 300.0, batch_wait_s: float = 0.02):
        self.model = model
        self.tokenizer = tokenizer
        self.served_model = served_model
        self.faults = faults or Faults()
        self.max_batch = max_batch
        self.batch_wait_s = batch_wait_s  # how long a batch waits for more requests (max_batch > 1)
        self.start_timeout_s = start_timeout_s
        self.max_wait_s = max_wait_s  # a request waiting longer than this for the model is dropped
        self.force_status: int | None = None  # answer every request with this status (e.g. 400)...
        self.force_message: str | None = None  # ...and this error text
        self.throttle_first: str | None = None  # each request's first attempt: 429 with this Retry-After
        self.stats = Stats()
        self.port: int | None = None
        self._server = None
        self._thread: threading.Thread | None = None

    @property
    def base_url(self) -> str:
        return f"http://{LOOPBACK}:{self.port}/v1"

    def reset(self, faults: Faults | None = None) -> None:
        """Forget the counters (and optionally change the faults) between tests."""
        self.stats = Stats()
        self.force_status = self.force_message = self.throttle_first = None
        if faults is not None:
            self.faults = faults

    # --------------------------------------------------------------------- lifecycle

    def start(self) -> "LocalChatServer":
        import uvicorn

        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((LOOPBACK, 0))  # port 0: the OS picks a free one
        self.port = sock.getsockname()[1]
        config = uvicorn.Config(self._app(), log_level="warning", access_log=False, lifespan="on",
                                timeout_graceful_shutdown=2)
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, kwargs={"sockets": [sock]},
                                        name="local-chat-server", daemon=True)
        self._thread.start()
        deadline = time.monotonic() + self.start_timeout_s
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError("local chat server did not start")
            time.sleep(0.02)
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout=15)
        self._server = self._thread = None

    def __enter__(self) -> "LocalChatServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # ------------------------------------------------------------------------ the app

    def _app(self):
        queue: asyncio.Queue = asyncio.Queue()

        @asynccontextmanager
        async def lifespan(app):
            worker = asyncio.create_task(self._decode_worker(queue))
            try:
                yield
            finally:
                worker.cancel()
                await asyncio.gather(worker, return_exceptions=True)

        app = FastAPI(lifespan=lifespan)

        @app.post("/v1/chat/completions")
        async def chat(http: HTTPRequest):
            stats = self.stats
            stats.in_flight += 1
            stats.max_in_flight = max(stats.max_in_flight, stats.in_flight)
            try:
                return await self._chat(http, queue, stats)
            finally:
                stats.in_flight -= 1

        return app

    async def _chat(self, http: HTTPRequest, queue: asyncio.Queue, stats: Stats):
        auth = http.headers.get("authorization")
        if auth is not None:
            stats.authorization.add(auth)
        try:
            body = await http.json()
            if not isinstance(body, dict):
                raise TypeError("body is not an object")
            messages = body["messages"]
            sampling = SamplingConfig(temperature=float(body.get("temperature", 1.0)),
                                      top_p=float(body.get("top_p", 1.0)),
                                      max_new_tokens=int(body.get("max_tokens") or 16))
            seed = int(body.get("seed") or 0)
        except Exception as exc:  # noqa: BLE001 (any malformed body is the client's fault)
            return _error(400, f"bad request: {type(exc).__name__}")
        if body.get("n", 1) != 1:
            return _error(400, "only n=1 is supported")
        if body.get("model") != self.served_model:
            return _error(404, f"model '{body.get('model')}' is not served here")

        rid = request_id(body)
        attempt = stats.attempts[rid]
        stats.attempts[rid] += 1
        stats.attempt_times.setdefault(rid, []).append(time.monotonic())
        if self.force_status is not None:
            return _error(self.force_status, self.force_message or f"forced status {self.force_status}")
        if self.throttle_first is not None and attempt == 0:
            stats.injected["throttle"] += 1
            return _error(429, "throttled", headers={"Retry-After": self.throttle_first})
        fault = self._fault(rid, attempt)
        if fault is not None:
            stats.injected[fault] += 1
            if fault == "500":
                return _error(500, "injected server error")
            if fault == "429":
                return _error(429, "injected rate limit", headers={"Retry-After": "0"})
            # say nothing until the client gives up (its timeout), at most hang_s
            await self._wait(http, asyncio.sleep(self.faults.hang_s), self.faults.hang_s)
            return _error(503, "injected hang")

        done = asyncio.get_running_loop().create_future()
        await queue.put((Request(messages, seed), sampling, done))
        if not await self._wait(http, done, self.max_wait_s):
            done.cancel()  # the client left (timed out): drop the request, as vLLM aborts one
            stats.abandoned[rid] += 1
            return _error(503, "client disconnected")
        try:
            completion = done.result()
        except Exception as exc:  # noqa: BLE001
            return _error(500, f"generation failed: {type(exc).__name__}")
        stats.successes[rid] += 1
        stats.delivered.setdefault(rid, []).append(completion.text)
        return {
            "id": f"chatcmpl-{rid}-{attempt}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": self.served_model,
            "choices": [{"index": 0, "finish_reason": completion.finish_reason,
                         "message": {"role": "assistant", "content": completion.text}}],
            "usage": {"prompt_tokens": completion.prompt_tokens,
                      "completion_tokens": completion.completion_tokens,
                      "total_tokens": completion.prompt_tokens + completion.completion_tokens},
        }

    @staticmethod
    async def _wait(http: HTTPRequest, awaitable, limit_s: float, poll_s: float = 0.02) -> bool:
        """Wait for ``awaitable`` while the client stays connected, at most ``limit_s``.

        True when it finished; False when the client disconnected or time ran out first.
        """
        task = asyncio.ensure_future(awaitable)
        deadline = time.monotonic() + limit_s
        try:
            while time.monotonic() < deadline:
                finished, _ = await asyncio.wait({task}, timeout=poll_s)
                if finished:
                    return True
                if await http.is_disconnected():
                    return False
            return False
        finally:
            if not task.done() and not isinstance(awaitable, asyncio.Future):
                task.cancel()

    def _fault(self, rid: str, attempt: int) -> str | None:
        if self.faults.rate <= 0:
            return None
        rng = random.Random(f"{self.faults.seed}:{rid}:{attempt}")
        if rng.random() >= self.faults.rate:
            return None
        return rng.choice(self.faults.kinds)

    async def _decode_worker(self, queue: asyncio.Queue) -> None:
        """Decode queued requests, up to ``max_batch`` with the same sampling at a time.

        Runs until the server shuts down (the lifespan cancels it); the model runs in a
        worker thread so the event loop keeps answering (and failing) other requests.
        """
        loop = asyncio.get_running_loop()
        backlog: list = []
        while True:
            if not backlog:
                backlog.append(await queue.get())
            # give requests sent at about the same time a moment to join this batch
            deadline = loop.time() + (self.batch_wait_s if self.max_batch > 1 else 0.0)
            while True:
                while not queue.empty():
                    backlog.append(queue.get_nowait())
                if len(backlog) >= self.max_batch or loop.time() >= deadline:
                    break
                await asyncio.sleep(0.002)
            backlog = [item for item in backlog if not item[2].done()]  # clients that left
            if not backlog:
                continue
            sampling = backlog[0][1]
            batch = [item for item in backlog if item[1] == sampling][: self.max_batch]
            backlog = [item for item in backlog if not any(item is b for b in batch)]
            self.stats.batch_sizes.append(len(batch))
            try:
                completions = await loop.run_in_executor(
                    None, generate_batch, self.model, self.tokenizer, [r for r, _, _ in batch], sampling)
            except Exception as exc:  # noqa: BLE001 (reported to each waiting request)
                for _, _, done in batch:
                    if not done.done():
                        done.set_exception(exc)
                continue
            for (_, _, done), completion in zip(batch, completions):
                if not done.done():
                    done.set_result(completion)
