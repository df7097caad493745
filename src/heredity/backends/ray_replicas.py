"""Scale-out of generation through Ray: each teacher's batches spread over several replicas.

A replica is a Ray actor that opens the teacher's backend on its own node (``device``
decided there) and decodes whole batches. The driver keeps everything that makes a run
resumable: it hands out batches, and as each finishes (in any order) it writes the shard and
counts progress, exactly as a local run does. Samples do not change: every request carries
its own seed, and the batches are the same ones a local run would send.

Ray is imported only here (``pip install 'heredity[ray]'``). ``ray.address`` joins an
existing cluster (``auto`` or ``ray://host:10001``); without it a local Ray starts.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

from heredity.backends.base import BatchIncomplete, Completion, Request
from heredity.config import RayConfig, SamplingConfig, TeacherConfig
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


def _start_ray(rc: RayConfig) -> Any:
    try:
        import ray
    except ImportError:
        raise HeredityError("ray: scale-out needs Ray installed: pip install 'heredity[ray]'") from None
    if not ray.is_initialized():
        kwargs: dict[str, Any] = {"address": rc.address, "include_dashboard": False, "log_to_driver": False,
                                  "logging_level": "ERROR"}
        if rc.address is None and rc.num_cpus is not None:
            kwargs["num_cpus"] = rc.num_cpus
        try:
            ray.init(**kwargs)
        except (ConnectionError, RuntimeError, ValueError) as exc:
            raise HeredityError(f"ray: cannot start or join a cluster at {rc.address or 'a local Ray'}: "
                                f"{str(exc).splitlines()[0]}") from None
    return ray


def generate_on_ray(teacher: TeacherConfig, device: str, rc: RayConfig, batches: Sequence[Sequence[Request]]
                    ) -> Iterator[tuple[int, list[Completion | None], HeredityError | None]]:
    """Yield ``(batch index, completions, failure)`` as batches finish on ``rc.replicas`` actors.

    ``completions`` has one entry per request (``None`` where a request failed); ``failure``
    is set when a batch finished only in part. Each replica holds at most one batch in flight
    plus one queued, so a fast replica is never idle waiting for the driver.
    """
    ray = _start_ray(rc)
    actor = ray.remote(num_cpus=rc.num_cpus_per_replica, num_gpus=rc.num_gpus_per_replica)(_Replica)
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
            except Exception as exc:  # an actor's error arrives wrapped; report its own first line
                cause = getattr(exc, "cause", None) or exc
                message = str(cause).strip().splitlines()
                raise HeredityError(f"teacher '{teacher.label}' on Ray: {message[-1] if message else type(cause).__name__}"
                                    ) from None
            failure = result.pop() if result and isinstance(result[-1], HeredityError) else None
            submit(replica)
            yield index, result, failure
    finally:
        for replica in replicas:
            ray.kill(replica)
