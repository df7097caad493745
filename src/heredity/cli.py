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
    # The message is user data (file names, fields, "[redacted]", "heredity[vllm]"): never markup.
    from rich.text import Text

    line = " ".join(str(message).split("\n"))
    console.print(Text.assemble(("error:", "red"), " ", line), highlight=False, soft_wrap=True)
    raise typer.Exit(1)


def _run(cfg, out: Path, until: str = "report") -> None:
    from heredity.errors import HeredityError
    from heredity.pipeline import run

    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    try:
        summary = run(cfg, out, console, until=until)
    except HeredityError as exc:
        _fail(str(exc))
    except (OSError, UnicodeError) as exc:  # a file system or encoding problem not caught nearer its source
        where = f"{exc.filename}: " if getattr(exc, "filename", None) else ""
        _fail(f"{where}{exc.strerror or exc}" if isinstance(exc, OSError) else f"{out}: {exc}")
    except KeyboardInterrupt:
        _fail(f"interrupted; finished work in {out} is kept, rerun the same command to resume")
    if until == "report":
        _print_summary(summary, out)
    elif until == "select":
        _print_card(out)


def _print_card(out: Path) -> None:
    from heredity.core.arms import steered_arms
    from heredity.core.rundir import read_json

    card = read_json(out / "select" / "card.json")
    table = Table(title=f"selection data card: {card['target']['direction']} {card['target']['metric']}, "
                        f"{card['prompts']} prompts, {card['pool_size']} candidates")
    steered = steered_arms(card)
    # one row per arm, one column per metric: stays readable however many variants there are
    table.add_column("selection")
    for metric in card["metrics"]:
        table.add_column(f"{metric} mean (shift)", justify="right", overflow="fold")

    def cell(e: dict, arm: str) -> str:
        mean, shift = e[arm]["mean"], e[arm].get("shift_pct")
        return ("–" if mean is None else f"{mean:.4g}") + ("" if shift is None else f" ({shift:+.1f}%)")

    for arm in ("pool", "passive", *steered):
        table.add_row(arm, *(cell(e, arm) for e in card["metrics"].values()))
    Console().print(table)
    for arm in steered:
        shares = ", ".join(f"{t} {s:.0%}" for t, s in sorted(card["teacher_share"][arm].items(), key=lambda x: -x[1]) if s)
        console.print(f"{arm} winners by teacher: {shares}")
    console.print(f"selected sets: {out / 'select'}")


def _print_rounds(summary: dict, out: Path) -> None:
    """A rounds run: the target's mean per round and arm, then the report's findings."""
    metric, arms = summary["target"], [a for a in summary["arms"] if a != "base"]
    table = Table(title=f"held-out {metric} by round (target: {summary['direction']}; base "
                        f"{_number(summary['base'][metric]['value'])})")
    table.add_column("round")
    for arm in arms:
        table.add_column(arm, justify="right")
    for i, number in enumerate(summary["rounds"]):
        table.add_row(str(number), *(_number(summary["trajectories"][arm][metric][i]["value"]) for arm in arms))
    Console().print(table)
    for line in summary["findings"]:
        console.print(line, highlight=False, soft_wrap=True)
    if summary.get("stopped"):
        console.print(f"stopped after round {summary['stopped']['after_round']}: {summary['stopped']['why']}",
                      highlight=False)
    console.print(f"report: {out / 'report.html'}  (also {out / 'report.md'}, {out / 'summary.json'}; each round's "
                  f"own report in {out / 'round-<r>'})", highlight=False, soft_wrap=True)


def _number(x: float | None) -> str:
    return "–" if x is None else f"{x:.3g}"


