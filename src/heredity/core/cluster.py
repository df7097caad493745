"""Ray, as every stage that scales out uses it: joining or starting a cluster, the resources
and retry settings of one replica, fanning work out as tasks, and moving a folder's files
back to the driver.

The rule every Ray path follows: workers compute, only the driver writes the run directory
(and the score cache), keyed by what each result is for. A task or actor that Ray reruns after
a lost worker therefore cannot leave a second copy of anything; the driver keeps one result
per key.

Ray is imported only here and in the modules that need its API (``pip install 'heredity[ray]'``).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

from heredity.config import RayConfig
from heredity.core.rundir import atomic_path
from heredity.errors import HeredityError

INSTALL_HINT = "pip install 'heredity[ray]'"


def start_ray(rc: RayConfig) -> Any:
    """The ``ray`` module, connected to ``rc.address`` (or a local Ray started here)."""
    try:
        import ray
    except ImportError:
        raise HeredityError(f"ray: scale-out needs Ray installed: {INSTALL_HINT}") from None
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
    # Ray Data's progress bars and progress log lines would interleave with heredity's own
    # (its logger is configured when ray.data is first imported, so quieted after that).
    try:
        from ray.data import DataContext

        ctx = DataContext.get_current()
        ctx.enable_progress_bars = False
        ctx.print_on_execution_start = False
    except ImportError:
        pass
    logging.getLogger("ray.data").setLevel(logging.ERROR)
    return ray


def replica_resources(rc: RayConfig, gpus: bool = True) -> dict[str, float]:
    """What one replica (an actor or a task holding a model) asks Ray for."""
    return {"num_cpus": rc.num_cpus_per_replica, "num_gpus": rc.num_gpus_per_replica if gpus else 0.0}


def actor_retries(rc: RayConfig) -> dict[str, int]:
    """An actor lost with its worker or node is restarted and its calls rerun (not its errors)."""
    return {"max_restarts": rc.max_retries, "max_task_retries": rc.max_retries}


def ray_error_line(exc: BaseException) -> str:
    """The last line of the error a task or actor raised (Ray wraps it in a traceback)."""
    cause = getattr(exc, "cause", None) or exc
    lines = [line for line in str(cause).strip().splitlines() if line.strip()]
    return lines[-1].strip() if lines else type(cause).__name__


def fan_out(rc: RayConfig, jobs: Mapping[str, tuple[Callable[..., Any], tuple[Any, ...]]], what: str
            ) -> Iterator[tuple[str, Any]]:
    """Run ``fn(*args)`` of every job as one Ray task with one replica's resources; yield
    ``(name, result)`` in the order they finish.

    A task whose worker or node is lost is rerun (``rc.max_retries``); an error raised by the
    work itself is not retried and becomes one line naming ``what`` and the job. Each name is
    yielded once, whatever Ray reran. With no jobs (every stage reused) Ray is not started.
    """
    if not jobs:
        return
    ray = start_ray(rc)
    options = {**replica_resources(rc), "max_retries": rc.max_retries, "retry_exceptions": False}
    remote = ray.remote(_call).options(**options)
    pending = {remote.remote(fn, args): name for name, (fn, args) in jobs.items()}
    try:
        while pending:
            [ready], _ = ray.wait(list(pending), num_returns=1)
            name = pending.pop(ready)
            try:
                result = ray.get(ready)
            except Exception as exc:
                raise HeredityError(f"{what} '{name}' on Ray: {ray_error_line(exc)}") from None
            yield name, result
    finally:
        for ref in pending:
            ray.cancel(ref, force=True)


def _call(fn: Callable[..., Any], args: tuple[Any, ...]) -> Any:
    return fn(*args)


def folder_files(folder: Path) -> dict[str, bytes]:
    """Every file under ``folder`` by relative path: how a worker hands what it wrote on its own
    node to the driver, which writes it into the run directory."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def write_files(folder: Path, files: Mapping[str, bytes]) -> None:
    """``folder_files``' result written under ``folder``, each file atomically."""
    for relative, data in files.items():
        target = (folder / relative).resolve()
        if not target.is_relative_to(folder.resolve()) or os.path.isabs(relative):
            raise HeredityError(f"{relative}: a worker returned a file outside {folder}")
        with atomic_path(target) as tmp:
            tmp.write_bytes(data)
