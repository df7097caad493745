from pathlib import Path

import pytest

from heredity.errors import HeredityError
from heredity.plan import bundled_config, config_from_dict, load_config


def test_bundled_quickstart_is_valid_and_targets_length():
    cfg = bundled_config("quickstart")
    assert cfg.select.target == "length" and cfg.select.direction == "min"
    assert cfg.k == 4
    assert {"length", "mtld"} <= set(cfg.score.metrics)


def test_unknown_key_is_named_in_one_line(tmp_path: Path):
    path = tmp_path / "c.yaml"
    path.write_text("train:\n  epocs: 3\n")
    with pytest.raises(HeredityError) as err:
        load_config(path)
    message = str(err.value)
    assert "\n" not in message
    assert str(path) in message and "unknown key 'train.epocs'" in message


def test_wrong_type_names_the_field(tmp_path: Path):
    path = tmp_path / "c.yaml"
    path.write_text("k: many\n")
    with pytest.raises(HeredityError, match=r"field 'k'"):
        load_config(path)


def test_yaml_syntax_error_names_line(tmp_path: Path):
    path = tmp_path / "c.yaml"
    path.write_text("name: x\ntrain: [1, 2\n")
    with pytest.raises(HeredityError, match=r"c.yaml, line \d+: not valid YAML"):
        load_config(path)


def test_target_metric_is_always_scored():
    cfg = config_from_dict({"score": {"metrics": ["length"]}, "select": {"target": "words"}})
    assert cfg.score.metrics == ["length", "words"]


def test_duplicate_teacher_names_rejected():
    with pytest.raises(HeredityError, match="teacher names must be unique"):
        config_from_dict({"teachers": [{"model": "a/m"}, {"model": "b/m"}]})


def test_active_strategy_spec_is_checked_and_its_metrics_scored():
    cfg = config_from_dict({"score": {"metrics": ["length"]}, "select": {"active": {
        "strategy": "constrained", "metric": "words", "direction": "max",
        "subject_to": {"metric": "mtld", "op": ">=", "value": 40}}}})
    assert set(cfg.score.metrics) == {"length", "words", "mtld"}
    with pytest.raises(HeredityError, match=r"field 'select.active'.*unknown parameter 'metrc'"):
        config_from_dict({"select": {"active": {"strategy": "best", "metrc": "words"}}})


def test_variants_are_arms_whose_metrics_are_scored():
    cfg = config_from_dict({"score": {"metrics": ["length"]}, "select": {"variants": {
        "short": {"strategy": "best", "metric": "words", "direction": "min"}, "clean": "first"}}})
    assert cfg.select.arms() == ("passive", "active", "short", "clean")
    assert set(cfg.score.metrics) == {"length", "words"}
    assert config_from_dict({}).select.arms() == ("passive", "active")
    for bad, why in (("active", "taken by a built-in arm"), ("Long Arm", "lower-case letters"),
                     ("teacher-x", "profiled teachers")):
        with pytest.raises(HeredityError, match=rf"field 'select.variants'.*{why}"):
            config_from_dict({"select": {"variants": {bad: "first"}}})
    with pytest.raises(HeredityError, match=r"field 'select.variants.short'.*unknown parameter 'metrc'"):
        config_from_dict({"select": {"variants": {"short": {"strategy": "best", "metrc": "words"}}}})


def test_readme_config_block_is_a_valid_config(tmp_path):
    """The README's full config (every section) loads as written, once its prompt file exists."""
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text(encoding="utf-8")
    block = readme[readme.index("name: longer-answers"):]
    block = block[:block.index("```")]
    (tmp_path / "prompts.jsonl").write_text('{"id": "1", "prompt": "Say hi."}\n', encoding="utf-8")
    path = tmp_path / "exp.yaml"
    path.write_text(block, encoding="utf-8")
    cfg = load_config(path)
    assert cfg.select.sweep == "off" and cfg.train.distributed is None and cfg.eval.profile is None


def test_eval_judge_is_a_judge_config_from_a_reference_or_a_mapping():
    cfg = config_from_dict({"eval": {"judge": "embedded:smollm2-135m-instruct"}})
    assert cfg.eval.judge.model.model == "embedded:smollm2-135m-instruct"
    assert cfg.eval.judge.model.batch_size == 8 and cfg.eval.judge.resolved_method() == "logprob"
    cfg = config_from_dict({"eval": {"judge": {"model": {"model": "m", "backend": "openai",
                                                          "openai": {"base_url": "http://127.0.0.1:1/v1"}},
                                               "method": "generate"}}})
    assert cfg.eval.judge.model.backend == "openai" and cfg.eval.judge.resolved_method() == "generate"
    with pytest.raises(HeredityError, match=r"field 'eval.judge.template': .*template lacks \{instruction\}"):
        config_from_dict({"eval": {"judge": {"template": "no placeholders"}}})
    with pytest.raises(HeredityError, match="unknown key 'eval.judge.modle'"):
        config_from_dict({"eval": {"judge": {"modle": "m"}}})


