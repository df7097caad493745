"""``train.report_to``: the experiment trackers an arm's trainer reports to. Parsing, the preflight
for a tracker that is not installed, the stage key (a tracker never retrains an arm), the hand-over
to the distributed workers, and one real run on the embedded student writing TensorBoard event
files into the stage folder."""

from __future__ import annotations

import importlib.util
import json
import os
from pathlib import Path

import pytest
from train_helpers import (  # noqa: F401 (one_cpu_thread is an autouse fixture)
    STUDENT,
    make_select,
    one_cpu_thread,
    run_config,
    short_pairs,
    train_config,
)

from heredity.config import TrainConfig, parse_config
from heredity.core.rundir import read_json, stable_hash, write_json
from heredity.errors import HeredityError
from heredity.plan import config_from_dict, persisted_config, preflight
from heredity.stages.train import run_train
from heredity.training import distributed
from heredity.training.fit import Tracking, shared_arguments, tensorboard_folder
from heredity.training.steps import train_key

SECRET = "sk-heredity-test-not-a-key"


def test_report_to_takes_one_name_or_a_list():
    assert TrainConfig().report_to == []
    assert TrainConfig(report_to="wandb").report_to == ["wandb"]
    assert TrainConfig(report_to=["tensorboard", "mlflow"]).report_to == ["tensorboard", "mlflow"]
    assert TrainConfig(report_to=None).report_to == []  # `report_to:` left empty in YAML
    assert parse_config({"train": {"report_to": "trackio"}}).train.report_to == ["trackio"]


@pytest.mark.parametrize("value, message", [
    ("neptune", "field 'train.report_to.0': Input should be 'tensorboard', 'wandb', 'mlflow' or 'trackio'"),
    (["wandb", "wandb"], "field 'train.report_to': Value error, a tracker is named twice"),
    (True, "field 'train.report_to': Input should be a valid list"),
])
def test_report_to_refuses_what_is_not_a_tracker(value, message):
    with pytest.raises(HeredityError) as err:
        parse_config({"train": {"report_to": value}})
    assert message in str(err.value) and "\n" not in str(err.value)


def test_a_tracker_is_not_part_of_the_stage_key():
    # The key of the default settings, as it was before report_to existed: arms trained then are reused.
    assert stable_hash(train_key(TrainConfig())) == "0cd039c9bbaed97d"
    assert "report_to" not in train_key(TrainConfig(report_to=["tensorboard", "wandb"]))
    assert train_key(TrainConfig(report_to="mlflow", method="lora")) == train_key(TrainConfig(method="lora"))


def test_trainer_arguments_name_the_trackers(tmp_path):
    off = shared_arguments(TrainConfig(), "cpu", tmp_path, validating=False)
    assert off["report_to"] == "none" and "run_name" not in off
    tracking = Tracking(run_name="study/active/seed-0", project="study", folder=str(tmp_path / "tracker"))
    on = shared_arguments(TrainConfig(report_to=["tensorboard", "wandb"]), "cpu", tmp_path, False, tracking)
    assert on["report_to"] == ["tensorboard", "wandb"]
    assert (on["run_name"], on["project"]) == ("study/active/seed-0", "study")


def test_tensorboard_folder_is_set_only_while_the_trainer_is_built(tmp_path, monkeypatch):
    tracking = Tracking(run_name="r/a/seed-0", project="r", folder=str(tmp_path / "tracker"))
    monkeypatch.setenv("TENSORBOARD_LOGGING_DIR", "/elsewhere")
    with tensorboard_folder(TrainConfig(report_to="tensorboard"), tracking):
        assert os.environ["TENSORBOARD_LOGGING_DIR"] == tracking.folder
    assert os.environ["TENSORBOARD_LOGGING_DIR"] == "/elsewhere"
    monkeypatch.delenv("TENSORBOARD_LOGGING_DIR")
    with tensorboard_folder(TrainConfig(report_to="wandb"), tracking):
        assert "TENSORBOARD_LOGGING_DIR" not in os.environ  # no TensorBoard, nothing to point
    with tensorboard_folder(TrainConfig(report_to="tensorboard"), tracking):
        pass
    assert "TENSORBOARD_LOGGING_DIR" not in os.environ


def preflight_config(data_dir: Path, **train) -> dict:
    """A replayed run (no teacher model) that trains the embedded student on CPU."""
    return {
        "prompts": {"source": str(data_dir / "alpaca_eval" / "gpt-3.5-turbo-0613.json"), "field": "instruction",
                    "id_field": None, "eval_every": 2, "limit_train": 6},
        "teachers": [{"backend": "replay", "replay": {"path": str(data_dir / "alpaca_eval" / "alpaca-7b.json")}}],
        "k": 1, "student": STUDENT, "device": "cpu", "score": {"metrics": ["words"]},
        "select": {"target": "words", "direction": "max"}, "train": train,
    }