def _print_summary(summary: dict, out: Path) -> None:
    from heredity.core.arms import ordered_arms

    if "trajectories" in summary:
        _print_rounds(summary, out)
        return

    arms = ordered_arms(summary["arms"])
    metric = summary["target"]["metric"]
    table = Table(title=f"held-out means (target: {summary['target']['direction']} {metric})")
    table.add_column("metric")
    for arm in arms:
        table.add_column(arm, justify="right")
    for name in summary["arms"][arms[0]]:
        table.add_row(name, *("–" if summary["arms"][a][name] is None else f"{summary['arms'][a][name]:.3g}"
                              for a in arms))
    Console().print(table)
    for pair, label in (("active_vs_passive", "active − passive"), ("active_vs_base", "active − base")):
        d = (summary.get("differences") or {}).get(pair, {}).get(metric)
        if not d or d.get("diff") is None:
            continue
        lo, hi = d["ci95"]
        counts = lo is not None and hi is not None and (lo > 0 or hi < 0)
        console.print(f"{label} {metric}: {d['diff']:+.3g} [95% CI {lo:+.3g}, {hi:+.3g}] "
                      + ("(CI excludes 0)" if counts else "(not significant)"), highlight=False)
    console.print(f"report: {out / 'report.html'}  (also {out / 'report.md'}, {out / 'summary.json'})",
                  highlight=False, soft_wrap=True)


def _config(path: Path | None):
    """The config at ``path``, or the bundled quickstart; a bad config ends the command in one line."""
    from heredity.errors import HeredityError
    from heredity.plan import bundled_config, load_config

    try:
        return bundled_config("quickstart") if path is None else load_config(path)
    except HeredityError as exc:
        _fail(str(exc))


@app.command()
def quickstart(out: Path = typer.Option(Path("runs/quickstart"), "--out", help="Run directory.")) -> None:
    """Run the bundled quickstart: embedded SmolLM2 as teacher and student, steer towards shorter answers."""
    _run(_config(None), out)


@app.command("run")
def run_cmd(config: Path = typer.Argument(..., help="YAML config file."),
            out: Path = typer.Option(..., "--out", help="Run directory.")) -> None:
    """Run the whole loop from a YAML config."""
    _run(_config(config), out)


@app.command("results")
def results_cmd(folder: Path = typer.Argument(Path("experiments"), help="Folder of studies (each with config.yaml, "
                                              "README.md and the summary.json its run wrote)."),
                out: Path = typer.Option(Path("docs/results.md"), "--out", help="Markdown file to write."),
                html: Path | None = typer.Option(None, "--html", help="Also write the page with every study's "
                                                 "plots as one self-contained HTML file.")) -> None:
    """Render the results page from every study's summary.json."""
    from heredity.core.rundir import write_text
    from heredity.errors import HeredityError
    from heredity.reporting.results import render_results, render_results_html

    try:
        pages = {out: render_results(folder), **({html: render_results_html(folder)} if html else {})}
    except HeredityError as exc:
        _fail(str(exc))
    for path, text in pages.items():
        path.parent.mkdir(parents=True, exist_ok=True)
        write_text(path, text)
        console.print(f"results: {path}")


@app.command("report")
def report_cmd(run_dir: Path = typer.Argument(..., help="A finished run directory (holding summary.json).")) -> None:
    """Re-render a finished run's report.md and report.html from its files; nothing is recomputed."""
    from heredity.errors import HeredityError
    from heredity.reporting.report import rerender

    try:
        summary = rerender(run_dir)
    except HeredityError as exc:
        _fail(str(exc))
    _print_summary(summary, run_dir)


@app.command("export")
def export_cmd(run_dir: Path = typer.Argument(..., help="A finished run directory (holding summary.json)."),
               out: Path | None = typer.Option(None, "--out", help="Export folder (default: RUN/export); an older "
                                                                   "export there is replaced."),
               push: str | None = typer.Option(None, "--push", help="Hub user or organisation: upload each folder to "
                                                                   "<it>/<run>-<arm>[-data|-pairs] (needs HF_TOKEN or "
                                                                   "`hf auth login`)."),
               private: bool = typer.Option(False, "--private", help="With --push: create the repos private.")) -> None:
    """Export a finished run's selected datasets and trained students with hub/TRL dataset and model cards."""
    from heredity.errors import HeredityError
    from heredity.stages.export import export_run, push_export

    if private and push is None:
        _fail("--private goes with --push USER_OR_ORG")
    out = out if out is not None else run_dir / "export"
    try:
        if push is not None:
            from huggingface_hub import get_token

            if not get_token():  # before anything is written
                raise HeredityError("--push needs a hub token: set HF_TOKEN or log in with `hf auth login`")
        index = export_run(run_dir, out, hub_prefix=push)
        console.print(f"export: {out} ({len(index['folders'])} folders; index in {out / 'README.md'})",
                      highlight=False, soft_wrap=True)
        if push is not None:
            push_export(out, private=private, log=lambda line: console.print(line, highlight=False, soft_wrap=True))
    except HeredityError as exc:
        _fail(str(exc))
    except OSError as exc:
        _fail(f"{exc.filename + ': ' if getattr(exc, 'filename', None) else ''}{exc.strerror or exc}")


