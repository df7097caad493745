"""The openai backend: any OpenAI-compatible ``/chat/completions`` endpoint over HTTP.

vLLM, llama.cpp, TGI, Ollama and hosted APIs all speak this protocol. One ``generate`` call
sends its batch with at most ``concurrency`` requests in flight and retries what is worth
retrying (429, 5xx, timeouts, dropped connections) with exponential backoff and jitter,
waiting as long as a ``Retry-After`` header asks (the policy of ``heredity.core.http``). Each request yields exactly one completion:
a request is only retried after its previous attempt has failed, so the retries of one
request can never both succeed (a timed-out attempt may still run on the server, but its
answer is never read).

Before its first request the backend looks the served model up in the server's ``/models``
list (``check_model``): llama.cpp's server, for one, answers a request for any model name with
the one model it holds, so a wrong name would otherwise pass unnoticed. ``extra_body`` adds
server-specific fields to every request (llama.cpp's server applies its own top-k, min-p and
repetition penalty unless told otherwise).

The API key is read from the environment variable the config names and goes into the
``Authorization`` header only; it is never stored on public attributes, logged, or put into
an exception message (server error texts are scrubbed of it, too).
"""

from __future__ import annotations

import asyncio
import os
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any, Awaitable, Callable, Sequence, TypeVar
from urllib.parse import urlsplit

from heredity.backends.base import (
    BatchIncomplete,
    Completion,
    Request,
    register_backend,
)
from heredity.config import SamplingConfig, TeacherConfig
from heredity.core.http import (
    RetriesExhausted,
    Retryable,
    RetryPolicy,
    acall_with_retries,
    error_text,
    is_retryable,
    public_url,
    retry_after,
)
from heredity.errors import HeredityError

if TYPE_CHECKING:
    import httpx

T = TypeVar("T")


class _Fatal(Exception):
    """A failure retrying cannot fix (a 4xx other than 429, a malformed answer)."""


def _run_sync(make: Callable[[], Awaitable[T]]) -> T:
    """Run a coroutine to completion from synchronous code.

    ``asyncio.run`` refuses to start inside a running event loop (a notebook, an async
    caller), so there the coroutine runs on a fresh loop in a helper thread instead.
    """
    try:
        asyncio.get_running_loop()
        inside_loop = True
    except RuntimeError:
        inside_loop = False
    if not inside_loop:  # outside the except block, so errors carry no "during handling" context
        return asyncio.run(make())
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="heredity-openai") as pool:
        return pool.submit(lambda: asyncio.run(make())).result()


