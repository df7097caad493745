"""``heredity compare``: finished runs side by side (compare.html and compare.md).

Arms and metrics are aligned by name (a metric or arm missing from a run is a blank cell).
Where two runs answered the same held-out prompts (same prompt id and text in
``per_prompt.parquet``), each arm of a run is compared with the same arm of the first run on
those shared prompts by a paired bootstrap (:func:`heredity.core.stats.paired_difference`);
otherwise only the runs' own means and CIs are shown, never an unpaired difference.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from heredity.config import ACTIVE, BASE, PASSIVE
from heredity.core.arms import ordered_arms
from heredity.core.rundir import read_json, read_table
from heredity.core.stats import as_array, paired_difference
from heredity.errors import HeredityError
from heredity.reporting import plots
from heredity.reporting.html import ci, fmt, render_page, signed
from heredity.reporting.plots import significant

MIN_SHARED = 2  # fewer shared prompts than this: no paired difference


def load_runs(dirs: list[Path]) -> dict[str, dict[str, Any]]:
    """Each run's summary and held-out answers, under a unique label (its folder name)."""
    runs: dict[str, dict[str, Any]] = {}
    for d in dirs:
        d = Path(d)
        if not (d / "summary.json").is_file():
            raise HeredityError(f"{d}: no summary.json; compare takes finished run directories")
        label = d.name or str(d)
        n = 2
        while label in runs:
            label, n = f"{d.name}#{n}", n + 1
        answers = read_table(d / "per_prompt.parquet") if (d / "per_prompt.parquet").is_file() else []
        runs[label] = {"dir": d, "summary": read_json(d / "summary.json"), "answers": answers}
    return runs


def paired_across(runs: dict[str, dict[str, Any]], samples: int = 2000) -> dict[str, Any]:
    """Every run's arms against the same arm of the first run on shared prompts:
    ``{"<run> − <first>": {arm: {metric: difference}}}`` (with ``n`` shared prompts)."""
    labels = list(runs)
    ref = labels[0]
    index = {lab: {(r["arm"], str(r["prompt_id"]), r.get("prompt")): r for r in runs[lab]["answers"]} for lab in labels}
    out: dict[str, Any] = {}
    for lab in labels[1:]:
        per_arm: dict[str, Any] = {}
        for arm in ordered_arms({k[0] for k in index[lab]} & {k[0] for k in index[ref]}):
            keys = sorted(k for k in index[lab] if k[0] == arm and k in index[ref])
            if len(keys) < MIN_SHARED:
                continue
            metrics = [m for m in _metrics(runs[lab]["summary"]) if m in _metrics(runs[ref]["summary"])]
            per_arm[arm] = {m: paired_difference(as_array([index[lab][k].get(m) for k in keys]),
                                                 as_array([index[ref][k].get(m) for k in keys]), samples, 2)
                            for m in metrics}
        if per_arm:
            out[f"{lab} − {ref}"] = per_arm
    return out


def _metrics(summary: dict[str, Any]) -> list[str]:
    arms = summary.get("arms") or {}
    return list(next(iter(arms.values()))) if arms else []


def _aligned(runs: dict[str, dict[str, Any]]) -> tuple[list[str], list[str]]:
    arms = ordered_arms(dict.fromkeys(a for r in runs.values() for a in (r["summary"].get("arms") or {})))
    metrics = list(dict.fromkeys(m for r in runs.values() for m in _metrics(r["summary"])))
    return arms, metrics


def _mean_cells(runs: dict[str, Any], arm: str, metric: str) -> list[str]:
    """One arm's mean of one metric in every run, with its CI ('–' where a run lacks it)."""
    cells = []
    for r in runs.values():
        v, lo, hi = _mean(r["summary"], arm, metric)
        cells.append("–" if v is None else f"{fmt(v)} {ci([lo, hi])}")
    return cells


def _mean(summary: dict[str, Any], arm: str, metric: str) -> tuple[float | None, float | None, float | None]:
    value = ((summary.get("arms") or {}).get(arm) or {}).get(metric)
    lo, hi = (((summary.get("ci95") or {}).get(arm) or {}).get(metric) or (None, None))
    return value, lo, hi


def _describe(label: str, s: dict[str, Any]) -> list[str]:
    cfg = s.get("config") or {}
    target = s.get("target") or {}
    teachers = cfg.get("teachers") or []
    d = ((s.get("differences") or {}).get(f"{ACTIVE}_vs_{PASSIVE}") or {}).get(target.get("metric"), {})
    return [label, f"{target.get('direction')} {target.get('metric')}", str(len(teachers)), str(cfg.get("k")),
            str(cfg.get("student")), str(s.get("eval_prompts")), signed(d.get("diff")) if d else "–",
            ci(d.get("ci95")) if d else ""]