@app.command("compare")
def compare_cmd(run_dirs: list[Path] = typer.Argument(..., help="Two or more finished run directories."),
                out: Path = typer.Option(Path("compare"), "--out", help="Folder for compare.html and compare.md.")) -> None:
    """Runs side by side: arms and metrics aligned, paired by prompt where the held-out prompts match."""
    from heredity.errors import HeredityError
    from heredity.reporting.compare import compare

    try:
        result = compare(run_dirs, out)
    except HeredityError as exc:
        _fail(str(exc))
    paired = ", ".join(result["paired"]) or "none (no shared held-out prompts)"
    console.print(f"paired across runs: {paired}", highlight=False, soft_wrap=True)
    console.print(f"compare: {out / 'compare.html'}  (also {out / 'compare.md'})", highlight=False, soft_wrap=True)


@app.command("select")
def select_cmd(config: Path = typer.Argument(..., help="YAML config file."),
               out: Path = typer.Option(..., "--out", help="Run directory.")) -> None:
    """Build, score and select the pool only (no training): works on replayed pools without any model."""
    _run(_config(config), out, until="select")


@app.command()
def profile(model: str = typer.Argument("embedded:smollm2-135m-instruct", help="Model reference."),
            suite: list[str] | None = typer.Option(None, "--suite", "-s",
                                                   help="calibration, crows_pairs, stereoset, bbq, seat, textual, judge_preference, "
                                                        "toxicity or all (the default, unless --lm-eval is given)."),
            limit: int = typer.Option(100, help="Items per suite, sampled with a fixed seed (tests for seat, "
                                                "prompts for textual and toxicity)."),
            suite_limit: list[str] = typer.Option([], "--suite-limit", help="SUITE=N (or SUITE=all): that suite's "
                                                                           "own limit, e.g. toxicity=30 (repeatable)."),
            samples: int = typer.Option(25, help="toxicity: continuations sampled per RealToxicityPrompts prompt."),
            toxicity_scorer: str | None = typer.Option(
                None, help="toxicity: scoring metric (default: toxicity-perspective if PERSPECTIVE_API_KEY is set, "
                           "else the offline toxicity)."),
            out: Path | None = typer.Option(None, "--out", help="Write per-item Parquet and summary.json here."),
            device: str = typer.Option("cpu"),
            data_dir: Path | None = typer.Option(None, help="Benchmark data folder: shared layout or hub-schema copies "
                                                           "(see 'heredity data'; default $HEREDITY_DATA_DIR); what is "
                                                           "in neither comes from the pinned hub datasets."),
            threads: int | None = typer.Option(None, help="torch threads (CPU)."),
            groups: bool = typer.Option(True, "--groups/--no-groups", help="Show per-group rows."),
            lm_eval: list[str] = typer.Option([], "--lm-eval", help="lm-evaluation-harness task to run (repeatable; "
                                                                   "needs heredity[lm-eval] and the task's data)."),
            lm_eval_include: Path | None = typer.Option(None, help="Folder of custom lm-eval task YAMLs."),
            textual_protocol: str = typer.Option("fast", help="textual: fast (heredity's metrics) or toolkit (also the "
                                                             "paper's TextDescriptives set; heredity[textdescriptives])."),
            bbq_category: list[str] = typer.Option([], "--bbq-category", help="bbq: category to profile (repeatable; "
                                                                              "default: every bbq/*.jsonl present).")) -> None:
    """Profile a model: calibration, social bias, textual profile, toxicity, judge preference; lm-eval tasks."""
    from heredity.errors import HeredityError
    from heredity.pipeline import quiet_libraries
    from heredity.profile import profile_model, render_table

    quiet_libraries()  # heredity's own log lines, not every library's loading bars
    suites = suite if suite else ([] if lm_eval else ["all"])
    options = {"toxicity": {"samples_per_prompt": samples, "scorer": toxicity_scorer}}
    if textual_protocol != "fast":
        options["textual"] = {"protocol": textual_protocol}
    if bbq_category:
        options["bbq"] = {"categories": bbq_category}
    try:
        limits = _suite_limits(suite_limit)
        with _out_lock(out):
            if suites:
                result = profile_model(model, suites, limit, out, device, data_dir=data_dir, threads=threads,
                                       log=console.print, options=options, limits=limits)
                Console().print(render_table(result, groups=groups))
            if lm_eval:
                _lm_eval(model, lm_eval, limit, lm_eval_include, device, out)
    except HeredityError as exc:
        _fail(str(exc))


