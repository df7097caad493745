"""Multi-process training: the launcher (``accelerate launch`` on GPUs, torchrun on CPUs) and
the worker it starts in each process, ``python -m heredity.training.distributed JOB``.

The launching process writes the job (a JSON file), waits for the workers and reads back
rank 0's result; every worker runs ``train_student`` on its share of the batches.
"""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import asdict
from pathlib import Path
from typing import Any

from heredity.config import TrainConfig
from heredity.core.rundir import read_json, read_table, write_json
from heredity.errors import HeredityError
from heredity.training.checkpoints import prepare_checkpoints
from heredity.training.dpo import train_preference
from heredity.training.fit import Tracking
from heredity.training.sft import train_student


def launch_command(d, device: str, job: Path) -> list[str]:
    """The command that starts ``d.num_processes`` training workers on this machine.

    GPUs go through ``accelerate launch`` (DDP, DeepSpeed ZeRO or FSDP2). CPUs go through
    torchrun with the gloo backend: accelerate's multi-CPU launcher needs MPI.
    """
    worker = ["-m", "heredity.training.distributed", str(job)]
    if not device.startswith("cuda"):
        if d.strategy != "ddp":
            raise HeredityError(f"train.distributed.strategy={d.strategy} needs GPUs; on CPU use ddp")
        return [sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={d.num_processes}",
                f"--nnodes={d.num_machines}", f"--node_rank={d.machine_rank}",
                f"--master_addr={d.main_process_ip or '127.0.0.1'}", f"--master_port={d.main_process_port}",
                *worker]
    cmd = [sys.executable, "-m", "accelerate.commands.launch",
           "--num_processes", str(d.num_processes * d.num_machines), "--num_machines", str(d.num_machines),
           "--machine_rank", str(d.machine_rank), "--main_process_port", str(d.main_process_port),
           "--mixed_precision", "bf16", "--dynamo_backend", "no"]
    if d.main_process_ip:
        cmd += ["--main_process_ip", d.main_process_ip]
    if d.strategy == "ddp":
        cmd += ["--multi_gpu"]
    elif d.strategy in ("zero2", "zero3"):
        cmd += ["--use_deepspeed", "--zero_stage", d.strategy[-1]]
        if d.strategy == "zero3":
            cmd += ["--zero3_init_flag", "false", "--zero3_save_16bit_model", "true"]
    else:  # fsdp
        cmd += ["--use_fsdp", "--fsdp_version", "2", "--fsdp_auto_wrap_policy", "TRANSFORMER_BASED_WRAP",
                "--fsdp_state_dict_type", "FULL_STATE_DICT", "--fsdp_reshard_after_forward", "true",
                "--fsdp_cpu_ram_efficient_loading", "false"]
    return cmd + ["-m", *worker]


def train_distributed(student: str, rows_file: Path, tc: TrainConfig, system_prompt: str | None, device: str,
                      output: Path, work_dir: Path, resume_key: str,
                      objective: dict[str, Any] | None = None, tracking: Tracking | None = None) -> dict[str, Any]:
    """Run ``train_student`` (or, with a preference ``objective``, ``train_preference`` on the pairs in
    ``rows_file``) in ``num_processes`` workers and return rank 0's result. ``train.report_to``
    travels in the train settings, ``tracking`` beside them (rank 0 alone reports)."""
    prepare_checkpoints(work_dir, resume_key)
    job = work_dir / "job.json"
    result_file = work_dir / "result.json"
    result_file.unlink(missing_ok=True)
    write_json(job, {"student": student, "rows": str(rows_file), "train": tc.model_dump(mode="json"),
                     "system_prompt": system_prompt, "device": device, "output": str(output),
                     "work_dir": str(work_dir), "resume_key": resume_key, "result": str(result_file),
                     "objective": objective, "tracking": asdict(tracking) if tracking is not None else None})
    log_file = output.parent / "launch.log"
    with open(log_file, "w", encoding="utf-8") as log:
        code = subprocess.run(launch_command(tc.distributed, device, job), stdout=log, stderr=subprocess.STDOUT,
                              env={**os.environ, "PYTHONUNBUFFERED": "1"}).returncode
    if code != 0 or not result_file.is_file():
        last = last_error_line(log_file)
        raise HeredityError(f"distributed training failed (exit {code}): {last} (full log: {log_file})")
    return read_json(result_file)


def last_error_line(log_file: Path) -> str:
    """The launch log's last line that names an error (else its last line), for a one-line message."""
    lines = [ln.strip() for ln in log_file.read_text(encoding="utf-8", errors="replace").splitlines() if ln.strip()]
    for line in reversed(lines):
        if "Error" in line or "error:" in line:
            return line[:300]
    return lines[-1][:300] if lines else "no output"


def worker_main(job_file: str) -> None:
    """Entry point of one distributed worker (``python -m heredity.training.distributed JOB``)."""
    job = read_json(Path(job_file))
    device = job["device"]
    if device.startswith("cuda"):
        device = f"cuda:{int(os.environ.get('LOCAL_RANK', '0'))}"
    rows, tc = read_table(Path(job["rows"])), TrainConfig(**job["train"])
    tracking = Tracking(**job["tracking"]) if job.get("tracking") else None
    if job.get("objective") is not None:
        info = train_preference(job["student"], rows, tc, job["objective"], device, Path(job["output"]),
                                Path(job["work_dir"]), resume_key=job["resume_key"], cleanup_checkpoints=False,
                                tracking=tracking)
    else:
        info = train_student(job["student"], rows, tc, job["system_prompt"], device, Path(job["output"]),
                             Path(job["work_dir"]), resume_key=job["resume_key"], cleanup_checkpoints=False,
                             tracking=tracking)
    if int(os.environ.get("RANK", "0")) == 0:
        write_json(Path(job["result"]), info)

if __name__ == "__main__":
    worker_main(sys.argv[1])
