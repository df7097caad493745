"""Report stage: summary.json (for tools and tests) and report.md (for people).

Every mean has a bootstrap 95% CI over eval prompts; arm-vs-arm differences resample
prompts jointly (paired), because all arms answer the same prompts. A metric undefined on an
answer (NaN or None) is left out of that arm's mean (and a pair with an undefined side out of
the difference) and counted: ``undefined[arm][metric]``, and ``n_undefined`` in a difference;
an arm with no defined value has a mean of None. Statistics: :mod:`heredity.core.stats`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from heredity.config import RunConfig
from heredity.core.arms import (
    comparisons,
    decoding_label,
    mark_families,
    objective_label,
    mark_profile_family,
    ordered_arms,
    steered_arms,
)
from heredity.core.models import model_identity
from heredity.core.rundir import (
    git_commit,
    optional_versions,
    read_json,
    read_table,
    versions,
    write_json,
    write_table,
    write_text,
)
from heredity.core.stats import as_array, mean_ci, paired_difference, seeded_paired_difference
from heredity.errors import HeredityError
from heredity.plan import persisted_config
from heredity.judging.pairwise import summarise_run_judgments
from heredity.profile.differences import summarise_profiles
from heredity.reporting.html import metric_notes, render_html
from heredity.reporting.results import dose_response_lines, render_seeds


def training_check(train_results: dict[str, Any]) -> dict[str, Any]:
    """Did every arm train with the same hyper-parameters and the same number of optimiser
    steps? The claim that students differ by their data alone rests on this."""
    results = {arm: r for arm, r in train_results.items() if r}
    if not results:
        return {}
    settings = {arm: r.get("hyperparameters") or {} for arm, r in results.items()}
    # a setting one objective has and another lacks (SFT's packing, DPO's β) is the arm's objective, not a
    # difference in the shared settings; those are compared wherever every arm has them
    # max_steps is how an arm was given the common step count (set on some arms only): the steps
    # themselves are compared below
    names = sorted(set.intersection(*(set(h) for h in settings.values())) - {"max_steps"})
    differing = [k for k in names if len({repr(h.get(k)) for h in settings.values()}) > 1]
    steps = {arm: r.get("steps") for arm, r in results.items()}
    planned = {arm: r.get("max_steps") for arm, r in results.items()}
    return {
        "same_hyperparameters": not differing,
        "differing_hyperparameters": differing,
        "same_steps": len(set(steps.values())) == 1,
        "steps": steps,
        "planned_steps": planned,
        "own_steps": {arm: r.get("own_steps") for arm, r in results.items()},
        "equalised": any(r.get("equal_steps") for r in results.values()),
        "stopped_early": [arm for arm, r in results.items() if r.get("stopped_early")],
        "objectives": {arm: objective_label(r) for arm, r in results.items()},
    }


def summarise(cfg: RunConfig, answers: dict[str, list[dict[str, Any]]], card: dict[str, Any],
              timings: dict[str, float], train_results: dict[str, Any],
              compute: dict[str, float | None] | None = None) -> dict[str, Any]:
    metrics = cfg.eval_metrics
    n_boot = cfg.eval.bootstrap_samples
    arms: dict[str, dict[str, float | None]] = {}
    ci: dict[str, dict[str, list[float | None]]] = {}
    undefined: dict[str, dict[str, int]] = {}
    for arm, rows in answers.items():
        figures = {m: mean_ci([r[m] for r in rows], n_boot, 0) for m in metrics}
        arms[arm] = {m: f["value"] for m, f in figures.items()}
        ci[arm] = {m: f["ci95"] for m, f in figures.items()}
        counts = {m: f["n_undefined"] for m, f in figures.items() if f["n_undefined"]}
        if counts:
            undefined[arm] = counts
    differences: dict[str, Any] = {}
    for a, b in comparisons(cfg.select.extra_arms()):
        if a in answers and b in answers:
            by_id_b = {r["prompt_id"]: r for r in answers[b]}
            paired = [(r, by_id_b[r["prompt_id"]]) for r in answers[a] if r["prompt_id"] in by_id_b]
            differences[f"{a}_vs_{b}"] = {
                m: paired_difference(as_array([x[m] for x, _ in paired]), as_array([y[m] for _, y in paired]), n_boot, 1)
                for m in metrics
            }
    summary = {
        "name": cfg.name,
        "target": {"metric": cfg.select.target, "direction": cfg.select.direction},
        "eval_prompts": len(next(iter(answers.values()))),
        "arms": arms,
        "ci95": ci,
        "undefined": undefined,
        "differences": differences,
        "truncated_share": {
            arm: float(np.mean([r["finish_reason"] == "length" for r in rows])) for arm, rows in answers.items()
        },
        "selection": card,
        "training": train_results,
        "training_check": training_check(train_results),
        "timings_s": timings,
        "stage_compute_s": compute or {},
        "versions": versions(),
        "provenance": provenance(cfg),
        "config": persisted_config(cfg),
    }
    mark_families(summary)
    return summary


def summarise_seeds(cfg: RunConfig, replicates: dict[int, dict[str, Any]],
                    answers: dict[int, dict[str, list[dict[str, Any]]]]) -> dict[str, Any]:
    """One summary over training seeds (``train.seeds``): every arm's mean over seeds and prompts, and
    paired differences whose CIs resample prompts and seeds (``seeded_paired_difference``), beside each
    seed's own figures (``seeds``). ``replicates`` and ``answers`` are each seed's summary and answers;
    the first seed's summary gives the parts that do not vary (selection card, provenance)."""
    seeds = list(replicates)
    first = replicates[seeds[0]]
    metrics = cfg.eval_metrics
    n_boot = cfg.eval.bootstrap_samples
    prompt_ids = [r["prompt_id"] for r in answers[seeds[0]]["base"]]

    arms = ordered_arms(answers[seeds[0]])
    # (seeds, prompts) per arm and metric, read once: each serves its mean and every comparison
    by_id = {(s, arm): {r["prompt_id"]: r for r in answers[s][arm]} for s in seeds for arm in arms}
    matrices = {(arm, m): np.stack([as_array([by_id[s, arm][p][m] if p in by_id[s, arm] else None
                                              for p in prompt_ids]) for s in seeds])
                for arm in arms for m in metrics}

    def matrix(arm: str, metric: str) -> np.ndarray:
        return matrices[arm, metric]

    means: dict[str, dict[str, float | None]] = {}
    ci: dict[str, dict[str, list[float | None]]] = {}
    undefined: dict[str, dict[str, int]] = {}
    for arm in arms:
        figures = {m: seeded_paired_difference(matrix(arm, m), np.zeros(len(prompt_ids)), n_boot, 0) for m in metrics}
        means[arm] = {m: f["diff"] for m, f in figures.items()}
        ci[arm] = {m: f["ci95"] for m, f in figures.items()}
        counts = {m: f["n_undefined"] for m, f in figures.items() if f["n_undefined"]}
        if counts:
            undefined[arm] = counts
    differences = {f"{a}_vs_{b}": {m: seeded_paired_difference(matrix(a, m), matrix(b, m), n_boot, 1) for m in metrics}
                   for a, b in comparisons(cfg.select.extra_arms()) if a in arms and b in arms}
    spread = {arm: {m: _spread([replicates[s]["arms"][arm][m] for s in seeds]) for m in metrics} for arm in arms}
    summary = {
        **first,
        "arms": means,
        "ci95": ci,
        "undefined": undefined,
        "differences": differences,
        "truncated_share": {arm: float(np.mean([replicates[s]["truncated_share"][arm] for s in seeds])) for arm in arms},
        "stage_compute_s": {f"seed-{s}/{name}" if s != seeds[0] else name: v
                            for s in seeds for name, v in replicates[s]["stage_compute_s"].items()},
        "config": persisted_config(cfg),
        "seeds": {
            "values": seeds,
            "ci": "prompts and seeds resampled (seeded_paired_difference); ci95_prompts: prompts only",
            "spread": spread,
            # the top-level training and training_check are the first seed's; every seed's here
            "training": {str(s): replicates[s]["training"] for s in seeds},
            "training_check": {str(s): replicates[s]["training_check"] for s in seeds},
            "per_seed": {str(s): {"arms": replicates[s]["arms"],
                                  "differences": {c: {m: {k: d[k] for k in ("diff", "ci95", "n")} for m, d in ms.items()}
                                                  for c, ms in replicates[s]["differences"].items()},
                                  "selection_seed": replicates[s]["config"]["select"].get("seed"),
                                  "passive": replicates[s]["config"]["select"].get("passive")}
                         for s in seeds},
        },
    }
    summary.pop("profile", None)
    profiles = {str(s): replicates[s]["profile"] for s in seeds if "profile" in replicates[s]}
    if profiles:
        summary["profile"] = {**first["profile"], "seed": seeds[0]}  # the first seed's; every seed's below
        summary["seeds"]["profile"] = profiles
    mark_families(summary)
    return summary