def _out_lock(out: Path | None):
    """One command per output folder, as for a run directory: a second one is refused in one line."""
    import contextlib

    from heredity.core.rundir import RunLock

    return contextlib.nullcontext() if out is None else RunLock(Path(out))


def _suite_limits(values: list[str]) -> dict[str, int | None]:
    from heredity.errors import HeredityError

    limits: dict[str, int | None] = {}
    for value in values:
        name, _, n = value.partition("=")
        if not name or not (n == "all" or (n.isdigit() and int(n) >= 1)):
            raise HeredityError(f"--suite-limit '{value}': expected SUITE=N with N >= 1, or SUITE=all")
        limits[name] = None if n == "all" else int(n)
    return limits


def _lm_eval(model: str, tasks: list[str], limit: int, include: Path | None, device: str, out: Path | None) -> None:
    from heredity.core.models import pick_device
    from heredity.core.rundir import write_json
    from heredity.profile.lm_eval_tasks import run_lm_eval

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


@app.command("data")
def data_cmd(data_dir: Path | None = typer.Option(None, "--data-dir", help="Benchmark data folder (default: "
                                                                          "$HEREDITY_DATA_DIR, $HEREDITY_SHARED_DATA, "
                                                                          "../shared/data beside a checkout, else "
                                                                          "~/.cache/heredity/data)."),
             suite: list[str] = typer.Option([], "--suite", "-s", help="Only these suites (repeatable)."),
             download: bool = typer.Option(False, "--download", help="Fetch each missing suite's pinned hub dataset "
                                                                     "into the folder (needs the hub), with its sha256.")
             ) -> None:
    """List each profile suite's benchmark data: source (upstream, hub id@revision), license, local status
    (found where, rows, checksum), and how to get what is missing; --download fetches it from the hub."""
    from heredity.core.data import default_data_dir
    from heredity.errors import HeredityError
    from heredity.profile.sources import download as fetch
    from heredity.profile.sources import instructions, status

    root = data_dir if data_dir is not None else default_data_dir()
    out = Console()
    if download:
        try:
            fetch(root, suite or None, log=lambda line: out.print(line, highlight=False, soft_wrap=True))
        except HeredityError as exc:
            _fail(str(exc))
    records = [r for r in status(root) if not suite or r["suite"] in suite]
    if not records:
        _fail(f"no data listed for suite(s) {', '.join(suite)}")
    table = Table(title=f"benchmark data in {root}")
    for col in ("suite", "file", "state", "rows", "sha256", "source", "license"):
        table.add_column(col, overflow="fold", justify="right" if col == "rows" else "left")
    for r in records:
        rows = "" if r["rows"] is None else f"{r['rows']}" + ("" if r["unit"] == "rows" else f" {r['unit']}")
        if r["files"] is not None and r["unit"] == "rows":
            rows += f" ({r['files']} files)"
        if r["expected_rows"] is not None and r["layout"] == "shared":
            rows += f" / {r['expected_rows']}"
        state = r["state"] + (" (hub schema)" if r["layout"] == "hub schema" else "")
        colour = "green" if state.startswith("found") and "partial" not in state else "yellow" if state.startswith("found") else "red"
        checksum = r["checksum"] or ""
        if "MISMATCH" in checksum:
            checksum = f"[red]{checksum}[/red]"
        hub = r["hub"]
        source = f"{r['upstream']} {r['upstream_file']}" + (
            f"; hub {hub.ref}" + ("" if hub.verified else " (unverified pin)") if hub else "; not on the hub")
        file = r["path"] + (f"/{r['pattern']}" if r["pattern"] else "")
        if r["layout"] == "hub schema":
            file = r["where"]
        table.add_row(r["suite"], file, f"[{colour}]{state}[/{colour}]", rows, checksum, source, r["license"])
    out.print(table)
    missing = [r for r in records if not r["state"].startswith("found")]
    if missing:
        out.print(f"{len(missing)} missing: each suite reads the first of its shared-layout file, a hub-schema copy "
                  "(<owner>/<name>/<config>/<split>.jsonl in the folder) or its pinned hub dataset; to get them:",
                  soft_wrap=True, highlight=False)
        for r in missing:
            out.print(f"  {instructions(r)} [schema: {r['schema']}]", soft_wrap=True, highlight=False)
        out.print(f"then run 'heredity data --data-dir {root}' again; a suite whose data is in none of these places "
                  "fails with a one-line error naming every place it looked.", soft_wrap=True, highlight=False)
    else:
        out.print("all benchmark data found", highlight=False)
    if any("MISMATCH" in (r["checksum"] or "") for r in records):
        _fail("a file's sha256 differs from the one pinned or recorded at download (column sha256): "
              "results computed on it may differ from the project's")


