"""Generate stage: k candidates per train prompt from each teacher, as one pool.

Every candidate is keyed by its content (teacher identity and sampling settings, system
prompt, prompt text, sample index); its sampling seed derives from that key. Finished
batches are written as Parquet shards straight away, and shards of earlier runs are reused
candidate by candidate: a killed run loses at most the batch in flight, and adding prompts,
raising k or adding a teacher generates only what is new.
"""

from __future__ import annotations

import math
import time
import uuid
from pathlib import Path
from typing import Any

from heredity.backends import Request, batched, open_backend
from heredity.backends.base import BatchIncomplete
from heredity.config import RunConfig, TeacherConfig
from heredity.core.models import chat_messages, model_identity, pick_device
from heredity.core.prompts import Prompt, replace_lone_surrogates, text_field
from heredity.core.rundir import Stage, file_hash, read_table, stable_hash, write_table
from heredity.errors import HeredityError, input_error


# ---------------------------------------------------------------------------- the stage


def teacher_fingerprint(teacher: TeacherConfig, system_prompt: str | None) -> dict[str, Any]:
    """Everything about a teacher that changes its samples (batch size does not)."""
    fingerprint = {
        "model": model_identity(teacher.model),
        "backend": teacher.backend,
        # where an endpoint serves the model matters; the key's environment variable does not
        "endpoint": None if teacher.openai is None else [teacher.openai.base_url, teacher.openai.served_model],
        "sampling": teacher.sampling.model_dump(exclude={"repetition_penalty"}),
        "system_prompt": system_prompt,
    }
    if teacher.sampling.repetition_penalty != 1.0:  # absent when off: older keys stay valid
        fingerprint["sampling"]["repetition_penalty"] = teacher.sampling.repetition_penalty
    if teacher.openai is not None and teacher.openai.extra_body:  # absent when empty: older keys stay valid
        fingerprint["openai_extra_body"] = teacher.openai.extra_body
    if teacher.backend == "vllm" and teacher.vllm.n_per_prompt:
        # One request samples all of a prompt's candidates, so they depend on that grouping.
        fingerprint["vllm_n_per_prompt"] = True
    return fingerprint


def candidate_key(fingerprint: dict[str, Any], prompt: str, sample_index: int) -> str:
    return stable_hash({"teacher": fingerprint, "prompt": prompt, "sample": sample_index}, length=24)


def candidate_seed(key: str) -> int:
    return int(key[:15], 16)


# Pool columns a replayed file may carry (a pool written by heredity does): kept when present.
REPLAY_NUMBERS = {"prompt_tokens": int, "completion_tokens": int, "latency_s": float, "seed": int}


def _replayed_number(row: dict[str, Any], field: str, kind: type, label: str, line: int) -> int | float | None:
    value = row.get(field)
    # NaN is how pandas writes a missing number into a float column
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise input_error(label, line, field, f"must be a number, not {type(value).__name__}")
    if kind is int:
        if value != int(value):
            raise input_error(label, line, field, "must be a whole number")
        return int(value)
    return float(value)


def replay_candidates(teacher: TeacherConfig, prompts: list[Prompt], k: int) -> list[dict[str, Any]]:
    """Existing outputs as candidates: matched to prompts by text, the first k per prompt and teacher.

    ``prompt_tokens``, ``completion_tokens``, ``latency_s``, ``seed`` and ``finish_reason``
    are taken from the row when it has them; otherwise the numbers stay empty (None) and the
    finish reason is "stop", since nothing says the text was cut.
    """
    from heredity.core.prompts import read_rows

    opts = teacher.replay
    # A file's content hash keys its candidates, so an edited file is replayed afresh.
    source_id = None if opts.path.startswith("hf:") else _file_id(Path(opts.path).expanduser())
    rows, label = read_rows(opts.path, opts.hf_split)
    # A dataset has no single file to hash: its rows are the content.
    source_id = source_id or stable_hash([opts.path, opts.hf_split, rows])
    by_text = {p.text: p for p in prompts}
    found: dict[tuple[str, str], int] = {}
    out = []
    for i, row in enumerate(rows, start=1):
        for field in (opts.prompt_field, opts.text_field) + ((opts.teacher_field,) if opts.teacher_field else ()):
            if field not in row:
                raise input_error(label, i, field, f"missing (columns: {', '.join(map(str, row))})")
        prompt = by_text.get(str(row[opts.prompt_field]).strip())
        if prompt is None:
            continue
        name = str(row[opts.teacher_field]) if opts.teacher_field else teacher.label
        sample_index = found.get((name, prompt.id), 0)
        if sample_index >= k:
            continue
        found[(name, prompt.id)] = sample_index + 1
        text = text_field(row, opts.text_field, label, i)
        key = stable_hash({"replay": source_id, "teacher": name, "prompt": prompt.text, "sample": sample_index}, 24)
        numbers = {field: _replayed_number(row, field, kind, label, i) for field, kind in REPLAY_NUMBERS.items()}
        out.append({
            "candidate_key": key, "prompt_id": prompt.id, "prompt": prompt.text, "teacher": name,
            "sample_index": sample_index, "text": text.strip(),
            "finish_reason": "length" if row.get("finish_reason") == "length" else "stop",
            **numbers, "backend": "replay", "model": name,
        })
    if not out:
        raise HeredityError(f"{label}: no row's '{opts.prompt_field}' matches any train prompt")
    return out


