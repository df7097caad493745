"""Train-stage failures and bookkeeping that need no training run (plus one tiny run)."""

from __future__ import annotations

import json
import warnings

import pytest
import torch
from train_helpers import (  # noqa: F401 (one_cpu_thread is an autouse fixture)
    STUDENT,
    one_cpu_thread,
    short_pairs,
    train_config,
)

from heredity.errors import HeredityError
from heredity.training.checkpoints import KEY_FILE, prepare_checkpoints
from heredity.training.sft import check_qlora, train_student
from heredity.training.steps import train_key
from heredity.training.telemetry import explain_out_of_memory, plot_loss


def test_empty_selection_is_one_line_error(tmp_path):
    with pytest.raises(HeredityError, match="empty selection") as err:
        train_student(STUDENT, [], train_config(), None, "cpu", tmp_path / "m", tmp_path / "c")
    assert "\n" not in str(err.value)


def test_qlora_on_cpu_is_one_line_error_naming_the_field(tmp_path, monkeypatch):
    rows = [{"prompt": "Name a colour.", "text": "Blue."}]
    loaded = []
    monkeypatch.setattr("heredity.training.sft.load_model", lambda *a, **k: loaded.append(a))
    with pytest.raises(HeredityError, match=r"^train\.method: qlora needs a CUDA GPU \(device is 'cpu'\)") as err:
        train_student(STUDENT, rows, train_config(method="qlora"), None, "cpu", tmp_path / "m", tmp_path / "c")
    assert "\n" not in str(err.value) and not loaded  # refused before loading the model


def test_qlora_without_bitsandbytes_is_one_line_error(monkeypatch):
    monkeypatch.setitem(__import__("sys").modules, "bitsandbytes", None)  # as if not installed
    with pytest.raises(HeredityError, match=r"^train\.method: qlora needs bitsandbytes: pip install 'heredity\[qlora\]'$"):
        check_qlora("cuda:0")


def test_qlora_run_fails_before_generating(tmp_path):
    from heredity.pipeline import run
    from heredity.plan import config_from_dict

    cfg = config_from_dict({"student": STUDENT, "device": "cpu", "train": {"method": "qlora"}})
    with pytest.raises(HeredityError, match="train.method: qlora needs a CUDA GPU"):
        run(cfg, tmp_path / "run")
    assert not (tmp_path / "run" / "generate").exists()
    with pytest.raises(HeredityError, match="train.*qlora works with distributed.strategy: ddp only"):
        config_from_dict({"train": {"method": "qlora", "distributed": {"strategy": "fsdp"}}})


@pytest.mark.parametrize("method", ["full", "lora"])
def test_gpu_out_of_memory_names_the_settings_to_lower(method):
    tc = train_config(method=method, batch_size=16, max_length=1024, gradient_accumulation_steps=2)
    with pytest.raises(HeredityError) as err, explain_out_of_memory(tc, "cuda"):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
    message = str(err.value)
    assert "\n" not in message and "GPU memory" in message
    for setting in ("batch_size=16", "max_length=1024", "gradient_accumulation_steps=2", "train.batch_size",
                    "train.max_length"):
        assert setting in message
    assert ("train.method: lora" in message) == (method == "full")


def test_cpu_allocation_failure_is_explained_and_other_errors_pass():
    with pytest.raises(HeredityError, match="CPU memory"), explain_out_of_memory(train_config(), "cpu"):
        raise RuntimeError("[enforce fail at alloc_cpu.cpp:117] DefaultCPUAllocator: can't allocate memory")
    with pytest.raises(RuntimeError, match="shape mismatch"), explain_out_of_memory(train_config(), "cpu"):
        raise RuntimeError("shape mismatch")


def _checkpoint(folder, step, complete=True):
    path = folder / f"checkpoint-{step}"
    path.mkdir(parents=True)
    (path / "optimizer.pt").write_bytes(b"x")
    if complete:
        (path / "trainer_state.json").write_text(json.dumps({"global_step": step}))
    return path


def test_resume_picks_newest_complete_checkpoint_of_the_same_stage(tmp_path):
    work = tmp_path / "checkpoints"
    assert prepare_checkpoints(work, "key-a") is None  # nothing yet; the folder is claimed
    assert (work / KEY_FILE).read_text() == "key-a"
    _checkpoint(work, 2)
    _checkpoint(work, 4)
    cut_short = _checkpoint(work, 6, complete=False)  # the save a kill interrupted
    assert prepare_checkpoints(work, "key-a") == work / "checkpoint-4"
    assert not cut_short.exists()
    assert (work / "checkpoint-2").exists()  # older ones are the trainer's to rotate


def test_checkpoints_of_another_stage_key_are_discarded(tmp_path):
    work = tmp_path / "checkpoints"
    prepare_checkpoints(work, "key-a")
    _checkpoint(work, 3)
    assert prepare_checkpoints(work, "key-b") is None  # other data or settings: start over
    assert not (work / "checkpoint-3").exists() and (work / KEY_FILE).read_text() == "key-b"
    _checkpoint(work, 3)
    assert prepare_checkpoints(work, None) is None  # no key: never resume
    assert not (work / "checkpoint-3").exists()


def test_checkpoint_cadence_is_not_part_of_the_stage_key():
    a = train_key(train_config(save_steps=1, save_total_limit=2))
    b = train_key(train_config(save_steps=500, save_total_limit=1))
    assert a == b


def test_loss_plot_is_a_png(tmp_path):
    log = [{"step": i, "loss": 2.0 / i} for i in range(1, 6)] + [{"step": 5, "train_runtime": 1.0}]
    plot_loss(log, tmp_path / "loss.png", "train/active")
    assert (tmp_path / "loss.png").read_bytes().startswith(b"\x89PNG")


def test_fewer_examples_than_one_batch_trains_one_step_per_epoch_and_warns(tmp_path, data_dir, tokenizer):
    rows = short_pairs(data_dir, tokenizer, 2, max_tokens=40)
    tc = train_config(method="lora", epochs=1, batch_size=4, max_length=96, lora_r=2, lora_alpha=4)
    with pytest.warns(UserWarning, match="fewer than one optimiser step"):
        info = train_student(STUDENT, rows, tc, None, "cpu", tmp_path / "m", tmp_path / "c")
    assert info["steps"] == 1 and info["examples_trained"] == 2
    assert info["hyperparameters"]["per_device_train_batch_size"] == 4  # not shrunk: arms stay identical
    assert info["warnings"] == [w for w in info["warnings"] if "fewer than one optimiser step" in w] != []
    assert (tmp_path / "m" / "model.safetensors").is_file() and not (tmp_path / "c").exists()


def test_prompts_that_fill_max_length_are_an_error(tmp_path, tokenizer):
    rows = [{"prompt": "Summarise this: " + "the quick brown fox jumps over the lazy dog " * 8, "text": "A fox."}]
    tc = train_config(method="lora", max_length=32, lora_r=2, lora_alpha=4)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(HeredityError, match="raise train.max_length"):
            train_student(STUDENT, rows, tc, None, "cpu", tmp_path / "m", tmp_path / "c")