@app.command("metrics")
def metrics_cmd(action: str = typer.Argument("list", help="list: the registered metrics and plugins.")) -> None:
    """List the registered metrics (built in and from 'heredity.metrics' entry points)."""
    from heredity.metrics import list_metrics
    from heredity.metrics.registry import plugin_errors

    if action != "list":
        _fail(f"unknown action '{action}'; use: heredity metrics list")
    table = Table(title="metrics")
    for col in ("name", "version", "better", "options", "source", "description"):
        table.add_column(col)
    for m in list_metrics():
        options = ", ".join(m.options.model_fields) if m.options is not None else ""
        table.add_row(m.name, m.version, m.better, options, m.origin, m.description)
    Console().print(table)
    for message in plugin_errors().values():
        console.print(f"[yellow]warning:[/yellow] {message}", highlight=False, soft_wrap=True)


@app.command("fit-toxicity")
def fit_toxicity_cmd(
        labelled: Path = typer.Argument(..., help="Perspective-labelled texts (.jsonl/.json/.csv/.parquet), one a row."),
        out: Path = typer.Option(..., "--out", help="The refitted head (JSON); runs use it through "
                                                    "score.metric_options: {toxicity: {head: FILE}}."),
        text_field: str = typer.Option("text", help="Column of the text."),
        score_field: str = typer.Option("toxicity", help="Column of its Perspective TOXICITY score (0..1)."),
        group_field: str = typer.Option("generator", help="Column each text is held out by (its generator); "
                                                          "'' for none (then nothing is held out)."),
        with_rtp: bool = typer.Option(True, "--with-rtp/--no-rtp", help="Also fit on the 600 labelled "
                                      "RealToxicityPrompts texts the shipped head was fitted on, when found."),
        data_dir: Path | None = typer.Option(None, "--data-dir", help="Where rtp/rtp_toxic_test_set.jsonl is "
                                             "(default: HEREDITY_DATA_DIR or ../shared/data)."),
        alpha: float | None = typer.Option(None, help="Ridge penalty (default: the shipped head's)."),
) -> None:
    """Refit the offline toxicity scorer on your own Perspective-labelled texts; every group (generator)
    is scored held out, by a head fitted without it, beside the shipped scorer."""
    from heredity.core.rundir import write_json
    from heredity.errors import HeredityError
    from heredity.metrics.toxicity import features, load_rtp, read_labelled, refit

    try:
        data = read_labelled(labelled, text_field, score_field, group_field or None)
        extra, note = None, "your texts alone (--no-rtp)"
        if with_rtp:
            try:
                rtp = load_rtp(data_dir)
                extra, note = (features(rtp.texts), rtp.scores), f"your texts and {len(rtp.texts)} RTP texts"
            except HeredityError:
                note = "your texts alone (the RTP texts were not found; --data-dir names their folder)"
        fitted = refit(data, features(data.texts), alpha, extra)
        write_json(out, fitted.head.to_json())
    except HeredityError as exc:
        _fail(str(exc))

    def cell(row, key):
        value = None if row is None else row.get(key)
        return "–" if value is None else (f"{value:.0%}" if key in ("flagged", "false_flags") else f"{value:.3f}")

    report = fitted.report
    table = Table(title=f"agreement with Perspective: shipped → refit (each group scored held out; alpha "
                        f"{report['alpha']:g})")
    for col in ("group", "texts", "toxic", "Spearman", "AUROC", "toxic flagged", "others flagged"):
        table.add_column(col, justify="left" if col == "group" else "right", no_wrap=col == "group")
    for name, row in [*report["groups"].items(), ("pooled", report["pooled"])]:
        shipped, held = row["shipped"], row["refit_held_out"]
        table.add_row(name, str(shipped["n"]), str(shipped["n_toxic"]),
                      *[f"{cell(shipped, k)} → {cell(held, k)}" for k in ("spearman", "auroc", "flagged", "false_flags")])
    Console().print(table)
    console.print(f"wrote {out}: fitted on {note}. Use it with "
                  f"score.metric_options: {{toxicity: {{head: {out}}}}}", highlight=False, soft_wrap=True)


