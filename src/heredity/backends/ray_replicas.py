"""Scale-out of generation through Ray: each teacher's batches spread over several replicas.

A replica is a Ray actor that opens the teacher's backend on its own node (``device``
decided there) and decodes whole batches. The driver keeps everything that makes a run
resumable: it hands out batches, and as each finishes (in any order) it writes the shard and
counts progress, exactly as a local run does. Samples do not change: every request carries
its own seed, and the batches are the same ones a local run would send.

Ray is started by ``core.cluster`` (``pip install 'heredity[ray]'``). ``ray.address`` joins an
existing cluster (``auto`` or ``ray://host:10001``); without it a local Ray starts.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

from heredity.backends.base import BatchIncomplete, Completion, Request
from heredity.config import RayConfig, SamplingConfig, TeacherConfig
from heredity.core.cluster import actor_retries, ray_error_line, replica_resources, start_ray
from heredity.errors import HeredityError


class _Replica:
    """Body of the Ray actor: one backend, opened where the actor runs."""

    def __init__(self, teacher: TeacherConfig, device: str):
        from heredity.backends import open_backend
        from heredity.core.models import pick_device

        self.backend = open_backend(teacher, pick_device(device))

    def generate(self, requests: Sequence[Request], sampling: SamplingConfig) -> list[Completion | None]:
        try:
            return self.backend.generate(requests, sampling)
        except BatchIncomplete as exc:
            # Returned, not raised: the driver keeps the finished part, as it does locally.
            return [*exc.completions, HeredityError(str(exc))]  # type: ignore[list-item]

    def close(self) -> None:
        self.backend.close()


def generate_on_ray(teacher: TeacherConfig, device: str, rc: RayConfig, batches: Sequence[Sequence[Request]]
                    ) -> Iterator[tuple[int, list[Completion | None], HeredityError | None]]:
    """Yield ``(batch index, completions, failure)`` as batches finish on ``rc.replicas`` actors.

    ``completions`` has one entry per request (``None`` where a request failed); ``failure``
    is set when a batch finished only in part. Each replica holds at most one batch in flight
    plus one queued, so a fast replica is never idle waiting for the driver.
    """
    ray = start_ray(rc)
    # A replica lost with its node restarts (elsewhere if need be) and its batches rerun; the
    # driver keeps one shard per batch, so nothing is generated into the pool twice.
    actor = ray.remote(**replica_resources(rc), **actor_retries(rc))(_Replica)
    replicas = [actor.remote(teacher, device) for _ in range(min(rc.replicas, max(len(batches), 1)))]
    pending: dict[Any, tuple[int, int]] = {}  # object ref → (batch index, replica index)
    queue = list(range(len(batches)))

    def submit(replica: int) -> None:
        if queue:
            index = queue.pop(0)
            pending[replicas[replica].generate.remote(list(batches[index]), teacher.sampling)] = (index, replica)

    try:
        for r in range(len(replicas)):
            submit(r)
            submit(r)
        while pending:
            [ready], _ = ray.wait(list(pending), num_returns=1)
            index, replica = pending.pop(ready)
            try:
                result = ray.get(ready)
            except Exception as exc:  # an actor's error arrives wrapped; report its own line
                raise HeredityError(f"teacher '{teacher.label}' on Ray: {ray_error_line(exc)}") from None
            failure = result.pop() if result and isinstance(result[-1], HeredityError) else None
            submit(replica)
            yield index, result, failure
    finally:
        for replica in replicas:
            ray.kill(replica)
