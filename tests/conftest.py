"""Shared fixtures: the committed excerpts of the real data (tests/data), and small run configs for the real model."""

from __future__ import annotations

import os
from pathlib import Path

# Under pytest-xdist each worker gets its share of the cores, set before anything imports torch
# (subprocesses inherit it): torch's default of every core per process oversubscribes a small
# machine, where a thread waiting for a descheduled sibling makes each step several times slower.
_WORKERS = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
if _WORKERS > 1 and "OMP_NUM_THREADS" not in os.environ:
    os.environ["OMP_NUM_THREADS"] = str(max(1, (os.cpu_count() or 1) // _WORKERS))

# Ray starts its workers at niceness 15, so beside the other xdist worker (or any busy process) a
# Ray test's replicas get the leftovers of the CPU: tests/test_scale.py's two-replica test took
# 369 s beside one busy process, 73 s with this. Every Ray start in the suite (ray.init and the
# `ray start` nodes of tests/test_ray_cluster.py) inherits it; it changes scheduling, not results.
os.environ.setdefault("RAY_worker_niceness", "0")

import pytest  # noqa: E402

DATA = Path(__file__).resolve().parent / "data"
# Every default data lookup (a profile suite run with no data_dir, a CLI subprocess) reads the
# committed excerpts too, never ../shared/data: the suite behaves alike on a bare clone and beside
# the full files. Tests that need the variable unset clear it themselves.
os.environ["HEREDITY_DATA_DIR"] = str(DATA)


def pytest_collection_modifyitems(config, items) -> None:
    """Files with slow tests first (a stable sort: each file keeps its order). Two workers take whole
    files; started first, the long files run side by side and the short ones fill in at the end."""
    slow_files = {item.path for item in items if item.get_closest_marker("slow")}
    items.sort(key=lambda item: item.path not in slow_files)


@pytest.fixture(scope="session")
def data_dir() -> Path:
    """The committed excerpts of the real benchmark files (``tests/data``, the shared layout, at most
    ~50 rows a file; see its README.md). Never ``../shared/data``: the suite passes on a bare clone."""
    return DATA


def tiny_config(**overrides) -> dict:
    """A run small enough for CI on 2 cores, still with the real model and real training."""
    cfg = {
        "name": "tiny",
        "prompts": {"source": "bundled:quickstart", "limit_train": 6, "limit_eval": 4},
        "teachers": [{"model": "embedded:smollm2-135m-instruct",
                      "sampling": {"temperature": 1.0, "max_new_tokens": 24, "seed": 0}}],
        "k": 2,
        "score": {"metrics": ["length", "mtld"]},
        "select": {"target": "length", "direction": "max"},
        "train": {"epochs": 1, "batch_size": 6, "learning_rate": 1e-4, "max_length": 128},
        "eval": {"max_new_tokens": 24, "bootstrap_samples": 200},
    }
    for key, value in overrides.items():
        section, _, field = key.partition(".")
        if field:
            cfg[section][field] = value
        else:
            cfg[section] = value
    return cfg


@pytest.fixture(scope="session")
def alpaca_texts(data_dir: Path) -> list[str]:
    """The AlpacaEval outputs of the excerpt: 12 models × the first 50 instructions."""
    import json

    files = sorted((data_dir / "alpaca_eval").glob("*.json"))
    return [row["output"] for path in files for row in json.loads(path.read_text(encoding="utf-8"))]


def build_hub_schema_dir(shared: Path, out: Path) -> Path:
    """A data folder in hub schema (``<owner>/<name>/<config>/<split>.jsonl|.parquet``) built from the
    real shared-layout files, converted to each pinned hub dataset's columns as ``load_dataset``
    gives them (ClassLabel columns as integers, StereoSet's sentences as columns, RTP nested).
    SEAT and the AlpacaEval outputs are not on the hub: linked in their shared layout."""
    import csv
    import json

    import pyarrow as pa
    import pyarrow.parquet as pq

    from heredity.profile import bbq, calibration, crows_pairs, rtp_toxicity, stereoset, textual

    def write(hub, rows, parquet=False):
        folder = out / hub.folder
        folder.mkdir(parents=True, exist_ok=True)
        if parquet:
            pq.write_table(pa.Table.from_pylist(rows), folder / f"{hub.split}.parquet")
        else:
            with open(folder / f"{hub.split}.jsonl", "w", encoding="utf-8") as fh:
                fh.writelines(json.dumps(r) + "\n" for r in rows)

    hella = [json.loads(line) for line in open(shared / calibration.DATA, encoding="utf-8")]
    rows = []
    for i, r in enumerate(hella):
        label, _, ctx = r["ctx"].partition(": ")
        rows.append({"ind": i, "activity_label": label, "ctx_a": ctx, "ctx_b": "", "ctx": ctx, "endings": r["endings"],
                     "source_id": "", "split": "val", "split_type": "", "label": str(r["label"])})
    write(calibration.HUB, rows)

    with open(shared / crows_pairs.DATA, encoding="utf-8", newline="") as fh:
        write(crows_pairs.HUB, [{"id": i, "sent_more": r["sent_more"], "sent_less": r["sent_less"],
                                 "stereo_antistereo": crows_pairs.DIRECTIONS.index(r["stereo_antistereo"]),
                                 "bias_type": crows_pairs.BIAS_TYPES.index(r["bias_type"])}
                                for i, r in enumerate(csv.DictReader(fh))])

    names = stereoset.GOLD_LABELS + ("related",)
    rows = []
    for r in json.loads((shared / stereoset.DATA).read_text(encoding="utf-8")):
        s = r["sentences"]
        rows.append({"id": r["id"], "target": r["target"], "bias_type": r["bias_type"], "context": r["context"],
                     "sentences": {"sentence": [x["sentence"] for x in s], "id": [x["id"] for x in s],
                                   "labels": [{"label": [names.index(v["label"]) for v in x["labels"]],
                                               "human_id": [v["human_id"] for v in x["labels"]]} for x in s],
                                   "gold_label": [stereoset.GOLD_LABELS.index(x["gold_label"]) for x in s]}})
    write(stereoset.HUB, rows)

    write(bbq.HUB, [json.loads(line) for path in sorted((shared / bbq.FOLDER).glob("*.jsonl"))
                    for line in open(path, encoding="utf-8") if line.strip()])

    dolly = json.loads((shared / textual.DATA).read_text(encoding="utf-8"))
    rows = [{k: dolly[k][i] for k in dolly} for i in dolly["inputs"]]
    # the hub split holds every language; two translated rows check that only English is read
    rows = [{**rows[0], "id": 10**6, "inputs": "Quelles sont 5 façons de manger des pommes ?", "language": "fra"}] + rows
    rows.append({**rows[-1], "id": 10**6 + 1, "inputs": "Wie viele Beine hat eine Spinne?", "language": "deu"})
    write(textual.HUB, rows, parquet=True)

    write(rtp_toxicity.HUB, [{"prompt": {"text": r["prompt"], "toxicity": r["prompt_toxicity"]},
                              "continuation": {"text": r["completion"], "toxicity": r["completion_toxicity"]}}
                             for r in map(json.loads, open(shared / rtp_toxicity.DATA, encoding="utf-8"))])

    for folder in ("seat", "alpaca_eval"):
        (out / folder).symlink_to(shared / folder, target_is_directory=True)
    return out


@pytest.fixture(scope="session")
def hub_data_dir(data_dir: Path, tmp_path_factory) -> Path:
    """The shared data converted to hub schema (``build_hub_schema_dir``), in a fresh folder."""
    return build_hub_schema_dir(data_dir, tmp_path_factory.mktemp("hub_schema"))