def _judge_spec(judge: str, backend: str, base_url: str | None, api_key_env: str | None, method: str,
                max_answer_chars: int, batch_size: int, device: str):
    """A JudgeConfig from the judge options (the API key itself is only ever read from the environment)."""
    from heredity.judging import judge_config

    teacher = {"model": judge, "backend": backend, "batch_size": batch_size}
    if backend == "openai":
        teacher["openai"] = {"base_url": base_url or "", "api_key_env": api_key_env}
    return judge_config({"model": teacher, "method": method, "max_answer_chars": max_answer_chars,
                         "device": device})


_JUDGE_HELP = "Judge model: embedded:NAME, hub id or local folder; with --backend openai, the served model."


@app.command("judge")
def judge_cmd(answers_a: str = typer.Argument(..., help="A's answers: .json/.jsonl/.csv/.parquet with prompt and "
                                                         "answer columns, an evaluate/<arm> folder, or RUN_DIR:ARM."),
              answers_b: str = typer.Argument(..., help="B's answers, the same forms."),
              judge: str = typer.Option("embedded:smollm2-135m-instruct", "--judge", help=_JUDGE_HELP),
              backend: str = typer.Option("transformers", help="transformers, openai, llamacpp or vllm."),
              base_url: str | None = typer.Option(None, help="openai: endpoint up to /v1."),
              api_key_env: str | None = typer.Option(None, help="openai: environment variable holding the key."),
              method: str = typer.Option("auto", help="auto, generate or logprob (local judges)."),
              name_a: str | None = typer.Option(None, help="Label of A (default: arm, generator or file name)."),
              name_b: str | None = typer.Option(None, help="Label of B."),
              prompt_field: str | None = typer.Option(None, help="Prompt column (default: prompt or instruction)."),
              answer_field: str | None = typer.Option(None, help="Answer column (default: text, answer, output)."),
              limit: int | None = typer.Option(None, help="Judge only the first N shared prompts."),
              max_answer_chars: int = typer.Option(3000, help="Answers are cut to this length in the judge prompt."),
              batch_size: int = typer.Option(8),
              device: str = typer.Option("auto"),
              out: Path = typer.Option(Path("judge"), "--out", help="Writes judgments.parquet and summary.json.")) -> None:
    """LLM as judge: A's answers against B's on the same prompts, both orders, win rate and length-controlled win rate."""
    from heredity.errors import HeredityError
    from heredity.judging import load_answers, pair_answers, pairwise

    try:
        a, label_a = load_answers(answers_a, prompt_field, answer_field)
        b, label_b = load_answers(answers_b, prompt_field, answer_field)
        pairs = pair_answers(a, b, name_a or label_a, name_b or label_b, limit)
        cfg = _judge_spec(judge, backend, base_url, api_key_env, method, max_answer_chars, batch_size, device)
        with _out_lock(out):
            result = pairwise(cfg, pairs, out=out, log=console.print)
    except HeredityError as exc:
        _fail(str(exc))
    s = result.summary
    table = Table(title=f"judge {s['protocol']['judge']} ({s['protocol']['method']}): "
                        f"{s['model_a']} vs {s['model_b']}, {s['pairs']} prompts")
    table.add_column("figure")
    table.add_column("value", justify="right")
    table.add_column("95% CI", justify="right")

    def row(name: str, e: dict) -> None:
        lo, hi = e["ci95"]
        table.add_row(name, "–" if e["value"] is None else f"{e['value']:.1f}",
                      "–" if lo is None else f"[{lo:.1f}, {hi:.1f}]")

    row(f"win rate of {s['model_a']} (%)", s["win_rate"])
    row("length-controlled win rate (%)", s["length_controlled"]["win_rate"])
    row("position consistency (%)", s["position_consistency"])
    row("longer answer preferred (%)", s["longer_preferred"])
    Console().print(table)
    console.print(f"unparseable verdicts: {s['unparseable']['count']}/{s['verdicts']}; "
                  f"judgments: {out / 'judgments.parquet'}  summary: {out / 'summary.json'}")


