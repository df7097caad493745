"""The whole loop: prompts → generate → score → select → train → evaluate → report.

Each stage is reused when its manifest key matches (see ``rundir.Stage``), so rerunning a
finished run takes seconds and a killed run resumes at the stage (and, for generation, the
batch) where it stopped.
"""

from __future__ import annotations

import os
import shutil
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from heredity.config import RunConfig, StrategySpec
from heredity.core.arms import judged_comparisons, ordered_arms
from heredity.core.models import model_identity, pick_device
from heredity.core.rundir import RunLock, Stage, read_table, stable_hash, write_json, write_table
from heredity.errors import HeredityError
from heredity.plan import (
    check_config,
    persisted_config,
    preflight,
    produced_models,
    round_config,
    round_dir,
    round_prompts,
)
from heredity.reporting.report import summarise_seeds, write_report, write_reports
from heredity.reporting.rounds import round_means, summarise_rounds, write_rounds_report
from heredity.stages.accumulate import run_accumulate
from heredity.stages.evaluate import run_evaluate, run_evaluations_on_ray
from heredity.stages.generate import run_generate
from heredity.stages.judge import run_judge, run_judges_on_ray
from heredity.stages.profile import run_profile, run_profiles_on_ray, skipped_teachers, teacher_models
from heredity.stages.score import run_score
from heredity.stages.select import run_select
from heredity.stages.train import run_train_arms
from heredity.training.sft import check_qlora


@contextmanager
def _progress(console: Console) -> Iterator[Progress]:
    columns = [TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
               TimeElapsedColumn(), TextColumn("eta"), TimeRemainingColumn()]
    with Progress(*columns, console=console, transient=False, disable=not console.is_terminal) as progress:
        yield progress


class _Timer:
    def __init__(self, console: Console):
        self.console = console
        self.timings: dict[str, float] = {}

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        started = time.perf_counter()
        yield
        seconds = time.perf_counter() - started
        self.timings[name] = round(seconds, 2)

    def note(self, name: str, stage: Stage, reused: bool) -> None:
        how = "reused" if reused else "done"
        self.console.print(f"[bold]{name}[/bold] {how} in {self.timings[name]:.1f}s → {stage.dir}")


def quiet_libraries() -> None:
    """Keep the terminal for heredity's own progress: silence per-library bars and info logs."""
    import warnings

    warnings.filterwarnings("ignore", category=FutureWarning, module=r"(transformers|trl|peft)\b")
    os.environ.setdefault("TQDM_DISABLE", "1")  # GGUF conversion and others use tqdm directly
    try:  # none of this is needed (or installed) for a replay-only `heredity select`
        import datasets
        import transformers
    except ImportError:
        return
    transformers.utils.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    datasets.utils.logging.disable_progress_bar()
    datasets.utils.logging.set_verbosity_error()


def run(cfg: RunConfig, out: Path, console: Console | None = None, until: str = "report") -> dict[str, Any]:
    """Run the loop up to and including the stage ``until``: generate, score, select or report."""
    console = console or Console(stderr=True)
    check_config(cfg)  # a config built in Python, not read through heredity.plan, is checked here
    out = Path(out)
    # Everything checkable is checked before anything is written: a bad input leaves a finished
    # run in ``out`` exactly as it was.
    train_prompts, eval_prompts = preflight(cfg, out, until)
    rounds = cfg.rounds.count > 1 and until == "report"
    plans = round_plans(cfg, out) if rounds else {}
    for (index, number), rcfg in plans.items():
        if number > 1:  # a later round's teachers are the earlier rounds' students, not yet trained
            preflight(rcfg, round_dir(chain_dir(cfg, out, index), number), until,
                      produced_models(replicate_config(cfg, index), chain_dir(cfg, out, index)))
    if until == "report" and cfg.train.method == "qlora":
        check_qlora(pick_device(cfg.device))  # before hours of generation, not after
    quiet_libraries()
    with RunLock(out):  # one run per directory; the OS releases it however this process ends
        if rounds:
            return _run_rounds(cfg, out, console, plans, train_prompts, eval_prompts)
        if cfg.rounds.count > 1:  # `heredity select` of a rounds config: the first round's
            out = round_dir(out, 1)
        if len(cfg.train.seed_list()) > 1 and until == "report":
            return _run_seeds(cfg, out, console, train_prompts, eval_prompts)
        return _run_locked(replicate_config(cfg, 0), out, console, until, train_prompts, eval_prompts)


