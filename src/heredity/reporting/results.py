"""The results page: every study under ``experiments/`` in one Markdown file.

A study is a folder holding the ``config.yaml`` it ran, a ``README.md`` whose first heading
and paragraph say what it asks, and the ``summary.json`` its run wrote. The page is made only
from those files (``heredity results``), so each figure on it traces to a committed summary
and the command next to it reproduces that summary.

For each study: the students' held-out means with 95% CIs, the effect on the target (every
steered arm against passive and against base, paired over prompts) with a verdict, the side
effects (other metrics whose paired CI excludes zero), the share of answers cut at the cap,
the profile differences when the run profiled its students, and the compute time.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

from heredity.core.arms import (
    decoding_label,
    dose_response,
    mark_families,
    mark_profile_family,
    ordered_arms,
    target_of,
    teacher_sources,
)
from heredity.core.rundir import read_json
from heredity.reporting import rounds
from heredity.reporting.html import metric_notes, render_page
from heredity.reporting.plots import figure_html
from heredity.errors import HeredityError

def _fmt(x: float | None) -> str:
    if x is None:
        return "–"
    return f"{x:.3g}" if abs(x) < 100 else f"{x:.1f}"


def _ci(ci: list[float | None] | None) -> str:
    if not ci or ci[0] is None:
        return "–"
    return f"[{_fmt(ci[0])}, {_fmt(ci[1])}]"


def verdict(diff: dict[str, Any], direction: str) -> str:
    """'moved' when the paired 95% CI lies wholly on the intended side of zero, 'wrong way'
    when wholly on the other side, else 'not significant'."""
    lo, hi = diff["ci95"]
    if lo is None:
        return "undefined"
    up = lo > 0
    down = hi < 0
    if (direction == "max" and up) or (direction == "min" and down):
        return "moved"
    if (direction == "max" and down) or (direction == "min" and up):
        return "wrong way"
    return "not significant"


def _intro(readme: Path) -> tuple[str | None, str | None]:
    """A study README's first heading and first paragraph."""
    if not readme.is_file():
        return None, None
    title, paragraph, lines = None, [], readme.read_text(encoding="utf-8").splitlines()
    for line in lines:
        if title is None and line.startswith("# "):
            title = line[2:].strip()
            continue
        if title is not None:
            if line.strip():
                paragraph.append(line.strip())
            elif paragraph:
                break
    return title, " ".join(paragraph) or None


def dose_response_lines(summary: dict[str, Any]) -> list[str]:
    """The student-level dose-response as a Markdown table, or [] when the run has none."""
    points = dose_response(summary)
    if not points:
        return []
    target = summary["target"]["metric"]
    base = summary["arms"].get("base", {}).get(target)
    lines = [f"Dose-response: the student against the selection strength k' (candidates per prompt the rule "
             f"chose among){f'; base {_fmt(base)}' if base is not None else ''}:", "",
             f"| k' | arm | kept data mean {target} | student {target} | − passive | − base |", "|---" * 6 + "|"]
    for p in points:
        diffs = [f"{_fmt(d['diff'])} {_ci(d['ci95'])}" if d else "–" for d in (p["vs_passive"], p["vs_base"])]
        lines.append(f"| {p['k']:g} | {p['arm']} | {_fmt(p['kept_mean'])} | {_fmt(p['mean'])} {_ci(p['ci95'])} | "
                     + " | ".join(diffs) + " |")
    return lines


def steered(summary: dict[str, Any]) -> list[str]:
    return [a for a in ordered_arms(summary["arms"]) if a not in ("base", "passive")]


def rounds_study(folder: Path, summary: dict[str, Any], root: Path) -> dict[str, Any]:
    """A rounds study as the results page shows it: its findings and the target's course by round."""
    title, question = _intro(folder / "README.md")
    rel = folder.relative_to(root.parent) if folder.is_relative_to(root.parent) else folder
    header, rows = rounds.metric_table(summary, summary["target"])
    compute = sum(v for v in (summary.get("timings_s") or {}).values() if v)
    return {"id": folder.name, "title": title or folder.name, "question": question, "folder": str(rel),
            "summary": summary, "rounds": True, "compute_min": f"{compute / 60:.0f}", "header": header, "rows": rows,
            "note": (f"Target: {summary['direction']} {summary['target']}; rounds {', '.join(map(str, summary['rounds']))}"
                     f", seeds {', '.join(map(str, summary['seeds']))}, {summary['prompts']} held-out prompts.")}