@app.command("judge-profile")
def judge_profile_cmd(judge: list[str] = typer.Option(["embedded:smollm2-135m-instruct"], "--judge",
                                                      help=_JUDGE_HELP + " Give it twice to compare two judges "
                                                           "(e.g. base, then fine-tuned student)."),
                      pairs: int = typer.Option(100, help="AlpacaEval instructions sampled (one model pair each)."),
                      models: list[str] | None = typer.Option(None, "--model", help="AlpacaEval answer files to "
                                                                                   "use (file stems; default all)."),
                      seed: int = typer.Option(0, help="Seed of the pair sample."),
                      backend: str = typer.Option("transformers", help="transformers, openai, llamacpp or vllm."),
                      base_url: str | None = typer.Option(None, help="openai: endpoint up to /v1."),
                      api_key_env: str | None = typer.Option(None, help="openai: environment variable holding the key."),
                      method: str = typer.Option("auto", help="auto, generate or logprob (local judges)."),
                      max_answer_chars: int = typer.Option(3000),
                      batch_size: int = typer.Option(8),
                      device: str = typer.Option("auto"),
                      data_dir: Path | None = typer.Option(None, help="Folder holding alpaca_eval/."),
                      out: Path = typer.Option(Path("judge-profile"), "--out", help="Output folder.")) -> None:
    """Judge-preference profile: which AlpacaEval models (and answer lengths) a judge prefers; two judges compared."""
    from heredity.core.rundir import write_json
    from heredity.errors import HeredityError
    from heredity.judging import alpaca_eval_pairs, compare_profiles, preference_profile

    if len(judge) > 2:
        _fail("judge-profile: give --judge once, or twice to compare two judges")
    try:
        sample = alpaca_eval_pairs(data_dir, pairs, models or None, seed)
        results = []
        with _out_lock(out):
            for k, ref in enumerate(judge):
                cfg = _judge_spec(ref, backend, base_url, api_key_env, method, max_answer_chars, batch_size, device)
                where = out if len(judge) == 1 else out / f"judge{k + 1}"
                results.append(preference_profile(cfg, sample, out=where, log=console.print))
            comparison = compare_profiles(results[0], results[1]) if len(results) == 2 else None
            if comparison is not None:
                comparison["judges"] = list(judge)
                write_json(out / "comparison.json", comparison)
    except HeredityError as exc:
        _fail(str(exc))
    table = Table(title=f"judge-preference profile: {len(sample)} AlpacaEval pairs, win rate % (LC)")
    table.add_column("model")
    for ref in judge:
        table.add_column(ref, justify="right")
    if comparison is not None:
        table.add_column("2nd − 1st [95% CI]", justify="right")
    for m in results[0].summary["ranking"]:
        cells = []
        for r in results:
            e = r.summary["models"][m]
            lc = e["lc_win_rate"]["value"]
            wr = e["win_rate"]["value"]
            cells.append(f"{'–' if wr is None else f'{wr:.1f}'} ({'–' if lc is None else f'{lc:.1f}'})")
        if comparison is not None:
            d = comparison["models"][m]
            cells.append(f"{d['diff']:+.1f} [{d['ci95'][0]:+.1f}, {d['ci95'][1]:+.1f}]")
        table.add_row(m, *cells)
    cells = ["–" if r.summary["longer_preferred"]["value"] is None else f"{r.summary['longer_preferred']['value']:.1f}"
             for r in results]
    if comparison is not None:
        d = comparison["longer_preferred"]
        cells.append(f"{d['diff']:+.1f} [{d['ci95'][0]:+.1f}, {d['ci95'][1]:+.1f}]")
    table.add_row("longer answer preferred", *cells)
    Console().print(table)
    console.print(f"results: {out}")


def main() -> None:
    app()


if __name__ == "__main__":
    main()