# What every seed's replicate shares with the first: nothing in them depends on the training seed or
# the passive draw. Linked in before a replicate runs, they are reused by key as any finished stage.
SHARED_STAGES = ("prompts", "generate", "score", "evaluate/base", "profile/base")


def replicate_dir(out: Path, seed: int) -> Path:
    return Path(out) / "seeds" / f"seed-{seed}"


def replicate_config(cfg: RunConfig, index: int) -> RunConfig:
    """Replicate ``index`` of ``train.seeds``: trained with that seed, its passive draw seeded
    ``seed + index`` (each random draw in the passive rule, or ``select.seed``); everything else as
    the config says. With one seed, the config itself (``train.seed``)."""
    seeds = cfg.train.seed_list()
    train = cfg.train.model_copy(update={"seed": seeds[index], "seeds": None})
    select = cfg.select
    if index:
        if select.passive is None:
            select = select.model_copy(update={"seed": select.seed + index})
        else:
            passive = StrategySpec.model_validate(_reseed(select.passive.as_dict(), index))
            select = select.model_copy(update={"passive": passive})
    return cfg.model_copy(update={"train": train, "select": select})


def _reseed(spec: Any, offset: int) -> Any:
    if isinstance(spec, dict):
        spec = {k: _reseed(v, offset) for k, v in spec.items()}
        if spec.get("strategy") == "random":
            spec["seed"] = int(spec.get("seed", 0)) + offset
    elif isinstance(spec, list):
        spec = [_reseed(v, offset) for v in spec]
    return spec


def _link_stage(source: Path, target: Path) -> None:
    """A finished stage of the first replicate, hard-linked (copied across file systems) into another."""
    if target.exists() or not (source / "manifest.json").is_file():
        return
    partial = target.with_name(target.name + ".linking")
    shutil.rmtree(partial, ignore_errors=True)
    partial.parent.mkdir(parents=True, exist_ok=True)

    def link(src: str, dst: str) -> None:
        try:
            os.link(src, dst)
        except OSError:
            shutil.copy2(src, dst)

    shutil.copytree(source, partial, copy_function=link, ignore=shutil.ignore_patterns("*.lock"))
    os.replace(partial, target)


def _link_shards(source: Path, target: Path) -> None:
    """Generation shards of another run directory, hard-linked in (copied across file systems): the
    generate stage reuses every candidate whose key they hold and ignores the rest."""
    for shard in sorted(source.glob("*.parquet")):
        if (target / shard.name).exists():
            continue
        target.mkdir(parents=True, exist_ok=True)
        partial = target / f".{shard.name}.linking"
        partial.unlink(missing_ok=True)
        try:
            os.link(shard, partial)
        except OSError:
            shutil.copy2(shard, partial)
        os.replace(partial, target / shard.name)


