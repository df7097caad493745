"""Train-stage options on the real embedded student, CPU: validation split with early
stopping, packing (and why it is safe with SDPA attention), and multi-process training
launched by heredity itself (torchrun + gloo, the CPU form of the GPU launch)."""

from __future__ import annotations

import math

import pyarrow.parquet as pq
import pytest
import torch
from train_helpers import (  # noqa: F401 (one_cpu_thread is an autouse fixture)
    STUDENT,
    make_select,
    one_cpu_thread,
    run_config,
    short_pairs,
    train_config,
)

from heredity.config import DistributedConfig, TrainConfig
from heredity.core.models import load_model
from heredity.errors import HeredityError
from heredity.stages.train import run_train
from heredity.training.distributed import launch_command
from heredity.training.fit import cpu_computes_bf16, uses_bf16
from heredity.training.steps import split_validation, train_key

pytestmark = pytest.mark.slow  # tens of seconds: scheduled first (tests/conftest.py)


@pytest.fixture(scope="module")
def pairs(data_dir, tokenizer):
    return short_pairs(data_dir, tokenizer, 12)


def test_validation_split_holds_out_the_same_prompts_in_every_arm():
    passive = [{"prompt_id": f"p{i}", "prompt": "q", "text": "short"} for i in range(400)]
    active = [{"prompt_id": f"p{i}", "prompt": "q", "text": "a much longer answer"} for i in reversed(range(400))]
    train_p, val_p = split_validation(passive, 0.2, seed=3)
    train_a, val_a = split_validation(active, 0.2, seed=3)
    assert {r["prompt_id"] for r in val_p} == {r["prompt_id"] for r in val_a}
    assert len(train_p) + len(val_p) == 400 and 50 <= len(val_p) <= 110
    _, other_seed = split_validation(passive, 0.2, seed=4)
    assert {r["prompt_id"] for r in other_seed} != {r["prompt_id"] for r in val_p}
    assert split_validation(passive, 0.0, seed=3) == (passive, [])


def test_new_settings_at_their_defaults_keep_old_stage_keys():
    key = train_key(TrainConfig())
    for name in ("packing", "max_steps", "eval_fraction", "eval_steps", "early_stopping_patience", "distributed",
                 "merge_lora", "bf16"):
        assert name not in key
    assert train_key(TrainConfig(bf16="auto")) != key != train_key(TrainConfig(bf16=False))
    assert "merge_lora" not in train_key(TrainConfig(method="lora"))
    assert train_key(TrainConfig(method="lora", merge_lora=False)) != train_key(TrainConfig(method="lora"))
    assert train_key(TrainConfig(merge_lora=False)) == key  # full fine-tuning has no adapter to keep
    assert train_key(TrainConfig(packing=True)) != key
    assert train_key(TrainConfig(eval_fraction=0.1)) != train_key(TrainConfig(eval_fraction=0.1, eval_steps=5))
    # Where the workers run is not part of the model; how many of them is.
    a = TrainConfig(distributed=DistributedConfig(num_processes=2, main_process_port=1234))
    b = TrainConfig(distributed=DistributedConfig(num_processes=2, main_process_port=4321))
    c = TrainConfig(distributed=DistributedConfig(num_processes=4))
    assert train_key(a) == train_key(b) != train_key(c)


def test_early_stopping_keeps_the_best_validated_model(tmp_path, pairs):
    run_dir = tmp_path / "run"
    select = make_select(run_dir, {"active": pairs})
    # A learning rate far too high: validation loss soon rises, which early stopping must catch.
    tc = train_config(method="lora", lora_r=4, lora_alpha=8, batch_size=2, max_length=96, learning_rate=0.05,
                      max_steps=12, eval_fraction=0.25, eval_steps=1, early_stopping_patience=2, save_steps=1)
    result = run_train(run_config(tc), run_dir, select, "active").manifest()["result"]
    log = pq.read_table(run_dir / "train" / "active" / "train_log.parquet").to_pylist()
    validations = [(e["step"], e["eval_loss"]) for e in log if e.get("eval_loss") is not None]
    assert result["validation_examples"] >= 1 and result["examples"] + result["validation_examples"] == len(pairs)
    assert [s for s, _ in validations] == list(range(1, result["steps"] + 1))  # one validation per step
    best_step, best_loss = min(validations, key=lambda v: v[1])
    assert result["best_step"] == best_step and math.isclose(result["best_eval_loss"], best_loss)
    assert result["stopped_early"], validations
    assert result["steps"] == best_step + 2 < 12  # patience 2: two validations without improvement


def test_packed_sequences_do_not_attend_across_examples(tokenizer):
    """Packing is safe without flash attention: with position ids restarting at each example
    and no cache (TRL's training forward), transformers masks attention per example."""
    model = load_model(STUDENT)
    a = tokenizer("The capital of France is Paris, a city on the Seine.", return_tensors="pt")["input_ids"]
    b = tokenizer("Photosynthesis turns light into chemical energy.", return_tensors="pt")["input_ids"]
    positions = torch.cat([torch.arange(a.shape[1]), torch.arange(b.shape[1])])[None]
    with torch.inference_mode():
        packed = model(input_ids=torch.cat([a, b], 1), position_ids=positions, use_cache=False).logits
        alone = model(input_ids=b, use_cache=False).logits
        leaked = model(input_ids=torch.cat([a, b], 1), use_cache=False).logits
    assert torch.allclose(packed[0, a.shape[1]:], alone[0], atol=1e-3)
    assert not torch.allclose(leaked[0, a.shape[1]:], alone[0], atol=1e-1)  # the check can fail


