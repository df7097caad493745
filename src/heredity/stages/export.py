"""Export a finished run as shareable artefacts in the hub's and TRL's schema (``heredity export``).

``OUT`` (default ``RUN/export/``) gets, built aside and renamed into place:

- ``datasets/<arm>/``: the arm's selected rows as ``data/train-00000-of-00001.parquet`` in TRL's
  conversational prompt-completion schema (``prompt``: [system?, user], ``completion``:
  [assistant]) — the form heredity's train stage trains on (loss on the completion only), so
  ``SFTTrainer`` on the file does what the run did — plus each row's prompt id, teacher, sample
  index, finish reason and metric values; and a dataset card (``README.md``);
- ``datasets/<arm>-pairs/``: a preference arm's pairs (``select/<arm>.pairs.parquet``, when the
  run has them) in TRL's prompt/chosen/rejected schema, with its card;
- ``models/<arm>/``: the trained student's files (hard links where the file system allows, so
  the weights are not stored twice) and a model card with the report's figures for that arm;
- ``README.md`` (an index) and ``export.json`` (the same, for tools; it also marks the folder as
  an export, which is the only kind of existing folder an export replaces).

A run over several training seeds (``train.seeds``) is exported as its first replicate (the run
folder itself, whose selection and students are the first seed's); the cards give the pooled
figures, this seed's own, and where the other seeds' students are.

Nothing secret is written: the cards read the persisted config (API keys appear there only as
environment variable names), and every text written is checked for the values of the
credential variables before the folder is renamed into place. ``push_export`` uploads each
folder to its own hub repo with the token ``huggingface_hub`` finds itself (``HF_TOKEN`` or a
login); heredity never reads it beyond checking that there is one.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import yaml

from heredity.core.arms import BASE, PASSIVE, decoding_label, ordered_arms, target_of
from heredity.core.models import EMBEDDED
from heredity.core.rundir import (
    RunLock,
    atomic_dir,
    iter_parquet,
    parquet_schema,
    read_json,
    stable_hash,
    write_json,
    write_text,
)
from heredity.errors import HeredityError
from heredity.reporting.html import fmt, metric_notes, rule_text, teacher_label
from heredity.strategies import list_strategies
from heredity.strategies.export import chat_schema, to_chat_rows

DATA_FILE = "data/train-00000-of-00001.parquet"
MARKER = "export.json"
# Environment variables that hold credentials whatever the config says; the config's own
# ``api_key_env`` names are added to these.
SECRET_ENV = ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "OPENAI_API_KEY", "PERSPECTIVE_API_KEY")


def export_run(run_dir: Path, out: Path | None = None, hub_prefix: str | None = None) -> dict[str, Any]:
    """Write the export of the finished run in ``run_dir`` to ``out`` and return its index
    (``export.json``). ``hub_prefix`` (a hub user or organisation) names each folder's repo in the
    cards, so that they link to each other once pushed."""
    run_dir = Path(run_dir)
    if not (run_dir / "summary.json").is_file():
        raise HeredityError(f"{run_dir}: not a finished run (no summary.json)")
    if (run_dir / "round-1").is_dir() and not (run_dir / "select").is_dir():
        rounds = sorted(int(d.name.removeprefix("round-")) for d in run_dir.glob("round-*") if d.name[6:].isdigit())
        raise HeredityError(f"{run_dir}: a rounds run; export one round's directory, e.g. {run_dir / f'round-{rounds[-1]}'}")
    out = Path(out) if out is not None else run_dir / "export"
    if out.exists() and not (out.is_dir() and (not any(out.iterdir()) or (out / MARKER).is_file())):
        raise HeredityError(f"{out}: exists and is not a heredity export; choose another --out or remove it")
    if hub_prefix is not None and not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]{0,95}", hub_prefix):
        raise HeredityError(f"--push '{hub_prefix}': give a hub user or organisation name "
                            "(letters, digits, '.', '_', '-')")
    with _lock(run_dir):
        run = _read_run(run_dir)
        with atomic_dir(out) as tmp:
            index = _write_export(run, tmp, hub_prefix)
            _check_no_secrets(tmp, run["config"])
    return index


def _lock(run_dir: Path):
    """The run's lock, so that no run rewrites the folder while it is read; a run folder this user
    cannot write to (someone else's, shared read-only) is read without it."""
    import contextlib

    if not os.access(run_dir, os.W_OK):
        return contextlib.nullcontext()
    return RunLock(run_dir)


def push_export(out: Path, private: bool = False, log=print) -> list[str]:
    """Upload every folder of the export in ``out`` to the hub repo its index names; returns their URLs."""
    from huggingface_hub import HfApi, get_token

    if not get_token():
        raise HeredityError("--push needs a hub token: set HF_TOKEN or log in with `hf auth login`")
    index = read_json(Path(out) / MARKER)
    api, urls = HfApi(), []
    for entry in index["folders"]:
        if not entry.get("repo_id"):
            raise HeredityError(f"{out}: exported without a hub prefix; export again with --push")
        try:
            url = api.create_repo(entry["repo_id"], repo_type=entry["kind"], private=private, exist_ok=True)
            api.upload_folder(repo_id=entry["repo_id"], repo_type=entry["kind"],
                              folder_path=str(Path(out) / entry["path"]),
                              commit_message=f"heredity export of run '{index['run']}', arm {entry['arm']}")
        except Exception as exc:  # the hub's errors (HTTP, auth, quota) end the command in one line
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            raise HeredityError(f"push {entry['repo_id']} ({entry['kind']}): {first}") from None
        urls.append(str(url))
        log(f"pushed {entry['path']} → {url}")
    return urls


# ----------------------------------------------------------------------------- reading the run


def _read_run(run_dir: Path) -> dict[str, Any]:
    summary = read_json(run_dir / "summary.json")
    config = read_json(run_dir / "config.json") if (run_dir / "config.json").is_file() else summary.get("config") or {}
    select = run_dir / "select"
    if not (select / "card.json").is_file():
        raise HeredityError(f"{run_dir}: no select/card.json; is it a finished run directory?")
    arms = [a for a in ordered_arms(summary.get("training") or {}) if a != BASE]
    models = {}
    for arm in arms:
        folder = run_dir / "train" / arm / "model"
        if not ((folder / "config.json").is_file() or (folder / "adapter_config.json").is_file()):
            raise HeredityError(f"{run_dir}: train/{arm}/model holds no saved model; rerun the run to finish it")
        models[arm] = folder
    return {
        "dir": run_dir, "summary": summary, "config": config, "card": read_json(select / "card.json"),
        "arms": arms, "models": models,
        "datasets": {a: select / f"{a}.parquet" for a in arms if (select / f"{a}.parquet").is_file()},
        "pairs": {p.name.removesuffix(".pairs.parquet"): _pairs_file(p)
                  for p in sorted(select.glob("*.pairs.parquet"))},
        "select_manifest": _manifest(select), "train_manifests": {a: _manifest(run_dir / "train" / a) for a in arms},
    }


def _pairs_file(path: Path) -> Path:
    missing = {"prompt", "chosen", "rejected"} - set(parquet_schema(path).names)
    if missing:
        raise HeredityError(f"{path}: preference pairs without column(s) {', '.join(sorted(missing))}")
    return path


def _manifest(folder: Path) -> dict[str, Any]:
    try:
        return read_json(folder / "manifest.json")
    except (OSError, ValueError):
        return {}


# ----------------------------------------------------------------------------- writing


def _write_export(run: dict[str, Any], out: Path, prefix: str | None) -> dict[str, Any]:
    name = str(run["summary"].get("name") or run["dir"].name)

    def repo(suffix: str) -> str | None:
        return f"{prefix}/{_repo_name(name + suffix)}" if prefix else None

    folders: list[dict[str, Any]] = []
    for arm, path in run["datasets"].items():
        rows = _write_sft_data(path, out / "datasets" / arm / DATA_FILE, run["config"].get("system_prompt"),
                               run["card"])
        folders.append({"kind": "dataset", "arm": arm, "path": f"datasets/{arm}", "rows": rows,
                        "schema": "prompt-completion", "repo_id": repo(f"-{arm}-data")})
    for arm, path in run["pairs"].items():
        target = out / "datasets" / f"{arm}-pairs" / DATA_FILE
        target.parent.mkdir(parents=True)
        shutil.copyfile(path, target)  # already TRL's preference schema, as the select stage wrote it
        folders.append({"kind": "dataset", "arm": arm, "path": f"datasets/{arm}-pairs",
                        "rows": pq.read_metadata(target).num_rows, "schema": "prompt-chosen-rejected",
                        "repo_id": repo(f"-{arm}-pairs")})
    for arm, folder in run["models"].items():
        _link_model(folder, out / "models" / arm, _hub_id(run["config"].get("student")))
        folders.append({"kind": "model", "arm": arm, "path": f"models/{arm}", "repo_id": repo(f"-{arm}"),
                        "adapter": (folder / "adapter_config.json").is_file()})
    index = {"run": name, "exported_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
             "run_config_hash": stable_hash(run["config"]),
             "heredity": (run["summary"].get("versions") or {}).get("heredity"), "folders": folders}
    for entry in folders:
        where = out / entry["path"]
        card = (_model_card(run, entry, folders, index) if entry["kind"] == "model"
                else _dataset_card(run, entry, where, index) if entry["schema"] == "prompt-completion"
                else _pairs_card(run, entry, where, index))
        write_text(where / "README.md", card)
    write_text(out / "README.md", _index_card(run, index))
    write_json(out / MARKER, index)
    return index


def _repo_name(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "-", text).strip("-.")[:96] or "heredity-run"


def _write_sft_data(path: Path, target: Path, system_prompt: str | None, card: dict[str, Any]) -> int:
    """The arm's rows in the prompt-completion schema with their metadata and scores, batch by batch."""
    names = parquet_schema(path).names
    metrics = [m for m in card.get("metrics", {}) if m in names]
    schema = pa.schema([*chat_schema("prompt-completion", metadata=True), pa.field("finish_reason", pa.string()),
                        *(pa.field(m, pa.float64()) for m in metrics)])
    target.parent.mkdir(parents=True, exist_ok=True)
    rows = 0
    with pq.ParquetWriter(target, schema) as writer:
        for batch in iter_parquet(path):
            records = batch.to_pylist()
            chat = to_chat_rows(records, system_prompt, "prompt-completion", metadata=True)
            for item, record in zip(chat, records):
                item.update({m: record.get(m) for m in ("finish_reason", *metrics)})
            writer.write_table(pa.Table.from_pylist(chat, schema=schema))
            rows += len(records)
    return rows


def _link_model(source: Path, target: Path, base_hub_id: str | None) -> None:
    """The model's files, hard-linked (copied across file systems). An adapter's base reference
    becomes the base's hub id (else its name), so the export names no local path."""
    for src in sorted(p for p in source.rglob("*") if p.is_file() and p.name != "README.md"):
        dst = target / src.relative_to(source)
        dst.parent.mkdir(parents=True, exist_ok=True)
        if src.name == "adapter_config.json":
            config = json.loads(src.read_text(encoding="utf-8"))
            ref = str(config.get("base_model_name_or_path") or "")
            config["base_model_name_or_path"] = base_hub_id or Path(ref.removeprefix("embedded:")).name
            dst.write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")
            continue
        try:
            os.link(src, dst)
        except OSError:
            shutil.copy2(src, dst)


def _check_no_secrets(out: Path, config: dict[str, Any]) -> None:
    """Refuse the export if a text in it holds the value of a credential variable."""
    names = set(SECRET_ENV)
    judge = ((config.get("eval") or {}).get("judge") or {}).get("model")
    for teacher in [*(config.get("teachers") or []), judge]:
        if isinstance(teacher, dict) and (teacher.get("openai") or {}).get("api_key_env"):
            names.add(teacher["openai"]["api_key_env"])
    secrets = [value for name in names if len(value := os.environ.get(name, "")) >= 8]
    for path in out.rglob("*"):
        if secrets and path.is_file() and path.suffix in (".md", ".json"):
            text = path.read_text(encoding="utf-8", errors="replace")
            if any(secret in text for secret in secrets):
                raise HeredityError(f"export: {path.name} would hold the value of a credential variable; "
                                    "nothing was written")


# ----------------------------------------------------------------------------- what the cards say


def _looks_local(ref: str) -> bool:
    return ref.startswith(("/", ".", "~")) or Path(ref).expanduser().exists()


def _hub_id(ref: str | None) -> str | None:
    """The hub model behind a model reference: a hub id as is, an embedded model's source; a
    local folder or file has none."""
    if not ref or (not ref.startswith("embedded:") and _looks_local(ref)):
        return None
    if ref.startswith("embedded:"):
        spec = EMBEDDED.get(ref.removeprefix("embedded:"))
        return spec.hub_id if spec else None
    return ref if re.fullmatch(r"[\w.-]+(/[\w.-]+)?", ref) else None


def _model_name(ref: Any) -> str:
    """A model as a card names it: the reference, or a local path by its last part only."""
    ref = str(ref)
    return f"local model `{Path(ref).name}`" if not ref.startswith("embedded:") and _looks_local(ref) else ref


def _license(ref: Any, stated: Any = None) -> str | None:
    """A source's license, when the config or heredity itself states it."""
    if stated:
        return str(stated).lower()
    ref = str(ref or "")
    if ref.startswith("embedded:"):
        spec = EMBEDDED.get(ref.removeprefix("embedded:"))
        return spec.license if spec else None
    return "apache-2.0" if ref.startswith("bundled:") else None  # heredity's own prompt sets: its license


def _licenses(run: dict[str, Any], with_student: bool) -> tuple[str | None, str]:
    """(license, a paragraph saying why): a license only when every source states the same one."""
    cfg = run["config"]
    sources = {f"teacher {teacher_label(t)}": _license(t.get("model"), t.get("license"))
               for t in cfg.get("teachers") or []}
    prompts = (cfg.get("prompts") or {}).get("source")
    sources[f"prompts `{prompts}`"] = _license(prompts)
    if with_student:
        sources[f"base model {_model_name(cfg.get('student'))}"] = _license(cfg.get("student"))
    listed = "; ".join(f"{k}: {v or 'not stated'}" for k, v in sources.items())
    found = set(sources.values())
    if len(found) == 1 and None not in found:
        license_ = found.pop()
        return license_, (f"`{license_}`: every source states it ({listed}). A teacher's terms of use may still "
                          "restrict training other models on its outputs; check them.")
    return None, (f"Not set: the sources do not all state the same license ({listed}). Check the teachers' and "
                  "the prompts' terms before you share or reuse this.")


def _pct(x: Any) -> str:
    return "–" if x is None else f"{x:.0%}"


def _shares(shares: dict[str, Any]) -> str:
    return ", ".join(f"{t} {_pct(s)}" for t, s in sorted(shares.items(), key=lambda x: (-(x[1] or 0), x[0]))) or "–"


def _rule(rule: Any) -> str:
    """A selection rule in words: its spec and what its strategy does (registered strategies only:
    a card's rule never makes the export import a module)."""
    known = {s.name: s.description for s in list_strategies()}
    what = known.get(rule.get("strategy"), "").rstrip(".") if isinstance(rule, dict) else ""
    return f"`{rule_text(rule)}`" + (f" ({what[:1].lower() + what[1:]})" if what else "")


def _front_matter(meta: dict[str, Any]) -> str:
    meta = {k: v for k, v in meta.items() if v not in (None, [], {})}
    return "---\n" + yaml.safe_dump(meta, sort_keys=False, allow_unicode=True, width=1000) + "---\n\n"


def _features(schema: pa.Schema) -> list[dict[str, Any]]:
    """``dataset_info.features`` as the hub writes them in a card."""
    def one(name: str, kind: pa.DataType) -> dict[str, Any]:
        if pa.types.is_list(kind) and pa.types.is_struct(kind.value_type):
            return {"name": name, "list": [one(f.name, f.type) for f in kind.value_type]}
        return {"name": name, "dtype": {"double": "float64", "float": "float32"}.get(str(kind), str(kind))}
    return [one(f.name, f.type) for f in schema]


def _dataset_meta(run: dict[str, Any], entry: dict[str, Any], where: Path, tags: list[str]) -> dict[str, Any]:
    data = where / DATA_FILE
    footer = pq.read_metadata(data)
    size, rows = data.stat().st_size, entry["rows"]
    memory = sum(footer.row_group(i).total_byte_size for i in range(footer.num_row_groups))  # uncompressed
    bucket = next((label for limit, label in ((1_000, "n<1K"), (10_000, "1K<n<10K"), (100_000, "10K<n<100K"),
                                              (1_000_000, "100K<n<1M")) if rows < limit), "1M<n<10M")
    return {
        "license": _licenses(run, with_student=False)[0],
        "task_categories": ["text-generation"],
        "tags": ["synthetic", "heredity", *tags],
        "pretty_name": f"heredity {run['summary'].get('name')}: {entry['arm']}",
        "size_categories": [bucket],
        "configs": [{"config_name": "default", "data_files": [{"split": "train", "path": DATA_FILE}]}],
        "dataset_info": {"features": _features(footer.schema.to_arrow_schema()),
                         "splits": [{"name": "train", "num_bytes": memory, "num_examples": rows}],
                         "download_size": size, "dataset_size": memory},
    }


def _pool(run: dict[str, Any]) -> list[str]:
    """The pool a selection was made from: prompts, teachers and their sampling, seeds."""
    cfg, card = run["config"], run["card"]
    teachers = cfg.get("teachers") or []
    system = f", system prompt `{cfg['system_prompt']}`" if cfg.get("system_prompt") else ""
    lines = [f"The pool: {card['prompts']} training prompts from `{(cfg.get('prompts') or {}).get('source')}`, "
             f"k = {cfg.get('k')} candidates per prompt from each of {len(teachers)} teacher(s), "
             f"{card['pool_size']} candidates in all{system}.", "",
             "| teacher | model | backend | temperature | top-p | max new tokens |", "|---|---|---|---|---|---|"]
    for t in teachers:
        s = t.get("sampling") or {}
        lines.append(f"| {teacher_label(t)} | {_model_name(t.get('model'))} | {t.get('backend')} | "
                     f"{fmt(s.get('temperature'))} | {fmt(s.get('top_p'))} | {fmt(s.get('max_new_tokens'))} |")
    seeds = (run["summary"].get("seeds") or {}).get("values") or []
    if len(seeds) > 1:
        lines += ["", f"The run trained every arm with {len(seeds)} seeds ({', '.join(map(str, seeds))}); this is the "
                      "first seed's selection (a random rule draws anew for each seed: "
                      + ", ".join(f"`seeds/seed-{s}/select/`" for s in seeds[1:]) + " in the run hold the others)."]
    return lines


def _provenance(run: dict[str, Any], stage: dict[str, Any], index: dict[str, Any], extra: list[str]) -> list[str]:
    summary = run["summary"]
    versions = summary.get("versions") or {}
    commit = (summary.get("provenance") or {}).get("git_commit")
    return ["## Provenance", "",
            f"- heredity {versions.get('heredity', '?')}" + (f", commit `{commit}`" if commit else "") + "; "
            + ", ".join(f"{k} {v}" for k, v in versions.items() if k != "heredity"),
            f"- run `{summary.get('name')}`, config hash `{index['run_config_hash']}` (`stable_hash` of its "
            "`config.json`)",
            f"- stage `{stage.get('stage', '?')}`, key `{stage.get('key', '?')}`, finished "
            f"{stage.get('finished_at', '?')}",
            *extra, f"- exported {index['exported_at']} by `heredity export`", ""]


def _use(entry: dict[str, Any], trainer: str, student: str | None) -> list[str]:
    config = trainer.replace("Trainer", "Config")
    hub = [f'ds = load_dataset("{entry["repo_id"]}", split="train")  # or from the hub'] if entry["repo_id"] else []
    return ["## Use", "", "```python", "from datasets import load_dataset", f"from trl import {config}, {trainer}", "",
            f'ds = load_dataset("parquet", data_files="{DATA_FILE}", split="train")  # this folder', *hub,
            f'trainer = {trainer}(model="{_hub_id(student) or "BASE_MODEL"}", train_dataset=ds, '
            f'args={config}(output_dir="out"))', "trainer.train()", "```", ""]


def _dataset_card(run: dict[str, Any], entry: dict[str, Any], where: Path, index: dict[str, Any]) -> str:
    arm, card, summary = entry["arm"], run["card"], run["summary"]
    target = card.get("target") or summary["target"]
    data_hash = (run["select_manifest"].get("data_hashes") or {}).get(arm)
    baseline = "; `passive` is its baseline: what a student inherits when nobody steers" if arm == PASSIVE else ""
    rows = []
    for m, e in card.get("metrics", {}).items():
        mine = e.get(arm) or {}
        shift = "–" if mine.get("shift_pct") is None else f"{mine['shift_pct']:+.1f}%"
        rows.append(f"| {m}{' (target)' if m == target['metric'] else ''} | {fmt(e['pool']['mean'])} | "
                    f"{fmt(mine.get('mean'))} | {shift} | "
                    f"{' / '.join(fmt(mine.get(q)) for q in ('q25', 'median', 'q75'))} |")
    lines = [
        f"# {summary.get('name')}: the `{arm}` training set", "",
        "Synthetic instruction-following data selected by heredity: teachers answered each training prompt several "
        f"times, and this set keeps the answers chosen by the rule {_rule((card.get('rules') or {}).get(arm))}. "
        f"The run's `{arm}` student was fine-tuned on exactly these rows. The run's target: "
        f"{target['direction']} `{target['metric']}`{baseline}.", "",
        "## Selection", "", *_pool(run), "",
        f"This set: {entry['rows']} rows; prompts the rule dropped: {(card.get('dropped_prompts') or {}).get(arm, 0)}; "
        f"answers cut at the teacher's token cap: {_pct((card.get('truncated_share') or {}).get(arm))}.", "",
        f"Answers kept by teacher: {_shares((card.get('teacher_share') or {}).get(arm) or {})}.", "",
        "heredity's metrics on the pool and on this set:", "",
        "| metric | pool mean | this set mean | shift | this set q25 / median / q75 |", "|---|---|---|---|---|",
        *rows, "",
        "## Schema", "",
        "TRL's conversational prompt-completion form: `prompt` is [system?, user], `completion` is [assistant]. It is "
        "the form heredity trains on (the loss on the completion only), so `SFTTrainer` on this file sees what the "
        "student saw. Beside them: `prompt_id`, `teacher`, `sample_index` (the candidate's number for its teacher), "
        "`finish_reason` (`length`: cut at the token cap) and one column per metric.", "",
        *_use(entry, "SFTTrainer", run["config"].get("student")),
        "## License", "", _licenses(run, with_student=False)[1], "",
        *_provenance(run, run["select_manifest"], index,
                     [f"- data hash `{data_hash}` (the train stage's key)"] if data_hash else []),
    ]
    return _front_matter(_dataset_meta(run, entry, where, ["sft", "conversational"])) + "\n".join(lines)


def _pairs_card(run: dict[str, Any], entry: dict[str, Any], where: Path, index: dict[str, Any]) -> str:
    arm, summary = entry["arm"], run["summary"]
    table = pq.read_table(where / DATA_FILE)
    columns = table.column_names
    info = (run["card"].get("pairs") or {}).get(arm) or {}
    margins = np.array([x for x in table.column("margin").to_pylist() if x is not None]
                       if "margin" in columns else [], dtype=float)
    spread = "–" if not margins.size else "min {}, q25 {}, median {}, q75 {}, max {}, mean {}".format(
        *(fmt(float(x)) for x in (margins.min(), *np.quantile(margins, [0.25, 0.5, 0.75]), margins.max(),
                                  margins.mean())))

    def share(column: str) -> str:
        values = table.column(column).to_pylist() if column in columns else []
        return _shares({t: values.count(t) / len(values) for t in set(values)})

    dropped = info.get("dropped") or {}
    why = "; prompts without a pair, by reason: " + ", ".join(f"{k} {v}" for k, v in dropped.items()) if dropped else ""
    lines = [
        f"# {summary.get('name')}: the `{arm}` preference pairs", "",
        "Preference pairs selected by heredity: per prompt, a chosen answer against a rejected answer to the same "
        f"prompt, both from the run's pool of teacher answers. The run's `{arm}` student was trained on them with a "
        "preference loss (TRL's DPOTrainer).", "",
        "## Pairs", "", *_pool(run), "",
        f"{table.num_rows} pairs{why}.", "",
        *([f"Pairing rule: `{json.dumps(info['rule'], sort_keys=True)}`", ""] if info.get("rule") else []),
        f"Margin (how much better the chosen answer is on the pair's metric): {spread}.", "",
        f"Chosen answers by teacher: {share('chosen_teacher')}. "
        f"Rejected answers by teacher: {share('rejected_teacher')}.", "",
        "## Schema", "",
        "TRL's conversational preference form: `prompt` is [system?, user], `chosen` and `rejected` are [assistant]; "
        "beside them: " + ", ".join(f"`{c}`" for c in columns if c not in ("prompt", "chosen", "rejected")) + ".", "",
        *_use(entry, "DPOTrainer", run["config"].get("student")),
        "## License", "", _licenses(run, with_student=False)[1], "",
        *_provenance(run, run["select_manifest"], index, []),
    ]
    return _front_matter(_dataset_meta(run, entry, where, ["dpo", "preference", "conversational"])) + "\n".join(lines)


def _mean_ci(summary: dict[str, Any], arm: str, metric: str) -> str:
    lo, hi = ((summary.get("ci95") or {}).get(arm) or {}).get(metric) or (None, None)
    return f"{fmt(summary['arms'][arm].get(metric))} [{fmt(lo)}, {fmt(hi)}]"


def _headline(summary: dict[str, Any], arm: str, target: str) -> list[str]:
    """The arm's paired differences on its target against passive and base, in words."""
    lines = []
    for other in (PASSIVE, BASE):
        d = (summary.get("differences") or {}).get(f"{arm}_vs_{other}", {}).get(target)
        if not d or d.get("diff") is None:
            continue
        lo, hi = d["ci95"]
        verdict = ("the CI excludes 0" if lo is not None and hi is not None and (lo > 0 or hi < 0)
                   else "the CI includes 0: no evidence of a difference")
        lines.append(f"- vs `{other}` on the target `{target}`: {fmt(d['diff'])} [95% CI {fmt(lo)}, {fmt(hi)}], "
                     f"q = {fmt(d.get('q'))} ({d.get('family', '–')}); {verdict}.")
    return lines


def _differences(summary: dict[str, Any], arm: str, target: str) -> list[str]:
    """Every paired difference of the arm against another, the target's first."""
    rows = []
    for name, per_metric in (summary.get("differences") or {}).items():
        mine, _, other = name.partition("_vs_")
        for metric, d in per_metric.items() if mine == arm else ():
            lo, hi = d.get("ci95") or (None, None)
            moved = " (moved)" if d.get("family") != "primary" and d.get("moved") else ""
            label = f"{metric} (target)" if metric == target else metric
            rows.append((metric != target, f"| {arm} − {other} | {label} | {d.get('family', '–')} | "
                                           f"{fmt(d.get('diff'))} | [{fmt(lo)}, {fmt(hi)}] | "
                                           f"{fmt(d.get('q'))}{moved} |"))
    return [row for _, row in sorted(rows, key=lambda r: r[0])]


def _seeds(summary: dict[str, Any], arm: str, target: str) -> list[str]:
    seeds = summary.get("seeds") or {}
    values = seeds.get("values") or []
    if len(values) < 2:
        return []
    first = (seeds.get("per_seed") or {}).get(str(values[0])) or {}
    own = ((first.get("arms") or {}).get(arm) or {}).get(target)
    vs = ((first.get("differences") or {}).get(f"{arm}_vs_{PASSIVE}") or {}).get(target) or {}
    lo, hi = vs.get("ci95") or (None, None)
    alone = f", vs `passive` {fmt(vs.get('diff'))} [{fmt(lo)}, {fmt(hi)}] (prompts resampled)" if vs else ""
    return ["", f"The run trained every arm with {len(values)} seeds ({', '.join(map(str, values))}): the figures "
                "above pool them (their CIs resample prompts and seeds). This folder holds the first seed's student "
                f"(seed {values[0]}): its own `{target}` mean {fmt(own)}{alone}. The other seeds' students are in "
                "the run folder: " + ", ".join(f"`seeds/seed-{s}/train/{arm}/model`" for s in values[1:]) + "."]


def _training(run: dict[str, Any], arm: str, how: str, result: dict[str, Any]) -> list[str]:
    hp, train = result.get("hyperparameters") or {}, run["config"].get("train") or {}
    own = result.get("own_steps")
    own = f" (its epochs alone: {fmt(own)})" if own not in (None, result.get("steps")) else ""
    return [
        "| setting | value |", "|---|---|",
        f"| method | {how} |",
        f"| epochs | {fmt(hp.get('num_train_epochs', train.get('epochs')))} |",
        f"| optimiser steps | {fmt(result.get('steps'))}{own} |",
        f"| learning rate | {fmt(hp.get('learning_rate', train.get('learning_rate')))}, "
        f"{hp.get('lr_scheduler_type', train.get('lr_scheduler'))} schedule, "
        f"warmup {fmt(hp.get('warmup_steps'))} steps |",
        f"| batch | {fmt(hp.get('per_device_train_batch_size', train.get('batch_size')))} per device × "
        f"{fmt(hp.get('gradient_accumulation_steps', 1))} accumulation × {fmt(hp.get('world_size', 1))} processes = "
        f"{fmt(hp.get('total_batch_size'))} |",
        f"| max length | {fmt(hp.get('max_length', train.get('max_length')))} tokens "
        f"({fmt(result.get('too_long'))} examples longer); packing {fmt(hp.get('packing', train.get('packing')))} |",
        f"| loss on | {'the completion only' if hp.get('completion_only_loss') else 'the whole sequence'} |",
        f"| seed | {fmt(result.get('seed', train.get('seed')))} |",
        f"| optimiser | {hp.get('optim', '–')}, weight decay {fmt(hp.get('weight_decay'))} |",
        f"| precision | {_precision(hp)} |",
        f"| loss, first → last step | {fmt(result.get('first_loss'))} → {fmt(result.get('last_loss'))} |",
        f"| train time | {fmt(result.get('train_seconds'))} s |", ""]


def _precision(hp: dict[str, Any]) -> str:
    if hp.get("bf16"):
        return "bf16 mixed precision (fp32 weights)"
    return "fp16 mixed precision (fp32 weights)" if hp.get("fp16") else "fp32"


def _caveats(run: dict[str, Any], arm: str, result: dict[str, Any]) -> list[str]:
    """What a reader must know beside the figures: the summary's metric notes, truncation, undefined
    values, training warnings, unequal arms, an embedded base."""
    summary, student = run["summary"], str(run["config"].get("student"))
    cap = ((run["config"].get("eval") or {}).get("max_new_tokens", "?"))
    lines = [*(f"- {note}" for note in metric_notes(summary)),
             f"- {_pct((summary.get('truncated_share') or {}).get(arm))} of this student's held-out answers stopped at "
             f"the {cap}-token cap; length-like metrics are bounded by it.",
             *(f"- training: {w}" for w in result.get("warnings") or [])]
    if result.get("stopped_early"):
        lines.append(f"- training stopped early (validation loss) at step {result.get('steps')}.")
    undefined = (summary.get("undefined") or {}).get(arm)
    if undefined:
        lines.append("- left out of the means, undefined on the answer: "
                     + ", ".join(f"{m} {k}" for m, k in undefined.items()) + ".")
    check = summary.get("training_check") or {}
    if check and not (check.get("same_hyperparameters") and check.get("same_steps")):
        lines.append("- the arms did NOT all train with the same hyper-parameters and steps: differing "
                     f"{check.get('differing_hyperparameters')}, steps {check.get('steps')}.")
    spec = EMBEDDED.get(student.removeprefix("embedded:")) if student.startswith("embedded:") else None
    if spec:
        lines.append(f"- the base is heredity's embedded `{student}`: {spec.description}, dequantised to float32; "
                     "not the original weights.")
    return [*lines, ""]


def _model_card(run: dict[str, Any], entry: dict[str, Any], folders: list[dict[str, Any]],
                index: dict[str, Any]) -> str:
    arm, summary, cfg = entry["arm"], run["summary"], run["config"]
    manifest = run["train_manifests"].get(arm) or {}
    result = manifest.get("result") or (summary.get("training") or {}).get(arm) or {}
    train, student = cfg.get("train") or {}, cfg.get("student")
    base_id = _hub_id(student)
    target = target_of(summary, arm)[0]
    data = [f for f in folders if f["kind"] == "dataset" and f["arm"] == arm]
    preference = ((cfg.get("select") or {}).get("preference") or {}).get(arm)
    rule = (run["card"].get("rules") or {}).get(arm)
    meta = {
        "base_model": base_id,
        "base_model_relation": ("adapter" if entry["adapter"] else "finetune") if base_id else None,
        "datasets": [f["repo_id"] for f in data if f["repo_id"]], "license": _licenses(run, with_student=True)[0],
        "library_name": "peft" if entry["adapter"] else "transformers", "pipeline_tag": "text-generation",
        "tags": ["heredity", "trl", "dpo" if preference else "sft", "synthetic-data"],
    }
    how = (f"preference training (TRL DPOTrainer: loss {preference.get('loss')}, β {preference.get('beta')}, "
           f"from {preference.get('init')})" if preference else "supervised fine-tuning (TRL SFTTrainer)")
    if train.get("method", "full") != "full":
        how += (f", {train['method']} (r {train.get('lora_r')}, α {train.get('lora_alpha')}, dropout "
                f"{train.get('lora_dropout')}), " + ("adapter only" if entry["adapter"] else "merged into the base"))
    what = ("preference pairs" if preference else f"answers selected by the rule {_rule(rule)}" if rule else "examples")
    # on the hub a folder is a repo of its own: link the dataset's repo, else the folder beside this one
    links = [f"[{f['repo_id']}](https://huggingface.co/datasets/{f['repo_id']})" if f["repo_id"]
             else f"[`{f['path']}`](../../{f['path']}) in this export" for f in data]
    others = [a for a in (PASSIVE, BASE) if a != arm and a in summary["arms"]]
    load = entry["repo_id"] or "."
    auto = "AutoPeftModelForCausalLM" if entry["adapter"] else "AutoModelForCausalLM"
    data_key = (manifest.get("config") or {}).get("data") if isinstance(manifest.get("config"), dict) else None
    lines = [
        f"# {summary.get('name')}: the `{arm}` student", "",
        f"{_model_name(student)} after {how} on {result.get('examples', '?')} {what}, in the heredity run "
        f"`{summary.get('name')}`. The run trained {len(run['arms'])} students ("
        + ", ".join(f"`{a}`" for a in run["arms"]) + ") with the same base, hyper-parameters, seed and number of "
        "optimiser steps on different selections from one pool of teacher answers, and evaluated them on the same "
        "held-out prompts, so differences between them come from their data. `passive` (a random pick per prompt) "
        "is the baseline.", "",
        "## Training data", "", *(f"- {link}" for link in links or ["not exported (the run has no file for it)"]), "",
        "## Training", "", *_training(run, arm, how, result),
        "## Results on held-out prompts", "",
        f"{summary.get('eval_prompts')} held-out prompts, {decoding_label(summary)}, at most "
        f"{(cfg.get('eval') or {}).get('max_new_tokens', '?')} new tokens; means with bootstrap 95% CIs over prompts, "
        "from the run's `summary.json`.", "",
        *_headline(summary, arm, target), "",
        "| metric | " + " | ".join(f"`{a}`" for a in (arm, *others)) + " |", "|---" * (len(others) + 2) + "|",
        *(f"| {m} | " + " | ".join(_mean_ci(summary, a, m) for a in (arm, *others)) + " |"
          for m in summary["arms"][arm]),
        "",
        "Paired differences (the same prompts, resampled jointly). `primary` rows are the run's confirmatory "
        "comparisons; every other row is exploratory, and q is its Benjamini-Hochberg q-value within its family "
        "(only q < 0.05 counts).", "",
        "| comparison | metric | family | difference | 95% CI | q |", "|---|---|---|---|---|---|",
        *_differences(summary, arm, target), *_seeds(summary, arm, target), "",
        "## Caveats", "", *_caveats(run, arm, result),
        "## Use", "", "```python",
        *([f"from peft import {auto}", "from transformers import AutoTokenizer"] if entry["adapter"]
          else [f"from transformers import {auto}, AutoTokenizer"]), "",
        f'model = {auto}.from_pretrained("{load}")', f'tokenizer = AutoTokenizer.from_pretrained("{load}")',
        'messages = [{"role": "user", "content": "Explain why the sky looks blue."}]',
        "inputs = tokenizer.apply_chat_template(messages, add_generation_prompt=True, return_tensors=\"pt\", "
        "return_dict=True)",
        'answer = model.generate(**inputs, max_new_tokens=128)[0][inputs["input_ids"].shape[1]:]',
        "print(tokenizer.decode(answer, skip_special_tokens=True))", "```", "",
        "## License", "", _licenses(run, with_student=True)[1], "",
        *_provenance(run, manifest, index, [f"- trained on data hash `{data_key}`"] if data_key else []),
    ]
    return _front_matter(meta) + "\n".join(lines)


def _index_card(run: dict[str, Any], index: dict[str, Any]) -> str:
    target = run["summary"]["target"]

    def contents(f: dict[str, Any]) -> str:
        if f["kind"] == "dataset":
            return f"{f['rows']} rows, {f['schema']}"
        return "LoRA adapter" if f.get("adapter") else "model"

    rows = [f"| [{f['path']}]({f['path']}/) | {f['kind']} | {f['arm']} | {contents(f)} | {f['repo_id'] or '–'} |"
            for f in index["folders"]]
    return "\n".join([
        f"# heredity export: run `{index['run']}`", "",
        f"Target: {target['direction']} `{target['metric']}`. Each folder has its card (`README.md`); the run's full "
        "report is `report.md` / `report.html` in the run folder.", "",
        "| folder | kind | arm | contents | hub repo |", "|---|---|---|---|---|", *rows, "",
        f"Exported {index['exported_at']} by `heredity export` (heredity {index['heredity']}). Push to the hub with "
        "`heredity export RUN --push USER_OR_ORG`.", ""])