def _run_seeds(cfg: RunConfig, out: Path, console: Console, train_prompts: list,
               eval_prompts: list) -> dict[str, Any]:
    """``train.seeds``: the loop once per seed, the first in ``out`` itself, the others in
    ``out/seeds/seed-<s>/`` (sharing ``SHARED_STAGES``), then one summary over them all."""
    seeds = cfg.train.seed_list()
    replicates: dict[int, dict[str, Any]] = {}
    answers: dict[int, dict[str, list[dict[str, Any]]]] = {}
    for index, seed in enumerate(seeds):
        where = out if index == 0 else replicate_dir(out, seed)
        console.print(f"[bold]seed {seed}[/bold] (replicate {index + 1} of {len(seeds)}) → {where}", highlight=False)
        rcfg = replicate_config(cfg, index)
        if index == 0:
            replicates[seed] = _run_locked(rcfg, where, console, "report", train_prompts, eval_prompts)
        else:
            for name in SHARED_STAGES:
                _link_stage(out / name, where / name)
            with RunLock(where):
                replicates[seed] = _run_locked(rcfg, where, console, "report", train_prompts, eval_prompts)
        answers[seed] = {p.parent.name: read_table(p) for p in sorted((where / "evaluate").glob("*/answers.parquet"))}
        # each replicate's own summary beside the others, the first's included
        write_json(replicate_dir(out, seed) / "summary.json", replicates[seed])
    summary = summarise_seeds(cfg, replicates, answers)
    summary["timings_s"] = {f"seed-{s}/{k}" if s != seeds[0] else k: v
                            for s in seeds for k, v in replicates[s].get("timings_s", {}).items()}
    write_json(out / "config.json", persisted_config(cfg))
    write_table(out / "per_prompt.parquet", [{**r, "seed": s} for s in seeds for arm in ordered_arms(answers[s])
                                             for r in answers[s][arm]])
    write_json(out / "summary.json", summary)
    write_reports(summary, out)
    return summary


def chain_dir(cfg: RunConfig, out: Path, index: int) -> Path:
    """Where replicate ``index`` of ``train.seeds`` keeps its rounds: ``out`` for the first,
    ``out/seeds/seed-<s>/`` for the others (as ``_run_seeds`` places a plain run's replicates)."""
    return Path(out) if index == 0 else replicate_dir(out, cfg.train.seed_list()[index])


def round_plans(cfg: RunConfig, out: Path) -> dict[tuple[int, int], RunConfig]:
    """The config of every (replicate, round) of a rounds run, built and checked before any round runs."""
    return {(index, number): round_config(replicate_config(cfg, index), chain_dir(cfg, out, index), number)
            for number in range(1, cfg.rounds.count + 1) for index in range(len(cfg.train.seed_list()))}


# What a later round shares with round 1: the untrained student's evaluation and profile.
SHARED_ACROSS_ROUNDS = ("evaluate/base", "profile/base")