def test_bf16_auto_trains_in_mixed_precision_where_the_cpu_computes_it(tmp_path, pairs):
    assert uses_bf16(TrainConfig(), "cpu") is False  # unset: CPUs train in fp32, as before
    assert uses_bf16(TrainConfig(bf16=False), "cpu") is False
    run_dir = tmp_path / "run"
    select = make_select(run_dir, {"active": pairs[:4]})
    tc = train_config(method="full", batch_size=2, max_length=256, learning_rate=1e-4, max_steps=2, bf16="auto")
    stage = run_train(run_config(tc), run_dir, select, "active")
    result = stage.manifest()["result"]
    assert result["hyperparameters"]["bf16"] is cpu_computes_bf16()
    assert result["steps"] == 2 and math.isfinite(result["train_loss"])
    trained, base = load_model(str(stage.dir / "model"), "cpu"), load_model(STUDENT, "cpu")
    weight = trained.get_input_embeddings().weight
    assert weight.dtype == torch.float32  # mixed precision: the weights the optimiser updates stay fp32
    assert not torch.equal(weight, base.get_input_embeddings().weight)


def test_gradient_checkpointing_changes_the_cost_not_the_model(tmp_path, pairs):
    assert train_key(TrainConfig(gradient_checkpointing=False)) == train_key(TrainConfig())
    weights = {}
    for checkpointing in (True, False):
        run_dir = tmp_path / str(checkpointing)
        select = make_select(run_dir, {"active": pairs[:2]})
        tc = train_config(method="full", batch_size=2, max_length=256, learning_rate=1e-4, max_steps=1,
                          gradient_checkpointing=checkpointing)
        stage = run_train(run_config(tc), run_dir, select, "active")
        assert stage.manifest()["result"]["hyperparameters"]["gradient_checkpointing"] is checkpointing
        model = load_model(str(stage.dir / "model"), "cpu")
        weights[checkpointing] = {name: p.detach() for name, p in model.named_parameters()}
    base = load_model(STUDENT, "cpu").get_input_embeddings().weight
    assert not torch.equal(weights[True]["model.embed_tokens.weight"], base)  # it trained
    for name, value in weights[True].items():
        torch.testing.assert_close(weights[False][name], value, rtol=1e-5, atol=1e-6, msg=name)


def test_packing_trains_on_fewer_longer_sequences(tmp_path, pairs):
    run_dir = tmp_path / "run"
    select = make_select(run_dir, {"active": pairs[:8]})
    tc = train_config(method="lora", lora_r=4, lora_alpha=8, batch_size=2, max_length=256, learning_rate=1e-3,
                      packing=True, max_steps=2)
    result = run_train(run_config(tc), run_dir, select, "active").manifest()["result"]
    assert result["hyperparameters"]["packing"] is True
    assert result["examples_trained"] == 8 and 1 <= result["packed_sequences"] < 8
    assert result["steps"] == 2 and math.isfinite(result["train_loss"])


def test_launch_commands_map_each_strategy(tmp_path):
    job = tmp_path / "job.json"
    cpu = launch_command(DistributedConfig(num_processes=2), "cpu", job)
    assert cpu[1:4] == ["-m", "torch.distributed.run", "--nproc_per_node=2"]
    assert cpu[-3:] == ["-m", "heredity.training.distributed", str(job)]
    gpu = launch_command(DistributedConfig(num_processes=8, num_machines=2, machine_rank=1, main_process_ip="10.0.0.1",
                                           strategy="zero3"), "cuda", job)
    assert gpu[gpu.index("--num_processes") + 1] == "16" and gpu[gpu.index("--zero_stage") + 1] == "3"
    assert gpu[gpu.index("--main_process_ip") + 1] == "10.0.0.1" and gpu[gpu.index("--machine_rank") + 1] == "1"
    assert "--use_fsdp" in launch_command(DistributedConfig(strategy="fsdp"), "cuda", job)
    assert "--multi_gpu" in launch_command(DistributedConfig(strategy="ddp"), "cuda", job)
    with pytest.raises(HeredityError, match="needs GPUs"):
        launch_command(DistributedConfig(strategy="zero3"), "cpu", job)


def test_two_process_training_matches_the_settings(tmp_path, pairs):
    """Two gloo workers on this CPU: the global batch doubles, the step count halves, and rank 0
    saves one plain model (LoRA merged)."""
    run_dir = tmp_path / "run"
    select = make_select(run_dir, {"active": pairs[:8]})
    tc = train_config(method="lora", lora_r=4, lora_alpha=8, batch_size=2, max_length=96, learning_rate=1e-3,
                      epochs=1, distributed={"num_processes": 2, "main_process_port": 29617})
    stage = run_train(run_config(tc), run_dir, select, "active")
    result = stage.manifest()["result"]
    assert result["hyperparameters"]["world_size"] == 2 and result["hyperparameters"]["total_batch_size"] == 4
    assert result["own_steps"] == 2  # 8 rows / 2 per batch / 2 processes, as the step plan counts them
    assert result["steps"] == 2  # 8 examples / (2 per device × 2 processes)
    model = load_model(str(stage.dir / "model"))
    assert not any("lora" in k for k in model.state_dict())
    assert (stage.dir / "launch.log").is_file() and not (stage.dir / "checkpoints").exists()