def render_rounds_study(folder: Path, summary: dict[str, Any], root: Path) -> list[str]:
    study = rounds_study(folder, summary, root)
    lines = [f"## {study['title']}", ""] + ([study["question"], ""] if study["question"] else [])
    lines += [f"{study['note']} Reproduce: `heredity run {study['folder']}/config.yaml --out runs/{folder.name}` "
              f"(compute when run: {study['compute_min']} min); every metric's table and the trajectory plot are in "
              f"the study's `report.md`.", "", "| " + " | ".join(study["header"]) + " |",
              "|---" * len(study["header"]) + "|"] + ["| " + " | ".join(r) + " |" for r in study["rows"]]
    return lines + ["", "Findings:", ""] + [f"- {f}" for f in summary["findings"]] + [""]


def render_study(folder: Path, summary: dict[str, Any], root: Path) -> list[str]:
    if "trajectories" in summary:
        return render_rounds_study(folder, summary, root)
    title, question = _intro(folder / "README.md")
    target, direction = summary["target"]["metric"], summary["target"]["direction"]
    arms = ordered_arms(summary["arms"])
    metrics = list(summary["arms"][arms[0]])
    rel = folder.relative_to(root.parent) if folder.is_relative_to(root.parent) else folder
    compute = sum(v for v in (summary.get("stage_compute_s") or {}).values() if v)
    lines = [f"## {title or folder.name}", ""]
    if question:
        lines += [question, ""]
    sources = teacher_sources(summary)
    aim = "No target (each student learns one teacher's answers)" if sources else f"Target: **{direction} {target}**"
    lines += [f"{aim}; {summary['eval_prompts']} held-out prompts, {decoding_label(summary)}. "
              f"Reproduce: `heredity run {rel}/config.yaml --out runs/{folder.name}` "
              f"(compute when run: {compute / 60:.0f} min).", ""]
    lines += ["| metric | " + " | ".join(arms) + " |", "|---" * (len(arms) + 1) + "|"]
    for m in metrics:
        cells = [f"{_fmt(summary['arms'][a][m])} {_ci(summary['ci95'][a][m])}" for a in arms]
        lines.append(f"| {m}{' (target)' if m == target and not sources else ''} | " + " | ".join(cells) + " |")
    cut = summary.get("truncated_share") or {}
    if cut:
        lines += ["", "Answers cut at the cap: " + ", ".join(f"{a} {cut[a]:.0%}" for a in arms if a in cut) + "."]
    diffs = summary["differences"]
    if sources:
        return lines + source_lines(summary, sources, metrics) + profile_lines(summary) + [""]
    marked = copy.deepcopy(summary)
    mark_families(marked)
    diffs = marked["differences"]
    lines += ["", "Effect on each arm's target (primary comparisons, paired over prompts; a variant steers its own "
              "metric; q: Benjamini-Hochberg within the primary family):", "",
              "| comparison | target | difference | 95% CI | q | ratio | verdict |", "|---|---|---|---|---|---|---|"]
    for arm in steered(summary):
        arm_target, arm_direction = target_of(summary, arm)
        for other in ("passive", "base"):
            d = diffs.get(f"{arm}_vs_{other}", {}).get(arm_target)
            if d is not None:
                lines.append(f"| {arm} − {other} | {arm_direction} {arm_target} | {_fmt(d['diff'])} | "
                             f"{_ci(d['ci95'])} | {_fmt(d.get('q'))} | {_fmt(d['ratio'])}× | {verdict(d, arm_direction)} |")
    dose = dose_response_lines(summary)
    if dose:
        lines += ["", *dose]
    if summary.get("seeds"):
        lines += render_seeds(summary)
    lines += [""] + side_effect_lines(summary)
    lines += [line for note in metric_notes(summary) for line in ("", note)]
    return lines + profile_lines(summary) + protocol_lines(folder) + [""]