def _run_rounds(cfg: RunConfig, out: Path, console: Console, plans: dict[tuple[int, int], RunConfig],
                train_prompts: list, eval_prompts: list) -> dict[str, Any]:
    """``rounds``: round after round, each a full run in ``round-<r>/`` of every replicate's chain,
    the students of one round the next round's teachers (``round_config``); after each round the
    trajectories so far are summarised in ``out`` (summary.json, report.md, report.html), and a
    ``rounds.stop_below`` bound that an arm falls below ends the loop."""
    seeds = cfg.train.seed_list()
    arms = cfg.select.arms()
    trained: dict[int, dict[str, Stage]] = {}
    selects: dict[int, list[Stage]] = {index: [] for index in range(len(seeds))}
    answers: dict[int, dict[int, dict[str, list[dict[str, Any]]]]] = {}
    timings: dict[str, float] = {}
    stopped = None
    summary: dict[str, Any] = {}
    write_json(out / "config.json", persisted_config(cfg))
    for number in range(1, cfg.rounds.count + 1):
        for index, seed in enumerate(seeds):
            where = round_dir(chain_dir(cfg, out, index), number)
            first = round_dir(out, 1)
            for name in (SHARED_STAGES if number == 1 else SHARED_ACROSS_ROUNDS) if where != first else ():
                _link_stage(first / name, where / name)
            if number > 1 and cfg.rounds.keep_teachers:  # their candidates are round 1's: reused, not redrawn
                _link_shards(first / "generate" / "shards", where / "generate" / "shards")
            console.print(f"[bold]round {number} of {cfg.rounds.count}[/bold]"
                          + (f", seed {seed}" if len(seeds) > 1 else "") + f" → {where}", highlight=False)
            starts = trained.get(index) if cfg.rounds.init == "previous" else None
            earlier = selects[index] if cfg.rounds.data == "accumulate" and number > 1 else None
            result, stages = run_round(plans[(index, number)], where, console, "report",
                                       round_prompts(train_prompts, cfg, number), eval_prompts, starts, earlier)
            trained[index] = {arm: stages[f"train/{arm}"] for arm in arms}
            selects[index].append(stages["select"])
            answers.setdefault(number, {})[seed] = {
                arm: read_table(where / "evaluate" / arm / "answers.parquet") for arm in ("base", *arms)}
            timings.update({f"round-{number}/seed-{seed}/{k}": v for k, v in result.get("timings_s", {}).items()})
        stop = cfg.rounds.stop_below
        if stop is not None and number < cfg.rounds.count:
            means = round_means(answers[number], [stop.metric])
            low = sorted(arm for arm in arms if (means.get(arm) or {}).get(stop.metric) is not None
                         and means[arm][stop.metric] < stop.value)
            if low:
                stopped = {"after_round": number, "why": f"{stop.metric} of {', '.join(low)} fell below {stop.value} "
                           f"({', '.join(f'{means[a][stop.metric]:.4g}' for a in low)})"}
        summary = summarise_rounds(cfg.name, cfg.select.target, cfg.select.direction, cfg.eval_metrics, answers, stopped,
                                   samples=cfg.eval.bootstrap_samples)
        summary.update(config=persisted_config(cfg), timings_s=timings)
        write_json(out / "summary.json", summary)
        write_rounds_report(summary, out)
        if stopped is not None:
            console.print(f"[bold]rounds stopped[/bold] after round {number}: {stopped['why']}", highlight=False)
            break
    return summary


def _run_locked(cfg: RunConfig, out: Path, console: Console, until: str,
                train_prompts: list, eval_prompts: list) -> dict[str, Any]:
    return run_round(cfg, out, console, until, train_prompts, eval_prompts)[0]