DESCRIBE = ["run", "target", "teachers", "k", "student", "held-out prompts", "active − passive (target)", "95% CI"]


def compare_markdown(runs: dict[str, dict[str, Any]], paired: dict[str, Any]) -> str:
    arms, metrics = _aligned(runs)
    lines = ["# heredity compare: " + ", ".join(runs), "", "| " + " | ".join(DESCRIBE) + " |",
             "|---" * len(DESCRIBE) + "|"]
    lines += ["| " + " | ".join(_describe(lab, r["summary"])) + " |" for lab, r in runs.items()]
    lines += ["", "## Held-out means with 95% CIs", "", "| metric | arm | " + " | ".join(runs) + " |",
              "|---" * (len(runs) + 2) + "|"]
    for m in metrics:
        for a in arms:
            lines.append(f"| {m} | {a} | " + " | ".join(_mean_cells(runs, a, m)) + " |")
    lines += ["", "## Each run's own paired differences", "", "| comparison | metric | " + " | ".join(runs) + " |",
              "|---" * (len(runs) + 2) + "|"]
    names = list(dict.fromkeys(n for r in runs.values() for n in (r["summary"].get("differences") or {})))
    for n in names:
        for m in metrics:
            cells = []
            for r in runs.values():
                d = ((r["summary"].get("differences") or {}).get(n) or {}).get(m)
                cells.append("–" if not d or d.get("diff") is None else
                             f"{signed(d['diff'])} {ci(d.get('ci95'))}{' *' if significant(d) else ''}")
            lines.append(f"| {n.replace('_vs_', ' − ')} | {m} | " + " | ".join(cells) + " |")
    lines += ["", "\\* paired 95% CI excludes 0.", ""]
    if paired:
        lines += ["## Across runs, paired on shared held-out prompts", "",
                  "| runs | arm | metric | difference | 95% CI | shared prompts |", "|---|---|---|---|---|---|"]
        for name, per_arm in paired.items():
            for arm, per_metric in per_arm.items():
                for m, d in per_metric.items():
                    lines.append(f"| {name} | {arm} | {m} | {signed(d['diff'])}{' *' if significant(d) else ''} | "
                                 f"{ci(d['ci95'])} | {d['n']} |")
    else:
        lines += ["No two runs share held-out prompts (same id and text): no paired difference across runs."]
    return "\n".join(lines) + "\n"


def compare_html(runs: dict[str, dict[str, Any]], paired: dict[str, Any]) -> str:
    arms, metrics = _aligned(runs)
    labels = list(runs)
    # per metric, one row per (arm, run), grouped by arm
    per_metric = {m: {f"{a} · {lab}": _mean(r["summary"], a, m) for a in arms for lab, r in runs.items()} for m in metrics}
    # each run's own differences, side by side
    own: dict[str, dict[str, Any]] = {}
    for lab, r in runs.items():
        for n, per in (r["summary"].get("differences") or {}).items():
            if n.endswith(f"_vs_{PASSIVE}") or n == f"{ACTIVE}_vs_{BASE}":
                for m, d in per.items():
                    own.setdefault(m, {})[f"{n.replace('_vs_', ' − ')} · {lab}"] = d
    across: dict[str, dict[str, Any]] = {}
    paired_rows = []
    for name, per_arm in paired.items():
        for arm, per in per_arm.items():
            for m, d in per.items():
                across.setdefault(m, {})[f"{arm}: {name}"] = d
                paired_rows.append([name, arm, m, signed(d["diff"]), ci(d["ci95"]), significant(d), fmt(d["n"])])
    return render_page(
        "compare.html.j2", title="heredity compare: " + ", ".join(labels), labels=labels,
        describe_header=DESCRIBE, describe_rows=[_describe(lab, r["summary"]) for lab, r in runs.items()],
        means_plot=plots.means(per_metric, "Held-out means (rows: arm · run)", labels),
        mean_rows=[[m, a, *_mean_cells(runs, a, m)] for m in metrics for a in arms],
        own_plot=plots.forest(own, "Within-run paired differences, 95% CI"),
        paired_rows=paired_rows,
        paired_plot=plots.forest(across, "Across runs: same arm, shared prompts, 95% CI") if paired else "",
        reports={lab: str(Path(r["dir"]).resolve() / "report.html") for lab, r in runs.items()})


def compare(dirs: list[Path], out: Path) -> dict[str, Any]:
    """Write OUT/compare.html and OUT/compare.md; returns the paired differences across runs."""
    from heredity.core.rundir import write_text

    if len(dirs) < 2:
        raise HeredityError("compare needs at least two run directories")
    runs = load_runs(dirs)
    paired = paired_across(runs)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    write_text(out / "compare.md", compare_markdown(runs, paired))
    write_text(out / "compare.html", compare_html(runs, paired))
    return {"runs": list(runs), "paired": paired}