def _spread(values: list[float | None]) -> dict[str, float | None]:
    kept = [v for v in values if v is not None]
    if not kept:
        return {"sd": None, "min": None, "max": None}
    return {"sd": float(np.std(kept, ddof=1)) if len(kept) > 1 else 0.0, "min": min(kept), "max": max(kept)}


def provenance(cfg: RunConfig) -> dict[str, Any]:
    """What made these numbers beyond the config: optional packages, heredity's commit, and
    each model's identity (embedded package version, local files' sizes and times, hub id)."""
    models = {"student": model_identity(cfg.student)}
    for t in cfg.teachers:
        models[f"teacher {t.label}"] = (f"replay of {t.replay.path}" if t.backend == "replay" and t.replay
                                        else model_identity(t.model))
    return {"git_commit": git_commit(), "optional_versions": optional_versions(), "models": models}


def _fmt(x: float | None) -> str:
    if x is None:
        return "–"
    return f"{x:.3g}" if abs(x) < 100 else f"{x:.1f}"


def render_markdown(summary: dict[str, Any]) -> str:
    target = summary["target"]
    metrics = list(next(iter(summary["arms"].values())))
    arms = ordered_arms(summary["arms"])
    lines = [
        f"# heredity report: {summary['name']}",
        "",
        f"Target: **{target['direction']} {target['metric']}**. "
        f"{summary['eval_prompts']} held-out prompts, {decoding_label(summary)}. "
        "Means with bootstrap 95% CIs.",
        "",
        "## Students on held-out prompts",
        "",
        "| metric | " + " | ".join(arms) + " |",
        "|---" * (len(arms) + 1) + "|",
    ]
    for m in metrics:
        cells = []
        for a in arms:
            lo, hi = summary["ci95"][a][m]
            cells.append(f"{_fmt(summary['arms'][a][m])} [{_fmt(lo)}, {_fmt(hi)}]")
        lines.append(f"| {m} | " + " | ".join(cells) + " |")
    undefined = summary.get("undefined") or {}
    if undefined:
        lines += ["", "Left out of the means, undefined on the answer (NaN): " + "; ".join(
            f"{a} " + ", ".join(f"{m} {k}" for m, k in undefined[a].items()) for a in arms if a in undefined) + "."]
    lines += ["", "Share of answers cut off at `eval.max_new_tokens`: " + ", ".join(
        f"{a} {summary['truncated_share'][a]:.0%}" for a in arms), ""]
    seeds = summary.get("seeds")
    over = "prompts and training seeds" if seeds else "prompts"
    lines += [f"## Differences (paired bootstrap over {over})", "",
              "Primary comparisons (the config's `primary`, else each steered arm's target vs passive and vs "
              "base) keep their CIs; every other difference is exploratory: q is its Benjamini-Hochberg "
              "q-value within the run's exploratory differences, and only q < 0.05 counts as moved.", "",
              "| comparison | metric | family | difference | 95% CI | q | ratio |", "|---|---|---|---|---|---|---|"]
    for name, per_metric in summary["differences"].items():
        for m, d in per_metric.items():
            left_out = f" ({d['n_undefined']} pairs undefined)" if d.get("n_undefined") else ""
            q = "" if d.get("family") == "primary" else _fmt(d.get("q")) + (" (moved)" if d.get("moved") else "")
            lines.append(f"| {name.replace('_vs_', ' − ')} | {m} | {d.get('family', '–')} | {_fmt(d['diff'])}{left_out} | "
                         f"[{_fmt(d['ci95'][0])}, {_fmt(d['ci95'][1])}] | {q} | {_fmt(d['ratio'])}× |")
    if seeds:
        lines += render_seeds(summary)
    lines += [line for note in metric_notes(summary) for line in ("", note)]
    dose = dose_response_lines(summary)
    if dose:
        lines += ["", "## Dose-response", "", *dose]
    card = summary["selection"]
    steered = steered_arms(card)
    lines += ["", "## Selected training data", "",
              f"{card['prompts']} train prompts, {card['pool_size']} candidates in the pool.", "",
              "| metric | pool mean | passive mean | " + " | ".join(f"{a} mean | {a} shift" for a in steered) + " |",
              "|---" * (3 + 2 * len(steered)) + "|"]
    for m, e in card["metrics"].items():
        cells = []
        for a in steered:
            shift = e[a]["shift_pct"]
            cells += [_fmt(e[a]["mean"]), "–" if shift is None else f"{shift:+.1f}%"]
        lines.append(f"| {m} | {_fmt(e['pool']['mean'])} | {_fmt(e['passive']['mean'])} | " + " | ".join(cells) + " |")
    shares = card.get("teacher_share") or {}
    if len(shares.get("passive", {})) > 1:
        lines += ["", "Winners by teacher: " + "; ".join(
            f"{a} " + ", ".join(f"{t} {v:.0%}" for t, v in sorted(s.items(), key=lambda x: -x[1]) if v)
            for a, s in shares.items()) + "."]
    dropped = card.get("dropped_prompts", {})
    if any(dropped.values()):
        lines += ["", "Prompts dropped by filters: " + ", ".join(f"{a} {n}" for a, n in dropped.items())]
    if "sweep" in card:
        metrics = list(card["metrics"])
        lines += ["", f"Steering strength (active rule on the first k' {card['sweep']['unit']}s per prompt):", "",
                  "| k' | prompts | " + " | ".join(metrics) + " |", "|---" * (len(metrics) + 2) + "|"]
        for k, step in card["sweep"]["steps"].items():
            lines.append(f"| {k} | {step['prompts']} | " + " | ".join(_fmt(step[m]) for m in metrics) + " |")
    lines += render_pairs(card)
    lines += ["", "## Training", "",
              "| arm | objective | examples | steps | own steps | first loss | last loss | too long | tokens/s | "
              "peak RSS (MB) |", "|---|---|---|---|---|---|---|---|---|---|"]
    for arm, r in summary["training"].items():
        lines.append(f"| {arm} | {objective_label(r)} | {r.get('examples')} | {r.get('steps')} | {r.get('own_steps', '–')} | "
                     f"{_fmt(r.get('first_loss'))} | {_fmt(r.get('last_loss'))} | {r.get('too_long')} | "
                     f"{_fmt(r.get('tokens_per_s'))} | {_fmt(r.get('peak_rss_mb'))} |")
    lines += render_training_check(summary.get("training_check") or {})
    warnings = [f"- {arm}: {w}" for arm, r in summary["training"].items() for w in r.get("warnings") or []]
    if warnings:
        lines += ["", "Training warnings:", *warnings]
    if "judge" in summary:
        lines += render_judge(summary["judge"])
    if "profile" in summary:
        lines += render_profile(summary["profile"])
    lines += ["", "## Wall time per stage (s)", "", "| stage | this run | when computed |", "|---|---|---|"]
    compute = summary.get("stage_compute_s", {})
    lines += [f"| {k} | {v:.1f} | {_fmt(compute.get(k))} |" for k, v in summary["timings_s"].items()]
    lines += ["", "Versions: " + ", ".join(f"{k} {v}" for k, v in summary["versions"].items()), ""]
    return "\n".join(lines)


