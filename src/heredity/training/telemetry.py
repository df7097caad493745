"""What a training run measures and records: throughput and peak memory per log entry, a
one-line explanation of out-of-memory crashes, the hyper-parameters the trainer actually used,
the best validation step, and the loss plot."""

from __future__ import annotations

import resource
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from enum import Enum
from pathlib import Path
from typing import Any

from heredity.config import TrainConfig
from heredity.core.rundir import atomic_path
from heredity.errors import HeredityError
from heredity.training.checkpoints import checkpoint_step

# SFTConfig fields that decide what training does; recorded per arm as the effective settings.
HYPERPARAMETERS = (
    "num_train_epochs", "max_steps", "learning_rate", "lr_scheduler_type", "warmup_steps", "weight_decay",
    "per_device_train_batch_size", "gradient_accumulation_steps", "max_length", "truncation_mode",
    "packing", "completion_only_loss", "seed", "data_seed", "optim", "adam_beta1", "adam_beta2",
    "adam_epsilon", "max_grad_norm", "bf16", "fp16", "gradient_checkpointing",
)
# DPOConfig's: the objective of a preference arm.
PREFERENCE_HYPERPARAMETERS = ("beta", "loss_type", "loss_weights", "precompute_ref_log_probs", "label_smoothing")


def make_meter(device: str):
    """A trainer callback that adds throughput and peak memory to every log entry."""
    from transformers import TrainerCallback

    class ThroughputMeter(TrainerCallback):
        """Adds to each log entry ``tokens_per_s`` (TRL's running ``num_tokens``, non-padding
        tokens this session, over the wall time since the previous entry) and the peak memory
        since training began (``peak_rss_mb``, ``peak_gpu_mb``), so the log shows the step at
        which memory grew.

        The peaks are not reset between entries: resetting the kernel's RSS high-water mark
        also lowers what getrusage reports as the process's peak, which callers rely on.
        """

        def __init__(self) -> None:
            self.tokens = 0.0
            self._last_time = time.perf_counter()
            self._last_tokens = 0.0

        def on_train_begin(self, args, state, control, **kwargs):
            # After a resume TRL's counter starts again at zero, so both clocks restart here.
            self._last_time = time.perf_counter()
            self._last_tokens = 0.0

        def on_log(self, args, state, control, logs=None, **kwargs):
            if not logs or "num_tokens" not in logs or not state.log_history:
                return
            now = time.perf_counter()
            tokens = float(logs["num_tokens"])
            elapsed = now - self._last_time
            # The trainer appended a copy of ``logs`` to log_history just before calling us;
            # annotating that copy puts the figures in the saved log and checkpoints.
            entry = state.log_history[-1]
            if elapsed > 0:
                entry["tokens_per_s"] = (tokens - self._last_tokens) / elapsed
            entry.update(peak_memory_mb(device))
            self.tokens = tokens
            self._last_time, self._last_tokens = now, tokens

    return ThroughputMeter()


def reset_peak_memory(device: str) -> None:
    """Start the peak-memory measurements (GPU and, on Linux, RSS) afresh."""
    import torch

    if device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
    # Linux only: resets the process's peak RSS (VmHWM), so the peak measured afterwards is
    # training's own and not that of an earlier stage run in the same process.
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        pass


def peak_rss_mb() -> float:
    """The process's peak resident memory in MiB."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return round(int(line.split()[1]) / 1024, 1)
    except (OSError, ValueError, IndexError):
        pass
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux, bytes on macOS
    return round(peak / (2**20 if sys.platform == "darwin" else 1024), 1)


def peak_memory_mb(device: str) -> dict[str, float | None]:
    """Peak RSS and (on CUDA) peak allocated GPU memory since the last reset, in MiB."""
    import torch

    gpu = round(torch.cuda.max_memory_allocated() / 2**20, 1) if device.startswith("cuda") else None
    return {"peak_rss_mb": peak_rss_mb(), "peak_gpu_mb": gpu}


@contextmanager
def explain_out_of_memory(tc: TrainConfig, device: str) -> Iterator[None]:
    """Turn an out-of-memory crash into one line that names the settings to lower."""
    import torch

    try:
        yield
    except torch.OutOfMemoryError:
        raise HeredityError(oom_message(tc, "GPU")) from None
    except RuntimeError as exc:  # the CPU allocator raises a plain RuntimeError
        if "can't allocate memory" not in str(exc):
            raise
        raise HeredityError(oom_message(tc, "CPU")) from None


def oom_message(tc: TrainConfig, where: str) -> str:
    """The one-line out-of-memory error, naming the settings to lower."""
    lora = "" if tc.method in ("lora", "qlora") else ", or set train.method: lora"
    return (
        f"training ran out of {where} memory (batch_size={tc.batch_size}, max_length={tc.max_length}, "
        f"gradient_accumulation_steps={tc.gradient_accumulation_steps}, method={tc.method}): lower "
        f"train.batch_size and raise train.gradient_accumulation_steps to keep the effective batch, "
        f"lower train.max_length{lora}"
    )


def plain(value: Any) -> Any:
    """An enum's value, anything else as is (for recording trainer arguments)."""
    return value.value if isinstance(value, Enum) else value


def effective_hyperparameters(trainer) -> dict[str, Any]:
    """What the trainer actually used (after SFTConfig's own defaults and conversions)."""
    args = trainer.args
    # what this trainer's config has (DPOConfig has no packing); a preference trainer's objective apart,
    # so the settings every arm shares are compared without it
    found = {name: plain(getattr(args, name)) for name in HYPERPARAMETERS if hasattr(args, name)}
    if hasattr(args, "beta"):
        found["preference"] = {name: plain(getattr(args, name)) for name in PREFERENCE_HYPERPARAMETERS}
    found["world_size"] = args.world_size
    found["total_batch_size"] = args.per_device_train_batch_size * args.gradient_accumulation_steps * args.world_size
    peft_config = getattr(trainer.model, "peft_config", None)
    if peft_config:
        lora = next(iter(peft_config.values()))
        modules = lora.target_modules
        found["lora"] = {"r": lora.r, "alpha": lora.lora_alpha, "dropout": lora.lora_dropout,
                         "target_modules": sorted(modules) if isinstance(modules, (set, list)) else modules}
    return found


def best_step(trainer) -> int | None:
    """The step of the best checkpoint by validation loss (``None`` without early stopping)."""
    best = trainer.state.best_model_checkpoint
    return checkpoint_step(best) if best else None


def plot_loss(log: list[dict[str, Any]], path: Path, title: str) -> None:
    """Training loss per optimiser step as a PNG (the Agg canvas: no display needed)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    points = [(e["step"], e["loss"]) for e in log if "loss" in e and "step" in e]
    figure = Figure(figsize=(6, 3.5), dpi=100)
    FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    if points:
        steps, losses = zip(*points)
        axes.plot(steps, losses, marker="o" if len(points) <= 50 else None, markersize=3, label="training")
    validation = [(e["step"], e["eval_loss"]) for e in log if "eval_loss" in e and "step" in e]
    if validation:
        steps, losses = zip(*validation)
        axes.plot(steps, losses, marker="s", markersize=4, label="validation")
        axes.legend()
    axes.set_xlabel("optimiser step")
    axes.set_ylabel("loss")
    axes.set_title(title)
    axes.grid(alpha=0.3)
    figure.tight_layout()
    with atomic_path(path) as tmp:
        figure.savefig(tmp, format="png")
