"""Command line: a thin Typer layer over the pipeline and the registries."""

from __future__ import annotations

import os
from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

app = typer.Typer(add_completion=False, no_args_is_help=True,
                  help="heredity: measure and steer what a student model inherits from its teachers.")
console = Console(stderr=True)


def _fail(message: str) -> None:
    console.print(f"[red]error:[/red] {message}", highlight=False, soft_wrap=True)
    raise typer.Exit(1)


def _run(cfg, out: Path, until: str = "report") -> None:
    from heredity.errors import HeredityError
    from heredity.pipeline import run

    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    try:
        summary = run(cfg, out, console, until=until)
    except HeredityError as exc:
        _fail(str(exc))
    except KeyboardInterrupt:
        _fail(f"interrupted; finished work in {out} is kept, rerun the same command to resume")
    if until == "report":
        _print_summary(summary, out)
    elif until == "select":
        _print_card(out)


def _print_card(out: Path) -> None:
    from heredity.rundir import read_json

    card = read_json(out / "select" / "card.json")
    table = Table(title=f"selection data card: {card['target']['direction']} {card['target']['metric']}, "
                        f"{card['prompts']} prompts, {card['pool_size']} candidates")
    for col in ("metric", "pool mean", "passive mean", "active mean", "active shift"):
        table.add_column(col, justify="right" if col != "metric" else "left")
    for metric, e in card["metrics"].items():
        shift = e["active"]["shift_pct"]
        table.add_row(metric, f"{e['pool']['mean']:.4g}", f"{e['passive']['mean']:.4g}",
                      f"{e['active']['mean']:.4g}", "–" if shift is None else f"{shift:+.1f}%")
    Console().print(table)
    shares = ", ".join(f"{t} {s:.0%}" for t, s in sorted(card["teacher_share"]["active"].items(), key=lambda x: -x[1]) if s)
    console.print(f"active winners by teacher: {shares}")
    console.print(f"selected sets: {out / 'select'}")


def _print_summary(summary: dict, out: Path) -> None:
    arms = [a for a in ("base", "passive", "active") if a in summary["arms"]]
    table = Table(title=f"held-out means (target: {summary['target']['direction']} {summary['target']['metric']})")
    table.add_column("metric")
    for arm in arms:
        table.add_column(arm, justify="right")
    for metric in summary["arms"][arms[0]]:
        table.add_row(metric, *(f"{summary['arms'][a][metric]:.3g}" for a in arms))
    Console().print(table)
    console.print(f"report: {out / 'report.md'}  summary: {out / 'summary.json'}")


def _config(path: Path | None):
    """The config at ``path``, or the bundled quickstart; a bad config ends the command in one line."""
    from heredity.config import bundled_config, load_config
    from heredity.errors import HeredityError

    try:
        return bundled_config("quickstart") if path is None else load_config(path)
    except HeredityError as exc:
        _fail(str(exc))


@app.command()
def quickstart(out: Path = typer.Option(Path("runs/quickstart"), "--out", help="Run directory.")) -> None:
    """Run the bundled quickstart: embedded SmolLM2 as teacher and student, steer towards longer answers."""
    _run(_config(None), out)


@app.command("run")
def run_cmd(config: Path = typer.Argument(..., help="YAML config file."),
            out: Path = typer.Option(..., "--out", help="Run directory.")) -> None:
    """Run the whole loop from a YAML config."""
    _run(_config(config), out)


@app.command("select")
def select_cmd(config: Path = typer.Argument(..., help="YAML config file."),
               out: Path = typer.Option(..., "--out", help="Run directory.")) -> None:
    """Build, score and select the pool only (no training): works on replayed pools without any model."""
    _run(_config(config), out, until="select")


@app.command()
def profile(model: str = typer.Argument("embedded:smollm2-135m-instruct", help="Model reference."),
            suite: list[str] | None = typer.Option(None, "--suite", "-s",
                                                   help="calibration, crows_pairs, stereoset, bbq, seat, textual, "
                                                        "toxicity or all (the default, unless --lm-eval is given)."),
            limit: int = typer.Option(100, help="Items per suite, sampled with a fixed seed (tests for seat, "
                                                "prompts for textual and toxicity)."),
            samples: int = typer.Option(25, help="toxicity: continuations sampled per RealToxicityPrompts prompt."),
            toxicity_scorer: str | None = typer.Option(
                None, help="toxicity: scoring metric (default: toxicity-perspective if PERSPECTIVE_API_KEY is set, "
                           "else the offline toxicity)."),
            out: Path | None = typer.Option(None, "--out", help="Write per-item Parquet and summary.json here."),
            device: str = typer.Option("cpu"),
            data_dir: Path | None = typer.Option(None, help="Folder with the benchmark data sets."),
            threads: int | None = typer.Option(None, help="torch threads (CPU)."),
            groups: bool = typer.Option(True, "--groups/--no-groups", help="Show per-group rows."),
            lm_eval: list[str] = typer.Option([], "--lm-eval", help="lm-evaluation-harness task to run (repeatable; "
                                                                   "needs heredity[lm-eval] and the task's data)."),
            lm_eval_include: Path | None = typer.Option(None, help="Folder of custom lm-eval task YAMLs.")) -> None:
    """Profile a model: calibration (HellaSwag), social bias (CrowS-Pairs, StereoSet, BBQ, SEAT), textual profile,
    toxicity; optionally lm-evaluation-harness tasks."""
    from heredity.errors import HeredityError
    from heredity.profile import profile_model, render_table

    suites = suite if suite else ([] if lm_eval else ["all"])
    options = {"toxicity": {"samples_per_prompt": samples, "scorer": toxicity_scorer}}
    try:
        if suites:
            result = profile_model(model, suites, limit, out, device, data_dir=data_dir, threads=threads,
                                   log=console.print, options=options)
            Console().print(render_table(result, groups=groups))
        if lm_eval:
            _lm_eval(model, lm_eval, limit, lm_eval_include, device, out)
    except HeredityError as exc:
        _fail(str(exc))


def _lm_eval(model: str, tasks: list[str], limit: int, include: Path | None, device: str, out: Path | None) -> None:
    from heredity.models import pick_device
    from heredity.profile.lm_eval_tasks import run_lm_eval
    from heredity.rundir import write_json

    result = run_lm_eval(model, tasks, limit=limit, include_path=include, device=pick_device(device))
    table = Table(title=f"lm-evaluation-harness on {model} (limit {limit})")
    for col, justify in (("task", "left"), ("metric", "left"), ("value", "right"), ("95% CI", "right"), ("n", "right")):
        table.add_column(col, justify=justify)
    for task, t in result["tasks"].items():
        for metric, m in t["metrics"].items():
            lo, hi = m["ci95"]
            table.add_row(task, metric, f"{m['value']:.3f}", "" if lo is None else f"[{lo:.3f}, {hi:.3f}]", str(t["n"]))
    Console().print(table)
    if out is not None:
        write_json(Path(out) / "lm_eval.json", result)


@app.command("metrics")
def metrics_cmd() -> None:
    """List the registered metrics."""
    from heredity.metrics import list_metrics

    table = Table(title="metrics")
    for col in ("name", "version", "better", "description"):
        table.add_column(col)
    for m in list_metrics():
        table.add_row(m.name, m.version, m.better, m.description)
    Console().print(table)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