def render_pairs(card: dict[str, Any]) -> list[str]:
    """The preference arms' pairs: how many, what was dropped and why, the margin and who wrote each side."""
    pairs = card.get("pairs") or {}
    if not pairs:
        return []
    lines = ["", "## Preference pairs", "",
             "Chosen = the rule's pick, rejected = another candidate of the same prompt; a pair is kept when "
             "chosen beats rejected on the pair's metric by more than its min_margin (ties are dropped).", "",
             "| arm | metric | rejected | pairs | dropped | margin mean [q25, median, q75] | chosen by teacher | "
             "rejected by teacher |", "|---|---|---|---|---|---|---|---|"]

    def shares(share: dict[str, float | None]) -> str:
        return ", ".join(f"{t} {v:.0%}" for t, v in sorted(share.items(), key=lambda x: -(x[1] or 0)) if v) or "–"

    for arm, p in pairs.items():
        rule, m = p["rule"], p["margin"]
        dropped = ", ".join(f"{reason.replace('_', ' ')} {n}" for reason, n in p["dropped"].items() if n) or "none"
        lines.append(f"| {arm} | {rule['direction']} {rule['metric']} | {rule['rejected']} | {p['pairs']} | {dropped} | "
                     f"{_fmt(m['mean'])} [{_fmt(m['q25'])}, {_fmt(m['median'])}, {_fmt(m['q75'])}] | "
                     f"{shares(p['chosen_teacher_share'])} | {shares(p['rejected_teacher_share'])} |")
    return lines