def test_old_inner_judge_key_still_works_with_one_deprecation_line(caplog):
    with caplog.at_level("WARNING", logger="heredity.config"):
        cfg = config_from_dict({"eval": {"judge": {"judge": {"model": "m", "batch_size": 4}, "unparseable": "drop"}}})
    assert cfg.eval.judge.model.model == "m" and cfg.eval.judge.model.batch_size == 4
    assert cfg.eval.judge.unparseable == "drop"
    notes = [r for r in caplog.records if r.name == "heredity.config"]
    assert len(notes) == 1 and "deprecated" in notes[0].getMessage() and "\n" not in notes[0].getMessage()
    with pytest.raises(HeredityError, match="'model' only"):
        config_from_dict({"eval": {"judge": {"judge": "m", "model": "m"}}})


def test_openai_extra_body_adds_fields_and_keys_only_when_set():
    from heredity.stages.generate import teacher_fingerprint

    def teacher(**openai):
        cfg = config_from_dict({"teachers": [{"model": "m", "backend": "openai",
                                              "openai": {"base_url": "http://127.0.0.1:1/v1", **openai}}]})
        return cfg.teachers[0]

    plain = teacher_fingerprint(teacher(), None)
    # options added after keys were first written leave those keys (and the pools behind them) valid
    assert "openai_extra_body" not in plain and plain == teacher_fingerprint(teacher(check_model=False), None)
    tuned = teacher_fingerprint(teacher(extra_body={"repeat_penalty": 1.0}), None)
    assert tuned["openai_extra_body"] == {"repeat_penalty": 1.0} and tuned != plain
    with pytest.raises(HeredityError, match=r"field 'teachers.0.openai.extra_body': .*seed, temperature") as err:
        teacher(extra_body={"temperature": 0.2, "seed": 1, "top_k": 0})
    assert "\n" not in str(err.value)


def test_repetition_penalty_keys_only_when_set_and_not_for_openai():
    from heredity.stages.generate import teacher_fingerprint

    def teacher(**sampling):
        return config_from_dict({"teachers": [{"model": "embedded:smollm2-135m-instruct",
                                               "sampling": sampling}]}).teachers[0]

    assert "repetition_penalty" not in teacher_fingerprint(teacher(), None)["sampling"]
    assert teacher_fingerprint(teacher(repetition_penalty=1.2), None)["sampling"]["repetition_penalty"] == 1.2
    with pytest.raises(HeredityError, match="repetition_penalty: transformers backend only") as err:
        config_from_dict({"teachers": [{"model": "m", "backend": "openai", "sampling": {"repetition_penalty": 1.2},
                                        "openai": {"base_url": "http://127.0.0.1:1/v1"}}]})
    assert "\n" not in str(err.value)


def test_profile_settings_are_checked_before_any_stage_runs():
    from heredity.stages.profile import profile_key

    def profile(**settings):
        return config_from_dict({"eval": {"profile": settings}}, "c.yaml")

    cases = [({"suites": ["toxcity"]}, "field 'eval.profile.suites': unknown profile suite 'toxcity'"),
             ({"suites": ["calibration"], "limits": {"toxicity": 30}},
              "field 'eval.profile.limits.toxicity': suite 'toxicity' is not profiled"),
             ({"toxicity_scorer": "toxic"}, "field 'eval.profile.toxicity_scorer': unknown metric 'toxic'"),
             ({"limits": {"toxicity": 0}}, "eval.profile.limits.toxicity")]
    for settings, message in cases:
        with pytest.raises(HeredityError) as err:
            profile(**settings)
        assert str(err.value).startswith("c.yaml: ") and message in str(err.value) and "\n" not in str(err.value)
    # per-suite limits enter the stage key only when set, so runs made before them keep their profiles
    assert "limits" not in profile_key(profile(suites=["all"]).eval.profile)
    limited = profile(suites=["toxicity", "bbq"], limits={"toxicity": 30, "bbq": None}).eval.profile
    assert profile_key(limited)["limits"] == {"toxicity": 30, "bbq": None}


def test_select_target_old_name_metric_is_still_read_with_a_note(caplog):
    with caplog.at_level("WARNING", logger="heredity.config"):
        old = config_from_dict({"select": {"metric": "mtld", "direction": "min"}})
    assert old.select.target == "mtld" and "'metric' is deprecated; call it 'target'" in caplog.text
    assert old.select.active_spec() == {"strategy": "best", "metric": "mtld", "direction": "min"}
    assert old.model_dump()["select"]["target"] == "mtld" and "metric" not in old.model_dump()["select"]
    with pytest.raises(HeredityError, match="give 'target' only"):
        config_from_dict({"select": {"metric": "mtld", "target": "length"}})


def test_profile_samples_per_prompt_old_name_is_read_and_keys_stay(caplog):
    from heredity.stages.profile import profile_key

    with caplog.at_level("WARNING", logger="heredity.config"):
        old = config_from_dict({"eval": {"profile": {"suites": ["toxicity"], "samples": 7}}})
    new = config_from_dict({"eval": {"profile": {"suites": ["toxicity"], "samples_per_prompt": 7}}})
    assert old.eval.profile.samples_per_prompt == 7 and "'samples' is deprecated" in caplog.text
    # a finished profile stage written before the rename keeps its key
    assert profile_key(new.eval.profile) == profile_key(old.eval.profile) and profile_key(new.eval.profile)["samples"] == 7