def side_effect_lines(summary: dict[str, Any]) -> list[str]:
    """The exploratory held-out differences (all but the primary ones): how many exclude zero
    uncorrected, and which survive Benjamini-Hochberg correction within the study (q < 0.05)."""
    summary = copy.deepcopy(summary)
    mark_families(summary)  # q-values; p read off the CI where the summary kept no p-value
    family = [(name, m, d) for name, per in summary["differences"].items() for m, d in per.items()
              if d.get("family") == "exploratory"]
    raw = sum(1 for _, _, d in family if d["ci95"][0] is not None and (d["ci95"][0] > 0 or d["ci95"][1] < 0))
    moved = [f"{m} {'rose' if d['diff'] > 0 else 'fell'} ({name.replace('_vs_', ' − ')} {_fmt(d['diff'])} "
             f"{_ci(d['ci95'])}, q {_fmt(d['q'])})" for name, m, d in family if d.get("moved")]
    approx = any(d.get("p_source") == "ci" for _, _, d in family)
    head = (f"Side effects (exploratory: {len(family)} differences besides the primary ones, {raw} with a CI "
            f"excluding zero before correction; Benjamini-Hochberg within the study"
            f"{', p-values read off the CIs' if approx else ''}): ")
    return [head + ("; ".join(moved) + " survive (q < 0.05)." if moved else "none survives (q < 0.05).")]


def protocol_lines(folder: Path) -> list[str]:
    """Every protocol file of a study (``protocol*.md``), with its Figures section when it has one:
    protocols that failed stay on the page beside the one that met its target."""
    lines = []
    for path in sorted(folder.glob("protocol*.md")):
        text = path.read_text(encoding="utf-8")
        title = next((line.lstrip("# ").strip() for line in text.splitlines() if line.startswith("# ")), path.name)
        lines += ["", f"Protocol `{path.name}`: {title}."]
        if "\n## Figures" in text:
            section = text.split("\n## Figures", 1)[1].split("\n## ", 1)[0].strip("\n")
            lines += ["", *section.splitlines()]
    return lines


def profile_lines(summary: dict[str, Any]) -> list[str]:
    profile = summary.get("profile")
    if not profile or not profile.get("differences"):
        return []
    profile = copy.deepcopy(profile)
    mark_profile_family(profile)
    rows = [(name, key, d) for name, per in profile["differences"].items() for key, d in per.items()]
    raw = sum(1 for _, _, d in rows if d["ci95"][0] is not None and (d["ci95"][0] > 0 or d["ci95"][1] < 0))
    lines = ["", f"Profile differences (paired over items; exploratory: {len(rows)} differences, {raw} with a CI "
             f"excluding zero before correction, {sum(bool(d.get('moved')) for _, _, d in rows)} with a "
             "Benjamini-Hochberg q < 0.05 within the study's profile):", "",
             "| comparison | suite/metric | difference | 95% CI | q |", "|---|---|---|---|---|"]
    for name, key, d in rows:
        q = _fmt(d.get("q")) + (" (moved)" if d.get("moved") else "")
        lines.append(f"| {name.replace('_vs_', ' − ')} | {key} | {_fmt(d['diff'])} | {_ci(d['ci95'])} | {q} |")
    return lines


def source_lines(summary: dict[str, Any], sources: dict[str, str], metrics: list[str]) -> list[str]:
    """Every paired difference between students of different sources (and against base), one
    row per comparison, one column per metric; bold where the 95% CI excludes zero."""
    def cell(d: dict[str, Any] | None) -> str:
        if not d or d["ci95"][0] is None:
            return "–"
        text = f"{_fmt(d['diff'])} {_ci(d['ci95'])}"
        return f"**{text}**" if d["ci95"][0] > 0 or d["ci95"][1] < 0 else text

    lines = ["", "Sources: " + ", ".join(f"{a} = {t}" for a, t in sources.items()) + ". No arm is steered: which "
             "attributes follow the source (paired over prompts; **bold**: 95% CI excludes zero):", "",
             "| comparison | " + " | ".join(metrics) + " |", "|---" * (len(metrics) + 1) + "|"]
    for name, per_metric in summary["differences"].items():
        a, b = name.split("_vs_")
        label = f"{a} − {b} ({sources.get(a, a)} − {sources.get(b, b)})"
        lines.append(f"| {label} | " + " | ".join(cell(per_metric.get(m)) for m in metrics) + " |")
    return lines