def render_training_check(check: dict[str, Any]) -> list[str]:
    if not check:
        return []
    same = "yes" if check["same_hyperparameters"] else "NO, differing: " + ", ".join(check["differing_hyperparameters"])
    steps = ", ".join(f"{arm} {n}" for arm, n in check["steps"].items())
    equal = "equal" if check["same_steps"] else "NOT equal"
    lines = ["", f"Same hyper-parameters and seed in every arm: {same}. Optimiser steps: {steps} ({equal})."]
    if any(label != "sft" for label in (check.get("objectives") or {}).values()):
        lines.append("Preference arms take the SFT arms' step count, each step over batch_size prompts (a pair in "
                     "place of an example): equal optimiser steps, not equal tokens (a pair holds two answers).")
    if check["equalised"]:
        lines.append("The arms differ in size, so each took the largest arm's step count; "
                     "'own steps' is what its epochs alone would have given.")
    if check["stopped_early"]:
        lines.append("Stopped early (validation loss): " + ", ".join(check["stopped_early"]) + ".")
    return lines


def render_judge(judged: dict[str, Any]) -> list[str]:
    first = next(iter(judged.values()))
    lines = ["", f"## LLM judge ({first['judge']}, {first['method']})", "",
             "Each pair judged in both orders; win rate of the first arm in %, 95% CIs over prompts.", "",
             "| comparison | pairs | win rate | length-controlled | position consistency | longer answer preferred |",
             "|---|---|---|---|---|---|"]

    def cell(m: dict[str, Any]) -> str:
        lo, hi = m["ci95"]
        return "–" if m["value"] is None else _fmt(m["value"]) + ("" if lo is None else f" [{_fmt(lo)}, {_fmt(hi)}]")

    for name, j in judged.items():
        lines.append(f"| {name.replace('_vs_', ' vs ')} | {j['pairs']} | {cell(j['win_rate'])} | "
                     f"{cell(j['length_controlled_win_rate'])} | {cell(j['position_consistency'])} | "
                     f"{cell(j['longer_preferred'])} |")
    return lines