def run_round(cfg: RunConfig, out: Path, console: Console, until: str, train_prompts: list, eval_prompts: list,
              starts: dict[str, Stage] | None = None, earlier_selects: list[Stage] | None = None
              ) -> tuple[dict[str, Any], dict[str, Stage]]:
    """One pass of the loop in ``out``: its summary and every stage. In a rounds run, ``starts``
    are the trained stages each SFT arm continues from (``rounds.init: previous``), and
    ``earlier_selects`` the earlier rounds' selections, trained on beside this round's
    (``rounds.data: accumulate``)."""
    write_json(out / "config.json", persisted_config(cfg))  # never with credentials
    timer = _Timer(console)

    with timer.stage("prompts"):
        prompts_stage = Stage(out, "prompts", {"train": stable_hash([(p.id, p.text) for p in train_prompts]),
                                               "eval": stable_hash([(p.id, p.text) for p in eval_prompts])})
        reused = prompts_stage.reuse()
        if not reused:
            prompts_stage.start()
            rows = [{"split": "train", "id": p.id, "prompt": p.text} for p in train_prompts]
            rows += [{"split": "eval", "id": p.id, "prompt": p.text} for p in eval_prompts]
            write_table(prompts_stage.dir / "prompts.parquet", rows)
            prompts_stage.finish({"prompts": "prompts.parquet"},
                                 counts={"train": len(train_prompts), "eval": len(eval_prompts)})
    timer.note("prompts", prompts_stage, reused)

    stages: dict[str, Stage] = {"prompts": prompts_stage}
    with _progress(console) as progress:
        def step(name: str, make):
            with timer.stage(name):
                stage = make()
            timer.note(name, stage, reused=stage.reused)
            stages[name] = stage
            return stage

        def fan(prefix: str, make) -> dict[str, Stage]:
            """Stages computed together (on Ray): each is timed as the whole fan-out took."""
            with timer.stage(prefix):
                done = make()
            for name, stage in done.items():
                timer.timings[f"{prefix}/{name}"] = 0.0 if stage.reused else timer.timings[prefix]
                timer.note(f"{prefix}/{name}", stage, reused=stage.reused)
                stages[f"{prefix}/{name}"] = stage
            del timer.timings[prefix]
            return done

        generate = step("generate", lambda: run_generate(cfg, out, train_prompts, progress))
        if until == "generate":
            return {"stopped_after": "generate", "timings_s": dict(timer.timings)}, stages
        score = step("score", lambda: run_score(cfg, out, generate))
        if until == "score":
            return {"stopped_after": "score", "timings_s": dict(timer.timings)}, stages
        select = step("select", lambda: run_select(cfg, out, score))
        if until == "select":
            return {"stopped_after": "select", "timings_s": dict(timer.timings)}, stages
        if not eval_prompts:
            raise HeredityError("no held-out eval prompts (prompts.eval_every is null): "
                                "set eval_every or eval_source to train and evaluate students")
        data = select
        if earlier_selects:
            data = step("accumulate", lambda: run_accumulate(out, [*earlier_selects, select], cfg.select.arms()))
        # Same settings and the same number of optimiser steps in every arm (see plan_equal_steps).
        trained = run_train_arms(cfg, out, data, cfg.select.arms(), step, starts)
        if cfg.ray is not None:  # every model at once, one Ray task each
            evaluated = fan("evaluate", lambda: run_evaluations_on_ray(
                cfg, out, eval_prompts, {"base": None, **{arm: trained[arm] for arm in cfg.select.arms()}}))
        else:
            evaluated = {"base": step("evaluate/base", lambda: run_evaluate(
                cfg, out, "base", eval_prompts, None, progress))}
            for arm in cfg.select.arms():
                evaluated[arm] = step(f"evaluate/{arm}", lambda arm=arm: run_evaluate(
                    cfg, out, arm, eval_prompts, trained[arm], progress))
        judged = {}
        if cfg.eval.judge is not None and cfg.ray is not None:  # every comparison at once, one Ray task each
            judged = fan("judge", lambda: run_judges_on_ray(cfg, out, evaluated,
                                                            judged_comparisons(cfg.select.extra_arms())))
        elif cfg.eval.judge is not None:
            for a, b in judged_comparisons(cfg.select.extra_arms()):
                judged[f"{a}_vs_{b}"] = step(f"judge/{a}_vs_{b}", lambda a=a, b=b: run_judge(cfg, out, evaluated, a, b))
        profiled = {}
        profile_skipped: dict[str, str] = {}
        if cfg.eval.profile is not None:
            models = {"base": (cfg.student, model_identity(cfg.student))}
            models.update({arm: (str(trained[arm].dir / "model"), trained[arm].key) for arm in cfg.select.arms()})
            if cfg.eval.profile.teachers:
                models.update({name: (ref, model_identity(ref)) for name, ref in teacher_models(cfg).items()})
                profile_skipped = skipped_teachers(cfg)
                for name, why in profile_skipped.items():
                    console.print(f"[bold]profile/{name}[/bold] skipped: {why}", highlight=False)
            if cfg.ray is not None:
                profiled = fan("profile", lambda: run_profiles_on_ray(cfg, out, models))
            for name, (ref, key) in models.items():
                if name not in profiled:
                    profiled[name] = step(f"profile/{name}", lambda name=name, ref=ref, key=key: run_profile(
                        cfg, out, name, ref, key))

    # What each stage cost when it was computed (a reused stage costs ~0 s in this run).
    compute = {name: (stage.manifest() or {}).get("seconds") for name, stage in stages.items()}
    with timer.stage("report"):
        summary = write_report(cfg, out, evaluated, select, trained, dict(timer.timings), compute, profiled, judged,
                               profile_skipped)
    summary["timings_s"] = dict(timer.timings)
    write_json(out / "summary.json", summary)
    return summary, stages