def render_seeds(summary: dict[str, Any]) -> list[str]:
    """Each training seed's figures for the primary comparisons, beside the pooled ones."""
    seeds = summary["seeds"]
    values = [str(s) for s in seeds["values"]]
    lines = ["", f"## Training seeds ({len(values)}: {', '.join(values)})", "",
             "Every arm was trained once per seed (the passive draw seeded per replicate); the means above pool "
             "seeds and prompts, and their CIs resample both. Per seed:", "",
             "| comparison | metric | pooled [95% CI, prompts and seeds] | prompts-only CI | "
             + " | ".join(f"seed {s}" for s in values) + " |", "|---" * (4 + len(values)) + "|"]
    for name, per_metric in summary["differences"].items():
        for m, d in per_metric.items():
            if d.get("family") != "primary":
                continue
            per_seed = [seeds["per_seed"][s]["differences"].get(name, {}).get(m, {}) for s in values]
            cells = [f"{_fmt(e.get('diff'))} [{_fmt((e.get('ci95') or [None])[0])}, "
                     f"{_fmt((e.get('ci95') or [None, None])[1])}]" for e in per_seed]
            prompts_only = d.get("ci95_prompts") or [None, None]
            lines.append(f"| {name.replace('_vs_', ' − ')} | {m} | {_fmt(d['diff'])} [{_fmt(d['ci95'][0])}, "
                         f"{_fmt(d['ci95'][1])}] | [{_fmt(prompts_only[0])}, {_fmt(prompts_only[1])}] | "
                         + " | ".join(cells) + " |")
    return lines


def studies(root: Path) -> dict[Path, dict[str, Any]]:
    """Every folder under ``root`` (one level down, and one more for groups such as
    ``paper/``) that holds a summary.json, in name order."""
    found = {}
    for summary in sorted(root.glob("*/summary.json")) + sorted(root.glob("*/*/summary.json")):
        found[summary.parent] = read_json(summary)
    return found


def render_results_html(root: Path) -> str:
    """The results page as one self-contained HTML file: every study's plots and tables, drawn
    from its summary.json as a run's report.html draws them."""
    root = Path(root)
    if not root.is_dir():
        raise HeredityError(f"{root}: no such folder of studies")
    shown = []
    for folder, summary in studies(root).items():
        if "trajectories" in summary:
            study = rounds_study(folder, summary, root)
            fig = rounds.trajectories_figure(summary)
            study["figure"] = "" if fig is None else figure_html(fig, "each arm's held-out means by round with 95% CIs")
            shown.append(study)
            continue
        title, question = _intro(folder / "README.md")
        rel = folder.relative_to(root.parent) if folder.is_relative_to(root.parent) else folder
        compute = sum(v for v in (summary.get("stage_compute_s") or {}).values() if v)
        shown.append({"id": folder.name, "title": title or folder.name, "question": question, "folder": str(rel),
                      "summary": summary, "rounds": False, "decoding": decoding_label(summary),
                      "compute_min": f"{compute / 60:.0f}"})
    return render_page("results.html.j2", title="heredity results", root=root.name, studies=shown)


def render_results(root: Path) -> str:
    """The results page for the studies under ``root``."""
    root = Path(root)
    if not root.is_dir():
        raise HeredityError(f"{root}: no such folder of studies")
    found = studies(root)
    lines = ["# Results", "",
             f"Every figure below is read from a study's `summary.json` under `{root.name}/` and was written "
             "by the run that the command beside it starts (`heredity results` renders this page). Means "
             "with bootstrap 95% CIs over held-out prompts; differences are paired over prompts (and over training "
             "seeds where a study trained several). Primary comparisons keep their CIs; every other difference is "
             "exploratory and is called moved only when its Benjamini-Hochberg q-value is below 0.05.", ""]
    not_run = sorted(p.parent.name for p in root.glob("*/config.yaml") if p.parent not in found)
    if not found:
        lines += ["No study has a summary.json yet.", ""]
    for folder, summary in found.items():
        lines += render_study(folder, summary, root)
    if not_run:
        lines += ["## Not run here", "", "Configs without a committed summary: " + ", ".join(
            f"`{root.name}/{n}`" for n in not_run) + ".", ""]
    return "\n".join(lines)