def render_profile(profile: dict[str, Any]) -> list[str]:
    models = profile["models"]
    lines = ["", "## Profile (the battery on every model)", "",
             "Values with 95% CIs; see `profile/<model>/summary.json` for each suite's protocol.", "",
             "| suite/metric | " + " | ".join(models) + " |", "|---" * (len(models) + 1) + "|"]
    skipped = [f"{name} ({why})" for name, why in profile.get("skipped", {}).items()]
    if skipped:
        lines[3:3] = ["Not profiled: " + "; ".join(skipped) + ".", ""]
    for key, per_model in profile["metrics"].items():
        cells = []
        for name in models:
            m = per_model.get(name)
            if m is None or m["value"] is None:
                cells.append("–")
                continue
            lo, hi = m["ci95"]
            cells.append(_fmt(m["value"]) + ("" if lo is None else f" [{_fmt(lo)}, {_fmt(hi)}]"))
        lines.append(f"| {key} | " + " | ".join(cells) + " |")
    if profile["differences"]:
        lines += ["", ("Paired differences (the same items for every model, resampled jointly; ECE, ICAT and "
                       "BBQ bias scores are recomputed on both models for each resample):"), "",
                  "| comparison | suite/metric | difference | 95% CI | items |", "|---|---|---|---|---|"]
        for name, per_metric in profile["differences"].items():
            for key, d in per_metric.items():
                lo, hi = d["ci95"]
                ci = "–" if lo is None else f"[{_fmt(lo)}, {_fmt(hi)}]"
                diff = _fmt(d["diff"]) + (f" ({d['note']})" if d.get("note") else "")
                lines.append(f"| {name.replace('_vs_', ' − ')} | {key} | {diff} | {ci} | {d.get('n', '')} |")
    return lines