@register_backend("openai")
class OpenAIBackend:
    def __init__(self, teacher: TeacherConfig, device: str):
        try:
            import httpx  # noqa: F401  (fail here, with the teacher named, not mid-batch)
        except ImportError:
            raise HeredityError(
                f"teacher '{teacher.label}': backend 'openai' needs httpx: pip install httpx"
            ) from None
        if teacher.openai is None:
            raise HeredityError(f"teacher '{teacher.label}': backend 'openai' needs an 'openai:' section")
        self.teacher = teacher.label
        self.options = teacher.openai
        self.served_model = self.options.served_model or teacher.model
        self.url = self.options.base_url.rstrip("/") + "/chat/completions"
        self._where = public_url(self.url)
        if urlsplit(self.url).scheme not in ("http", "https"):
            raise HeredityError(
                f"teacher '{self.teacher}': openai.base_url must start with http:// or https://, "
                f"got '{self._where}'"
            )
        self._key: str | None = None
        if self.options.api_key_env:
            key = os.environ.get(self.options.api_key_env)
            if not key:
                raise HeredityError(
                    f"teacher '{self.teacher}': environment variable {self.options.api_key_env} "
                    "(openai.api_key_env) is not set or empty"
                )
            self._key = key
        self._model_checked = not self.options.check_model
        self._policy = RetryPolicy(max_retries=self.options.max_retries,
                                   backoff_initial_s=self.options.backoff_initial_s,
                                   backoff_max_s=self.options.backoff_max_s,
                                   retry_after_max_s=self.options.retry_after_max_s)

    def __repr__(self) -> str:  # the default repr is harmless, but say so explicitly: no key here
        return f"OpenAIBackend(teacher={self.teacher!r}, url={self._where!r})"

    # ------------------------------------------------------------------------- public

    def generate(self, requests: Sequence[Request], sampling: SamplingConfig) -> list[Completion]:
        if not requests:
            return []
        return _run_sync(lambda: self._generate(list(requests), sampling))

    def close(self) -> None:
        self._key = None

    # ------------------------------------------------------------------------ internals

    def _headers(self) -> dict[str, str]:
        headers = {"Content-Type": "application/json"}
        if self._key:
            headers["Authorization"] = f"Bearer {self._key}"
        return headers

    def _payload(self, request: Request, sampling: SamplingConfig) -> dict[str, Any]:
        return {
            **self.options.extra_body,  # its keys never overlap the ones below (checked in the config)
            "model": self.served_model,
            "messages": request.messages,
            "temperature": sampling.temperature,
            "top_p": sampling.top_p,
            "max_tokens": sampling.max_new_tokens,
            "seed": request.seed,
            "n": 1,
        }

    async def _generate(self, requests: list[Request], sampling: SamplingConfig) -> list[Completion]:
        import httpx

        opts = self.options
        limits = httpx.Limits(max_connections=opts.concurrency, max_keepalive_connections=opts.concurrency)
        gate = asyncio.Semaphore(opts.concurrency)
        async with httpx.AsyncClient(
            timeout=httpx.Timeout(opts.timeout_s), limits=limits, headers=self._headers()
        ) as client:
            if not self._model_checked:
                await self._check_model(client)
            tasks = [
                asyncio.create_task(self._complete(client, gate, self._payload(r, sampling)))
                for r in requests
            ]
            await self._settle(tasks)
        failures = [str(t.exception()) for t in tasks if t.exception() is not None]
        if failures:
            completions = [None if t.exception() is not None else t.result() for t in tasks]
            # the last attempt's problem of each failed request, most frequent first
            problems = "; ".join(f"{problem} (x{n})" for problem, n in Counter(failures).most_common(3))
            raise BatchIncomplete(
                f"teacher '{self.teacher}': {len(failures)} of {len(tasks)} requests failed after "
                f"{opts.max_retries} retries: {problems}",
                completions,
            )
        return [t.result() for t in tasks]

    async def _check_model(self, client: "httpx.AsyncClient") -> None:
        """Stop at once if the server lists its models and the served model is not among them.

        A server without the list (404, an unexpected body, no answer) is not checked: the
        requests themselves then report what is wrong.
        """
        import httpx

        url = self.url.removesuffix("/chat/completions") + "/models"
        try:
            response = await client.get(url)
            listed = [" ".join(str(m["id"]).split()) for m in response.json()["data"]] if response.status_code == 200 else []
        except (httpx.HTTPError, ValueError, KeyError, TypeError):
            listed = []
        if listed and self.served_model not in listed:
            shown = ", ".join(f"'{m}'" for m in listed[:5]) + (f" and {len(listed) - 5} more" if len(listed) > 5 else "")
            raise HeredityError(
                f"teacher '{self.teacher}': {public_url(url)} serves {shown}, not '{self.served_model}' "
                "(openai.served_model, default: the teacher's model; openai.check_model: false skips this check)"
            )
        self._model_checked = True

    async def _settle(self, tasks: list[asyncio.Task]) -> None:
        """Wait for every task; on a fatal error cancel the rest and raise it at once.

        Exhausted retries do not stop the batch: its other requests still finish, so the
        error is raised with the batch fully settled (no request left running behind it).
        """
        pending: set[asyncio.Task] = set(tasks)
        try:
            while pending:
                done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_EXCEPTION)
                for task in done:
                    exc = task.exception()
                    if isinstance(exc, _Fatal):
                        raise HeredityError(f"teacher '{self.teacher}': {exc}") from None
                    if exc is not None and not isinstance(exc, RetriesExhausted):
                        raise exc  # a bug, not a server failure: keep its traceback
        finally:
            for task in pending:
                task.cancel()
            if pending:
                await asyncio.gather(*pending, return_exceptions=True)

    async def _complete(self, client: "httpx.AsyncClient", gate: asyncio.Semaphore,
                        payload: dict[str, Any]) -> Completion:
        """One request, retried until it succeeds, fails fatally or runs out of retries."""
        import httpx

        opts = self.options
        started: float | None = None

        async def attempt(retries: int) -> Completion:
            nonlocal started
            # the backoff happens outside the semaphore (in the retry loop), so backing-off
            # requests do not hold slots that others could use
            async with gate:
                if started is None:  # latency counts from the first send, not the queue wait
                    started = time.perf_counter()
                try:
                    response = await client.post(self.url, json=payload)
                except httpx.TimeoutException:
                    raise Retryable(f"timed out after {opts.timeout_s:g}s") from None
                except httpx.UnsupportedProtocol:
                    raise _Fatal(f"{self._where}: not an http(s) URL") from None
                except httpx.TransportError as exc:
                    # str(exc) of a transport error names the failure, never the headers
                    raise Retryable(f"connection failed ({type(exc).__name__})") from None
                if response.status_code == 200:
                    return self._parse(response, started, retries)
                problem = f"{self._where} answered HTTP {response.status_code}"
                if not is_retryable(response.status_code):
                    detail = error_text(response.text, self._key)
                    raise _Fatal(problem + (f": {detail}" if detail else ""))
                # a misconfigured proxy asking for hours should not stall the whole pool
                raise Retryable(problem, retry_after(response, cap=opts.retry_after_max_s))

        return await acall_with_retries(attempt, self._policy)

    def _parse(self, response: "httpx.Response", started: float, retries: int) -> Completion:
        try:
            body = response.json()
            choice = body["choices"][0]
            text = choice["message"].get("content") or ""
            reason = choice.get("finish_reason")
        except (ValueError, KeyError, IndexError, TypeError, AttributeError):
            raise _Fatal(f"{self._where} answered 200 without a chat completion: "
                         f"{error_text(response.text, self._key)}") from None
        usage = body.get("usage") or {}
        extra: dict[str, Any] = {"retries": retries}
        if reason not in ("stop", "length"):
            extra["finish_reason"] = reason  # e.g. content_filter: kept, reported as a stop
        if "prompt_tokens" not in usage or "completion_tokens" not in usage:
            extra["usage_missing"] = True
        return Completion(
            text=text.strip(),
            finish_reason="length" if reason == "length" else "stop",
            prompt_tokens=int(usage.get("prompt_tokens") or 0),
            completion_tokens=int(usage.get("completion_tokens") or 0),
            latency_s=time.perf_counter() - started,  # first attempt to answer, retries included
            extra=extra,
        )
