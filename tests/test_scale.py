"""Generation spread over Ray replicas gives the same pool as a local run."""

import json
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from heredity.errors import HeredityError
from heredity.pipeline import run
from heredity.plan import config_from_dict

pytestmark = pytest.mark.slow  # tens of seconds: scheduled first (tests/conftest.py)

ray = pytest.importorskip("ray", reason="Ray is optional (pip install 'heredity[ray]')")


def gen_config(**extra) -> dict:
    return {
        "prompts": {"source": "bundled:quickstart", "limit_train": 4},
        "teachers": [{"model": "embedded:smollm2-135m-instruct", "batch_size": 2,
                      "sampling": {"temperature": 1.0, "max_new_tokens": 10}}],
        "k": 2, "device": "cpu", "score": {"metrics": ["words"]}, "select": {"target": "words"}, **extra,
    }


def pool(out: Path) -> list[tuple[str, str]]:
    rows = pq.read_table(out / "generate" / "candidates.parquet").to_pylist()
    return [(r["candidate_key"], r["text"]) for r in rows]


@pytest.fixture
def local_ray():
    yield
    ray.shutdown()


def test_two_replicas_give_the_local_pool(tmp_path, local_ray, monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # two replicas on two cores: one thread each
    run(config_from_dict(gen_config()), tmp_path / "local", until="generate")
    scaled = gen_config(ray={"replicas": 2, "num_cpus": 2})
    run(config_from_dict(scaled), tmp_path / "ray", until="generate")
    assert pool(tmp_path / "ray") == pool(tmp_path / "local")  # same keys, same texts, same order
    shards = list((tmp_path / "ray" / "generate" / "shards").glob("*.parquet"))
    assert len(shards) == 4  # 8 candidates in batches of 2, each written as it finished
    manifest = json.loads((tmp_path / "ray" / "generate" / "manifest.json").read_text())
    assert manifest["counts"]["generated_now"] == 8


def test_a_replica_that_cannot_start_is_one_line(tmp_path, local_ray):
    bad = gen_config(ray={"replicas": 1, "num_cpus": 1})
    bad["teachers"][0]["model"] = str(tmp_path / "broken-model")
    (tmp_path / "broken-model").mkdir()
    # passes the preflight (config.json and a weights file), fails when a replica loads it
    (tmp_path / "broken-model" / "config.json").write_text("{}")
    (tmp_path / "broken-model" / "model.safetensors").write_bytes(b"not weights")
    with pytest.raises(HeredityError, match="on Ray") as err:
        run(config_from_dict(bad), tmp_path / "run", until="generate")
    assert "\n" not in str(err.value) and "broken-model" in str(err.value)