def _file_id(path: Path) -> str:
    if not path.is_file():
        raise HeredityError(f"{path}: replay file not found (teacher backend 'replay')")
    return file_hash(path)


def run_generate(cfg: RunConfig, run_dir: Path, train_prompts: list[Prompt], progress=None) -> Stage:
    wanted: list[dict[str, Any]] = []
    replayed: dict[str, dict[str, Any]] = {}
    for teacher in cfg.teachers:
        if teacher.backend == "replay":
            for row in replay_candidates(teacher, train_prompts, cfg.k):
                replayed[row["candidate_key"]] = row
                wanted.append({key: row[key] for key in ("candidate_key", "prompt_id", "prompt", "teacher", "sample_index")})
            continue
        fingerprint = teacher_fingerprint(teacher, cfg.system_prompt)
        for prompt in train_prompts:
            for sample_index in range(cfg.k):
                key = candidate_key(fingerprint, prompt.text, sample_index)
                wanted.append({
                    "candidate_key": key, "prompt_id": prompt.id, "prompt": prompt.text,
                    "teacher": teacher.label, "sample_index": sample_index,
                })
    stage = Stage(run_dir, "generate", {"candidates": stable_hash([w["candidate_key"] for w in wanted])})
    if stage.reuse():
        return stage
    stage.start()
    shard_dir = stage.dir / "shards"
    done: dict[str, dict[str, Any]] = dict(replayed)
    for shard in sorted(shard_dir.glob("*.parquet")):
        for row in read_table(shard):
            done.setdefault(row["candidate_key"], row)
    todo = [w for w in wanted if w["candidate_key"] not in done]
    generated = 0
    # Every teacher's bar is shown from the start, with what earlier runs left already counted.
    displays = {
        t.label: TeacherProgress(progress, t.label, [w for w in wanted if w["teacher"] == t.label], done)
        for t in cfg.teachers if t.backend != "replay"
    }
    # Each teacher's wall time (model load included) is what its candidates cost in time: the cost
    # table's figure. A batch's latency is shared by every candidate of the batch, so summing
    # candidates' latencies would count one batch many times over.
    teacher_seconds: dict[str, float] = {}
    for teacher in cfg.teachers:
        if teacher.backend == "replay":
            continue
        mine = [w for w in todo if w["teacher"] == teacher.label]
        if not mine:
            continue
        started = time.perf_counter()
        generated += _generate_for_teacher(cfg, teacher, mine, shard_dir, done, displays[teacher.label])
        teacher_seconds[teacher.label] = round(time.perf_counter() - started, 3)
    rows = []
    for w in wanted:
        row = dict(done[w["candidate_key"]])
        row.update(prompt_id=w["prompt_id"], teacher=w["teacher"])
        rows.append(row)
    write_table(stage.dir / "candidates.parquet", rows)
    stage.finish(
        {"candidates": "candidates.parquet"},
        counts={"candidates": len(rows), "generated_now": generated, "replayed": len(replayed),
                "reused": len(rows) - generated - len(replayed)},
        teacher_seconds=teacher_seconds,
    )
    return stage