def missing(*names: str):
    """``importlib.util.find_spec`` as if ``names`` were not installed."""
    real = importlib.util.find_spec
    return lambda name, *args: None if name in names else real(name, *args)


@pytest.mark.parametrize("tracker, absent", [
    ("wandb", ("wandb",)), ("mlflow", ("mlflow",)), ("trackio", ("trackio",)),
    ("tensorboard", ("tensorboard", "tensorboardX")),
])
def test_preflight_names_a_tracker_that_is_not_installed(tracker, absent, data_dir, tmp_path, monkeypatch):
    cfg = config_from_dict(preflight_config(data_dir, report_to=list(dict.fromkeys(["tensorboard", tracker]))))
    monkeypatch.setattr("heredity.plan.importlib.util.find_spec", missing(*absent))
    with pytest.raises(HeredityError) as err:
        preflight(cfg, tmp_path / "run")
    assert str(err.value) == f"field 'train.report_to': {tracker} is not installed: pip install {tracker}"
    assert not (tmp_path / "run").exists()


def test_preflight_takes_tensorboardx_for_tensorboard(data_dir, tmp_path, monkeypatch):
    cfg = config_from_dict(preflight_config(data_dir, report_to="tensorboard"))
    without = missing("tensorboard")
    monkeypatch.setattr("heredity.plan.importlib.util.find_spec",
                        lambda name, *a: object() if name == "tensorboardX" else without(name, *a))
    preflight(cfg, tmp_path / "run")  # transformers writes with tensorboardX when tensorboard is absent


def test_preflight_stops_only_runs_that_train(data_dir, tmp_path, monkeypatch):
    cfg = config_from_dict(preflight_config(data_dir, report_to="wandb"))
    monkeypatch.setattr("heredity.plan.importlib.util.find_spec", missing("wandb"))
    preflight(cfg, tmp_path / "run", until="select")


def test_distributed_workers_get_the_trackers(tmp_path, monkeypatch):
    """The job file hands ``report_to`` (in the train settings) and the arm's tracking to every worker."""
    seen = {}

    def launch(cmd, **kwargs):
        job = read_json(Path(cmd[-1]))
        seen["train"] = TrainConfig(**job["train"])
        seen["tracking"] = Tracking(**job["tracking"])
        write_json(Path(job["result"]), {"steps": 1})
        return type("Done", (), {"returncode": 0})()

    monkeypatch.setattr(distributed.subprocess, "run", launch)
    tc = train_config(report_to="tensorboard", distributed={"num_processes": 2})
    tracking = Tracking(run_name="r/active/seed-0", project="r", folder=str(tmp_path / "tracker"))
    assert distributed.train_distributed(STUDENT, tmp_path / "rows.parquet", tc, None, "cpu", tmp_path / "model",
                                         tmp_path / "checkpoints", "key", tracking=tracking) == {"steps": 1}
    assert seen == {"train": tc, "tracking": tracking}


@pytest.mark.slow
def test_tensorboard_gets_the_training_loss_in_the_stage_folder(tmp_path, data_dir, tokenizer, monkeypatch):
    """A real SFT run reporting to TensorBoard: the event files land in train/<arm>/tracker with the loss
    of every step and the arm's run name, and hold no credential from the environment. Turning the
    tracker off afterwards reuses the arm rather than training it again."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    monkeypatch.setenv("WANDB_API_KEY", SECRET)  # a tracker credential: it must reach no file of the run
    monkeypatch.delenv("TENSORBOARD_LOGGING_DIR", raising=False)
    run_dir = tmp_path / "run"
    select = make_select(run_dir, {"active": short_pairs(data_dir, tokenizer, 4)})
    tc = train_config(method="lora", lora_r=4, lora_alpha=8, batch_size=2, max_length=96, learning_rate=1e-3,
                      max_steps=2, report_to="tensorboard")
    cfg = run_config(tc)
    cfg.name = "tracked"
    stage = run_train(cfg, run_dir, select, "active")
    assert "TENSORBOARD_LOGGING_DIR" not in os.environ

    folder = run_dir / "train" / "active" / "tracker"
    assert list(folder.glob("events.out.tfevents.*")), sorted(p.name for p in stage.dir.iterdir())
    events = EventAccumulator(str(folder))
    events.Reload()
    losses = events.Scalars("train/loss")
    assert [e.step for e in losses] == [1, 2]
    args = json.loads(events.Tensors("args/text_summary")[0].tensor_proto.string_val[0])
    assert args["run_name"] == "tracked/active/seed-0" and args["report_to"] == ["tensorboard"]
    for path in run_dir.rglob("*"):
        if path.is_file():
            assert SECRET.encode() not in path.read_bytes(), path
    assert SECRET not in json.dumps(persisted_config(cfg))

    def retrain(*args, **kwargs):
        raise AssertionError("a finished arm was trained again")

    monkeypatch.setattr("heredity.stages.train.train_student", retrain)
    again = run_train(run_config(tc.model_copy(update={"report_to": []})), run_dir, select, "active")
    assert again.key == stage.key
