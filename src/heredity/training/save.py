"""Saving the trained student: full weights, a LoRA adapter merged into its base (the default)
or kept apart, from one process or gathered from a multi-process run."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from heredity.config import TrainConfig
from heredity.core.models import load_model
from heredity.core.rundir import atomic_dir


def base_ref(student: str) -> str:
    """How an adapter names its base model: heredity's own reference (``embedded:...``, a hub
    id, or an absolute local path), which ``models.load_model`` resolves itself."""
    path = Path(student).expanduser()
    return str(path.resolve()) if not student.startswith("embedded:") and path.exists() else student


def write_adapter(model, folder: Path, student: str, state_dict: dict | None = None) -> None:
    """Save a LoRA adapter whose config points at ``student`` as heredity names it, not at the
    cache folder the model was loaded from."""
    model.save_pretrained(folder, state_dict=state_dict) if state_dict is not None else model.save_pretrained(folder)
    config_file = folder / "adapter_config.json"
    config = json.loads(config_file.read_text(encoding="utf-8"))
    config["base_model_name_or_path"] = base_ref(student)
    config_file.write_text(json.dumps(config, indent=2), encoding="utf-8")


def save_student(trainer, tokenizer, student: str, tc: TrainConfig, output: Path, work_dir: Path,
                 device: str = "cpu") -> None:
    """The trained student in ``output``: full weights, LoRA merged into them (the default), or
    with ``train.merge_lora: false`` the adapter alone (``models.load_model`` applies it)."""
    trained = trainer.model
    with atomic_dir(output) as tmp:
        if tc.method != "full" and not tc.merge_lora:
            write_adapter(trained, tmp, student)
        elif tc.method == "qlora":
            adapter = work_dir / "adapter"
            write_adapter(trained, adapter, student)
            # merged into an unquantised copy of the base: merging into the 4-bit model would lose precision
            load_model(str(adapter), device).save_pretrained(tmp)
            shutil.rmtree(adapter, ignore_errors=True)
        else:
            if tc.method == "lora":
                trained = trained.merge_and_unload()  # evaluation then loads a plain model
            trained.eval()
            trained.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)


def save_distributed(trainer, tokenizer, student: str, tc: TrainConfig, output: Path, work_dir: Path) -> None:
    """Save from a multi-process run: every rank helps gather the weights (ZeRO-3 and FSDP
    shard them), then rank 0 writes the model. A LoRA adapter is saved as is
    (``merge_lora: false``) or merged into a fresh copy of the base model, which works
    whatever the sharding was."""
    accelerator = trainer.accelerator
    state = accelerator.get_state_dict(trainer.model)
    if accelerator.is_main_process:
        unwrapped = accelerator.unwrap_model(trainer.model)
        with atomic_dir(output) as tmp:
            if tc.method != "full" and not tc.merge_lora:
                write_adapter(unwrapped, tmp, student, state_dict=state)
            elif tc.method != "full":
                adapter = work_dir / "adapter"
                write_adapter(unwrapped, adapter, student, state_dict=state)
                # merged into a fresh copy of the base: the trained one may be sharded
                load_model(str(adapter)).save_pretrained(tmp)
                shutil.rmtree(adapter, ignore_errors=True)
            else:
                unwrapped.save_pretrained(tmp, state_dict=state)
            tokenizer.save_pretrained(tmp)
    accelerator.wait_for_everyone()