class TeacherProgress:
    """One teacher's live line: candidates and whole prompts done, tokens/s, failures, ETA."""

    def __init__(self, progress, label: str, wanted: list[dict[str, Any]], done: dict[str, Any]):
        self.progress, self.label = progress, label
        self.left_per_prompt: dict[str, int] = {}
        for w in wanted:
            if w["candidate_key"] not in done:
                self.left_per_prompt[w["prompt_id"]] = self.left_per_prompt.get(w["prompt_id"], 0) + 1
        self.prompts = len({w["prompt_id"] for w in wanted})
        self.tokens, self.failed, self.started = 0, 0, time.perf_counter()
        reused = len(wanted) - sum(self.left_per_prompt.values())
        self.task = None
        if progress is not None:
            self.task = progress.add_task(self._describe(), total=len(wanted), completed=reused)

    def _describe(self) -> str:
        prompts_done = self.prompts - sum(1 for n in self.left_per_prompt.values() if n > 0)
        rate = self.tokens / max(time.perf_counter() - self.started, 1e-9)
        failed = f" · {self.failed} failed" if self.failed else ""
        return f"generate [{self.label}] prompts {prompts_done}/{self.prompts} · {rate:.0f} tok/s{failed}"

    def advance(self, rows: list[dict[str, Any]], failed: int = 0) -> None:
        for row in rows:
            self.left_per_prompt[row["prompt_id"]] -= 1
            self.tokens += row["completion_tokens"] or 0
        self.failed += failed
        if self.progress is not None:
            self.progress.update(self.task, advance=len(rows), description=self._describe())


def _generate_for_teacher(cfg, teacher, todo, shard_dir, done, display: TeacherProgress) -> int:
    requests = [
        (w, Request(chat_messages(w["prompt"], cfg.system_prompt), candidate_seed(w["candidate_key"])))
        for w in todo
    ]
    # Similar prompt lengths share a batch, so batches carry little padding.
    requests = sorted(requests, key=lambda pair: len(pair[0]["prompt"]))
    batches = batched(requests, teacher.batch_size)
    if cfg.ray is not None:
        from heredity.backends.ray_replicas import generate_on_ray

        display.started = time.perf_counter()
        results = generate_on_ray(teacher, cfg.device, cfg.ray, [[r for _, r in b] for b in batches])
        for index, completions, failure in results:
            _keep(teacher, batches[index], completions, failure, None, shard_dir, done, display)
        return len(requests)
    backend = open_backend(teacher, pick_device(cfg.device))
    display.started = time.perf_counter()  # tokens/s counts from the model's start, not its loading
    try:
        for batch in batches:
            t0 = time.perf_counter()
            failure = None
            try:
                completions = backend.generate([r for _, r in batch], teacher.sampling)
            except BatchIncomplete as exc:  # keep what finished; the rerun asks only for the rest
                failure, completions = exc, exc.completions
            _keep(teacher, batch, completions, failure, time.perf_counter() - t0, shard_dir, done, display)
    finally:
        backend.close()
    return len(requests)


def _keep(teacher, batch, completions, failure, batch_latency, shard_dir, done, display: TeacherProgress) -> None:
    """Write one finished batch as a shard straight away; raise after keeping a partial one."""
    rows = []
    for (w, req), c in zip(batch, completions):
        if c is None:
            continue
        rows.append({
            # a server's JSON may carry a lone surrogate ("\\ud800"): stored as U+FFFD, never a crash
            **w, "text": replace_lone_surrogates(c.text), "finish_reason": c.finish_reason,
            "prompt_tokens": c.prompt_tokens, "completion_tokens": c.completion_tokens,
            "latency_s": c.latency_s if c.latency_s is not None else batch_latency,
            "seed": req.seed, "backend": teacher.backend, "model": teacher.model,
        })
    display.advance(rows, failed=len(batch) - len(rows))
    if rows:
        write_table(shard_dir / f"{teacher.label}-{uuid.uuid4().hex[:12]}.parquet", rows)
    if failure is not None:
        raise HeredityError(f"{failure} ({len(rows)} of this batch's candidates were kept; "
                            "rerun to generate the rest)")
    for row in rows:
        done[row["candidate_key"]] = row