def write_report(cfg: RunConfig, run_dir: Path, eval_stages: dict[str, Any], select_stage: Any,
                 train_stages: dict[str, Any], timings: dict[str, float],
                 compute: dict[str, float | None] | None = None,
                 profile_stages: dict[str, Any] | None = None,
                 judge_stages: dict[str, Any] | None = None,
                 profile_skipped: dict[str, str] | None = None) -> dict[str, Any]:
    answers = {arm: read_table(stage.dir / "answers.parquet") for arm, stage in eval_stages.items()}
    card = read_json(select_stage.dir / "card.json")
    train_results = {arm: (stage.manifest() or {}).get("result", {}) for arm, stage in train_stages.items()}
    summary = summarise(cfg, answers, card, timings, train_results, compute)
    if profile_stages:
        summary["profile"] = summarise_profiles(profile_stages, cfg.eval.bootstrap_samples, profile_skipped,
                                                variants=list(cfg.select.extra_arms()))
        mark_profile_family(summary["profile"])
    if judge_stages:
        summary["judge"] = summarise_run_judgments(judge_stages)
    write_table(run_dir / "per_prompt.parquet", [r for arm in ordered_arms(answers) for r in answers[arm]])
    write_json(run_dir / "summary.json", summary)
    write_reports(summary, run_dir)
    return summary


def write_reports(summary: dict[str, Any], run_dir: Path) -> None:
    """report.md and report.html from a summary and the run's files."""
    write_text(run_dir / "report.md", render_markdown(summary))
    write_text(run_dir / "report.html", render_html(summary, run_dir))


def rerender(run_dir: Path) -> dict[str, Any]:
    """Re-render a finished run's report.md and report.html from its summary.json and files;
    nothing is recomputed and summary.json is left as it is."""
    run_dir = Path(run_dir)
    path = run_dir / "summary.json"
    if not path.is_file():
        raise HeredityError(f"{run_dir}: no summary.json; is it a finished run directory (heredity run --out)?")
    summary = read_json(path)
    if "trajectories" in summary:  # a rounds run: its own report (each round's is under round-<r>/)
        from heredity.reporting.rounds import write_rounds_report

        write_rounds_report(summary, run_dir)
        return summary
    summary.setdefault("undefined", {})
    write_reports(summary, run_dir)
    return summary
