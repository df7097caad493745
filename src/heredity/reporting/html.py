"""report.html: one self-contained page per run (no request leaves the file); the compare and
results pages are built the same way.

The pages are Jinja2 templates (``templates/``, autoescaped: every text from a run is escaped
once, by the template); this module reads what they show. A run's page reads ``summary.json``
(passed in) plus the run's own files — ``score/scores.parquet``, ``select/<arm>.parquet``,
``generate/candidates.parquet``, ``train/<arm>/train_log.parquet``, ``per_prompt.parquet`` —
and tolerates any of them missing (older runs, runs copied without their pools): a section
without its data says so instead of failing. The ``*_view`` functions turn a summary into the
plain values a section shows (text, numbers formatted, plots); plots: :mod:`heredity.reporting.plots`.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from jinja2 import Environment, PackageLoader, StrictUndefined

from heredity.config import ACTIVE, BASE, PASSIVE, TeacherConfig
from heredity.core.arms import (
    decoding_label,
    dose_response,
    objective_label,
    ordered_arms,
    steered_arms,
    target_of,
    teacher_sources,
)
from heredity.core.rundir import read_json, read_table
from heredity.reporting import plots
from heredity.reporting.plots import significant

EXAMPLES = 4  # held-out prompts shown with every arm's answer


# ----------------------------------------------------------------------------- formatting
# Plain text: the templates escape it.


def fmt(x: Any) -> str:
    if x is None:
        return "–"
    if isinstance(x, bool):
        return "yes" if x else "no"
    if isinstance(x, int):
        return f"{x:,}"
    if isinstance(x, float):
        if not math.isfinite(x):
            return "–"
        return f"{x:.3g}" if abs(x) < 100 else f"{x:,.1f}"
    return str(x)


def ci(pair: Any) -> str:
    lo, hi = (pair or (None, None))[:2] if isinstance(pair, (list, tuple)) else (None, None)
    return "" if lo is None or hi is None else f"[{fmt(lo)}, {fmt(hi)}]"


def signed(x: Any) -> str:
    return "–" if x is None else ("+" if x > 0 else "") + fmt(x)


def _pct(x: Any) -> str:
    return "–" if x is None else f"{x:+.1f}%"


def _value_ci(m: dict[str, Any] | None) -> str:
    return "–" if not m or m.get("value") is None else f"{fmt(m['value'])} {ci(m.get('ci95'))}"


# ----------------------------------------------------------------------------- the run's data


def _rows(path: Path) -> list[dict[str, Any]]:
    try:
        return read_table(path) if path.is_file() else []
    except Exception:  # an unreadable optional input: the section says it has no data
        return []


def _json(path: Path) -> dict[str, Any]:
    try:
        return read_json(path) if path.is_file() else {}
    except Exception:
        return {}


def _num(v: Any) -> float | None:
    try:
        x = float(v)
    except (TypeError, ValueError):
        return None
    return x if math.isfinite(x) else None


def teacher_label(t: dict[str, Any]) -> str:
    try:
        return TeacherConfig.model_validate(t).label
    except Exception:  # a config from an older schema: the same rule by hand
        if t.get("name"):
            return str(t["name"])
        if t.get("backend") == "replay" and t.get("replay"):
            return Path(t["replay"]["path"]).stem
        return str(t.get("model", "?")).split("/")[-1].removeprefix("embedded:")


def side_effects(summary: dict[str, Any]) -> list[dict[str, Any]]:
    """Every steered arm's significant shifts against passive (paired 95% CI excludes 0),
    the targeted metric first, each with a sentence."""
    found = []
    sources = teacher_sources(summary)
    for name, per_metric in (summary.get("differences") or {}).items():
        a, _, b = name.partition("_vs_")
        if b != PASSIVE or a in (BASE, PASSIVE):
            continue
        metric_t, direction = target_of(summary, a)
        for metric, d in per_metric.items():
            if d.get("diff") is None or not significant(d):
                continue
            moved = "rose" if d["diff"] > 0 else "fell"
            if sources:  # no arm steers: a difference between two teachers' students
                found.append({"arm": a, "metric": metric, "target": False, "d": d, "text":
                              f"{metric} {moved} in {a} ({sources[a]}) vs passive ({sources[PASSIVE]})"})
                continue
            is_target = metric == metric_t
            if is_target:
                wanted = (d["diff"] > 0) == (direction == "max")
                text = f"{metric} {moved} ({a} − passive), {'as targeted' if wanted else 'AGAINST the target'}"
            else:
                text = f"{metric} {moved} while targeting {direction} {metric_t} ({a} − passive)"
            found.append({"arm": a, "metric": metric, "target": is_target, "text": text, "d": d})
    return sorted(found, key=lambda e: (e["arm"] != ACTIVE, not e["target"]))


def model_identities(summary: dict[str, Any], run_dir: Path) -> dict[str, str]:
    """What each model was: from the summary's provenance, else from the stage manifests."""
    models = dict((summary.get("provenance") or {}).get("models") or {})
    if "student" not in models:
        steps = _json(run_dir / "train" / "steps" / "manifest.json")
        student = (steps.get("config") or {}).get("student")
        if student:
            models["student"] = student
    return models


def teacher_costs(summary: dict[str, Any], candidates: list[dict[str, Any]],
                  teacher_seconds: dict[str, float] | None = None) -> list[dict[str, Any]]:
    """Per teacher: candidates, prompt and completion tokens, the generate wall time (the generate
    manifest's ``teacher_seconds``; None for replayed or reused candidates), per-request latency
    percentiles, and money when priced. A request's latency is the time until its answer came back: a
    batched local backend answers a whole batch at once, so its requests share their batch's time."""
    import numpy as np

    prices = {teacher_label(t): (t.get("price_per_1k_prompt_tokens"), t.get("price_per_1k_completion_tokens"))
              for t in (summary.get("config") or {}).get("teachers") or []}
    per: dict[str, dict[str, Any]] = {}
    latencies: dict[str, list[float]] = {}
    for r in candidates:
        teacher = r.get("teacher", "?")
        e = per.setdefault(teacher, {"candidates": 0, "prompt_tokens": 0, "completion_tokens": 0, "unknown_tokens": 0})
        e["candidates"] += 1
        p, c, lat = _num(r.get("prompt_tokens")), _num(r.get("completion_tokens")), _num(r.get("latency_s"))
        if p is None or c is None:
            e["unknown_tokens"] += 1
        e["prompt_tokens"] += int(p or 0)
        e["completion_tokens"] += int(c or 0)
        if lat is not None:
            latencies.setdefault(teacher, []).append(lat)
    out = []
    for teacher, e in per.items():
        price_p, price_c = prices.get(teacher, (None, None))
        cost = None
        if (price_p is not None or price_c is not None) and e["unknown_tokens"] < e["candidates"]:
            cost = (e["prompt_tokens"] * (price_p or 0.0) + e["completion_tokens"] * (price_c or 0.0)) / 1000
        timed = latencies.get(teacher, [])
        p50, p90, p99 = (float(x) for x in np.percentile(timed, [50, 90, 99])) if timed else (None, None, None)
        out.append({"teacher": teacher, **e, "cost": cost, "wall_s": (teacher_seconds or {}).get(teacher),
                    "timed": len(timed), "latency_p50_s": p50, "latency_p90_s": p90, "latency_p99_s": p99})
    return out


def rule_text(rule: Any) -> str:
    """A selection rule from card.json in a few words."""
    if not isinstance(rule, dict):
        return str(rule)
    strategy = rule.get("strategy", "?")
    bits = [f"{k}={v}" for k, v in rule.items() if k not in ("strategy", "subject_to", "then") and v is not None]
    text = strategy + (f" ({', '.join(bits)})" if bits else "")
    if rule.get("subject_to"):
        text += " subject to " + " and ".join(f"{c.get('metric')} {c.get('op')} {c.get('value')}"
                                              for c in rule["subject_to"] if isinstance(c, dict))
    if isinstance(rule.get("then"), dict):
        text += ", then " + rule_text(rule["then"])
    return text


# ----------------------------------------------------------------------------- sections


def headline_view(summary: dict[str, Any]) -> dict[str, Any]:
    """The headline cards (the target's primary differences, then every arm's mean) and what moved."""
    metric = summary["target"]["metric"]
    diffs = summary.get("differences") or {}
    cards = []
    for name, label in ((f"{ACTIVE}_vs_{PASSIVE}", "active − passive"), (f"{ACTIVE}_vs_{BASE}", "active − base")):
        d = (diffs.get(name) or {}).get(metric)
        if d:
            cards.append({"label": f"{label}, {metric} (held out)", "value": signed(d.get("diff")),
                          "ci": ci(d.get("ci95")), "significant": significant(d)})
    arms = summary.get("arms") or {}
    for arm in ordered_arms(arms):
        cards.append({"label": f"{arm} mean {metric}", "value": fmt(arms[arm].get(metric)),
                      "ci": ci(summary["ci95"][arm].get(metric)), "significant": None})
    return {"cards": cards, "effects": side_effects(summary), "sources": bool(teacher_sources(summary))}


def students_view(summary: dict[str, Any]) -> dict[str, Any] | None:
    arms = ordered_arms(summary.get("arms") or {})
    if not arms:
        return None
    metrics = list(summary["arms"][arms[0]])
    per_metric = {m: {a: (summary["arms"][a].get(m), *(summary["ci95"][a].get(m) or (None, None))) for a in arms}
                  for m in metrics}
    diffs: dict[str, dict[str, Any]] = {}
    for name, per in (summary.get("differences") or {}).items():
        for m, d in per.items():
            diffs.setdefault(m, {})[name.replace("_vs_", " − ")] = d
    undefined = summary.get("undefined") or {}
    trunc = summary.get("truncated_share") or {}
    differences = []
    for name, per in (summary.get("differences") or {}).items():
        for m, d in per.items():
            left = f" ({d['n_undefined']} pairs undefined)" if d.get("n_undefined") else ""
            differences.append([name.replace("_vs_", " − "), m, signed(d.get("diff")) + left, ci(d.get("ci95")),
                                fmt(d.get("ratio")), significant(d)])
    return {
        "arms": arms,
        "forest": plots.forest(diffs, "Paired differences on held-out prompts, 95% CI"),
        "means": plots.means(per_metric, "Held-out means with 95% CIs", arms),
        "rows": [[m] + [f"{fmt(summary['arms'][a].get(m))} {ci(summary['ci95'][a].get(m))}" for a in arms]
                 for m in metrics],
        "undefined": "; ".join(f"{a} " + ", ".join(f"{m} {k}" for m, k in undefined[a].items())
                               for a in arms if a in undefined),
        "truncated": ", ".join(f"{a} {trunc[a]:.0%}" for a in arms if a in trunc) if trunc else None,
        "differences": differences,
    }


def dose_response_view(summary: dict[str, Any]) -> dict[str, Any] | None:
    points = dose_response(summary)
    if not points:
        return None
    target = summary["target"]["metric"]
    base = summary["arms"].get(BASE, {})
    base_ci = (summary.get("ci95") or {}).get(BASE, {}).get(target) or (None, None)
    rows = [[fmt(p["k"]), p["arm"], fmt(p["kept_mean"]), f"{fmt(p['mean'])} {ci(p['ci95'])}",
             *(f"{signed(d['diff'])} {ci(d['ci95'])}" if d else "–" for d in (p["vs_passive"], p["vs_base"]))]
            for p in points]
    return {"target": target, "rows": rows, "plot": plots.dose_response(points, (base.get(target), *base_ci), target)}


def seeds_view(summary: dict[str, Any]) -> dict[str, Any] | None:
    """Training seeds (``train.seeds``): the primary comparisons pooled and per seed, and each
    arm's spread over seeds."""
    seeds = summary.get("seeds")
    if not seeds:
        return None
    values = [str(s) for s in seeds["values"]]
    rows = []
    for name, per_metric in summary["differences"].items():
        for m, d in per_metric.items():
            if d.get("family") != "primary":
                continue
            per_seed = [seeds["per_seed"][s]["differences"].get(name, {}).get(m, {}) for s in values]
            rows.append([f"{name.replace('_vs_', ' − ')}, {m}", f"{fmt(d['diff'])} {ci(d['ci95']) or '–'}",
                         ci(d.get("ci95_prompts")) or "–",
                         *(f"{fmt(e.get('diff'))} {ci(e.get('ci95')) or '–'}" for e in per_seed)])
    spread = [[arm, m, fmt(e["sd"]), fmt(e["min"]), fmt(e["max"])]
              for arm, per in seeds["spread"].items() for m, e in per.items()]
    return {"seeds": values, "seed_columns": [f"seed {s}" for s in values], "rows": rows, "spread": spread}


def judge_view(summary: dict[str, Any]) -> dict[str, Any] | None:
    judged = summary.get("judge")
    if not judged:
        return None
    first = next(iter(judged.values()))
    rows = [[n.replace("_vs_", " vs "), fmt(j.get("pairs")), _value_ci(j.get("win_rate")),
             _value_ci(j.get("length_controlled_win_rate")), _value_ci(j.get("position_consistency")),
             _value_ci(j.get("longer_preferred"))] for n, j in judged.items()]
    return {"judge": str(first.get("judge")), "method": str(first.get("method")), "rows": rows}


def profile_view(summary: dict[str, Any]) -> dict[str, Any] | None:
    profile = summary.get("profile")
    if not profile:
        return None
    models = profile.get("models") or []
    diffs: dict[str, dict[str, Any]] = {}
    for name, per in (profile.get("differences") or {}).items():
        for key, d in per.items():
            diffs.setdefault(key, {})[name.replace("_vs_", " − ")] = d
    return {
        "models": models,
        "rows": [[k, *(_value_ci(per.get(name)) for name in models)] for k, per in (profile.get("metrics") or {}).items()],
        "skipped": "; ".join(f"{n} ({w})" for n, w in (profile.get("skipped") or {}).items()),
        "forest": plots.forest(diffs, "Profile differences, 95% CI"),
        "differences": [[name.replace("_vs_", " − "), k, signed(d.get("diff")), ci(d.get("ci95")), fmt(d.get("n"))]
                        for name, per in (profile.get("differences") or {}).items() for k, d in per.items()],
    }


def provenance_view(summary: dict[str, Any], run_dir: Path) -> dict[str, Any]:
    cfg = summary.get("config") or {}
    prov = summary.get("provenance") or {}
    teachers = cfg.get("teachers") or []
    prompts = cfg.get("prompts") or {}
    train = cfg.get("train") or {}
    versions = {**(summary.get("versions") or {}), **(prov.get("optional_versions") or {})}
    return {
        "teachers": [f"{teacher_label(t)}: {t.get('backend')} {(t.get('replay') or {}).get('path') or t.get('model')}, "
                     f"seed {fmt((t.get('sampling') or {}).get('seed'))}" for t in teachers],
        "prompts": f"{prompts.get('source')}, eval source {prompts.get('eval_source')}, "
                   f"train limit {fmt(prompts.get('limit_train'))}, eval limit {fmt(prompts.get('limit_eval'))}",
        "seeds": f"train {fmt(train.get('seed'))}, teachers "
                 + ", ".join(fmt((t.get("sampling") or {}).get("seed")) for t in teachers),
        "commit": str(prov.get("git_commit") or "not a git checkout"),
        "models": {k: str(v) for k, v in model_identities(summary, run_dir).items()},
        "versions": ", ".join(f"{k} {v}" for k, v in versions.items()),
    }


def selection_view(summary: dict[str, Any], run_dir: Path) -> dict[str, Any] | None:
    card = summary.get("selection") or {}
    if not card.get("metrics"):
        return None
    target = summary["target"]["metric"]
    sets = [PASSIVE, *steered_arms(card)] if card.get("teacher_share") else [PASSIVE, ACTIVE]
    scores = _rows(run_dir / "score" / "scores.parquet")
    selected = {arm: _rows(run_dir / "select" / f"{arm}.parquet") for arm in sets}
    metrics = [target, *(m for m in card["metrics"] if m != target)]
    view: dict[str, Any] = {"distributions": None, "shares_plot": "", "shares": None, "dropped": None,
                            "pairs": None, "sweep": None,
                            "prompts": card.get("prompts"), "pool_size": card.get("pool_size")}
    pool_share = None
    if scores:
        per_metric = {m: {"pool": [r.get(m) for r in scores],
                          **{a: [r.get(m) for r in rows] for a, rows in selected.items() if rows}} for m in metrics}
        view["distributions"] = plots.distributions(per_metric, target)
        counts: dict[str, int] = {}
        for r in scores:
            counts[r.get("teacher", "?")] = counts.get(r.get("teacher", "?"), 0) + 1
        pool_share = {t: n / len(scores) for t, n in counts.items()}
    if card.get("teacher_share") and len(pool_share or card["teacher_share"].get(PASSIVE, {})) > 1:
        view["shares_plot"] = plots.teacher_shares(card["teacher_share"], pool_share)
    # shift table: every set against the pool, every steered set against passive
    steered = [a for a in sets if a != PASSIVE]
    rows = []
    for m in metrics:
        e = card["metrics"].get(m) or {}
        pool_mean, passive_mean = (e.get("pool") or {}).get("mean"), (e.get(PASSIVE) or {}).get("mean")
        cells = [m, fmt(pool_mean), fmt(passive_mean), _pct(e.get(PASSIVE, {}).get("shift_pct"))]
        for a in steered:
            mean = (e.get(a) or {}).get("mean")
            vs_passive = None if mean is None or not passive_mean else 100 * (mean - passive_mean) / abs(passive_mean)
            cells += [fmt(mean), _pct((e.get(a) or {}).get("shift_pct")), _pct(vs_passive)]
        rows.append(cells)
    view["header"] = ["metric", "pool mean", "passive mean", "passive shift vs pool",
                      *(f"{a} {what}" for a in steered for what in ("mean", "shift vs pool", "shift vs passive"))]
    view["rows"] = rows
    if card.get("teacher_share"):
        teachers = sorted({t for s in card["teacher_share"].values() for t in s})
        view["shares"] = {
            "header": ["teacher", *(["pool"] if pool_share else []), *card["teacher_share"]],
            "rows": [[t, *([f"{100 * pool_share.get(t, 0):.1f}%"] if pool_share else []),
                      *(f"{100 * card['teacher_share'][a].get(t, 0):.1f}%" for a in card["teacher_share"])]
                     for t in teachers]}
    dropped = card.get("dropped_prompts") or {}
    rules = card.get("rules") or {}
    if dropped or rules:
        view["dropped"] = {
            "note": ", ".join(f"{a} dropped {n} prompt{'s' * (n != 1)}" for a, n in dropped.items() if n),
            "rows": [[a, fmt(dropped.get(a, 0)), rule_text(rules.get(a, "–"))] for a in (dropped or rules)]}
    if card.get("pairs"):
        view["pairs"] = _pair_rows(card["pairs"])
    if card.get("sweep"):
        sw = card["sweep"]
        view["sweep"] = {"plot": plots.sweep(sw.get("steps") or {}, metrics, sw.get("unit", "sample")),
                         "metrics": metrics,
                         "rows": [[fmt(k), fmt(step.get("prompts")), *(fmt(step.get(m)) for m in metrics)]
                                  for k, step in (sw.get("steps") or {}).items()]}
    return view


def _pair_rows(pairs: dict[str, Any]) -> list[list[str]]:
    """The preference arms' pairs: kept and dropped by reason, the margin, who wrote each side."""
    def shares(share: dict[str, Any]) -> str:
        return ", ".join(f"{t} {100 * v:.0f}%" for t, v in sorted(share.items(), key=lambda x: -(x[1] or 0)) if v)

    rows = []
    for arm, p in pairs.items():
        rule, m = p.get("rule") or {}, p.get("margin") or {}
        dropped = ", ".join(f"{reason.replace('_', ' ')} {n}" for reason, n in (p.get("dropped") or {}).items() if n)
        rows.append([arm, f"{rule.get('direction')} {rule.get('metric')}", str(rule.get("rejected")),
                     fmt(p.get("pairs")), dropped or "none",
                     f"{fmt(m.get('mean'))} [{fmt(m.get('q25'))}, {fmt(m.get('median'))}, {fmt(m.get('q75'))}]",
                     shares(p.get("chosen_teacher_share") or {}) or "–", shares(p.get("rejected_teacher_share") or {}) or "–"])
    return rows


def cost_view(summary: dict[str, Any], run_dir: Path) -> dict[str, Any] | None:
    candidates = _rows(run_dir / "generate" / "candidates.parquet")
    if not candidates:
        return None
    manifest = _json(run_dir / "generate" / "manifest.json")
    costs = teacher_costs(summary, candidates, manifest.get("teacher_seconds"))
    priced = any(c["cost"] is not None for c in costs)
    rows: list[list[Any]] = [
        [c["teacher"], fmt(c["candidates"]), fmt(c["prompt_tokens"]), fmt(c["completion_tokens"]), fmt(c["wall_s"]),
         fmt(c["latency_p50_s"]), fmt(c["latency_p90_s"]), fmt(c["latency_p99_s"]),
         *([fmt(c["cost"])] if priced else [])] for c in costs]
    walls = [c["wall_s"] for c in costs if c["wall_s"] is not None]
    total = [sum(c[k] for c in costs) for k in ("candidates", "prompt_tokens", "completion_tokens")]
    rows.append([{"bold": "all"}, *(fmt(x) for x in total), fmt(sum(walls)) if walls else "–", "", "", "",
                 *([fmt(sum(c["cost"] or 0 for c in costs))] if priced else [])])
    tokens = {c["teacher"]: c["prompt_tokens"] + c["completion_tokens"] for c in costs}
    plot = (plots.bars(tokens, "Tokens per teacher (prompt + completion)", "tokens")
            if len(costs) > 1 and any(tokens.values()) else "")
    return {"rows": rows, "priced": priced, "unknown": sum(c["unknown_tokens"] for c in costs), "plot": plot}


def training_view(summary: dict[str, Any], run_dir: Path) -> dict[str, Any]:
    training = summary.get("training") or {}
    logs = {}
    for arm in ordered_arms(training):
        series: dict[str, list[tuple[float, float]]] = {"loss": [], "eval_loss": []}
        for r in _rows(run_dir / "train" / arm / "train_log.parquet"):
            for key in series:
                x, y = _num(r.get("step")), _num(r.get(key))
                if x is not None and y is not None:
                    series[key].append((x, y))
        logs[arm] = series
    view: dict[str, Any] = {"losses": plots.losses(logs), "check": None}
    check = summary.get("training_check") or {}
    if check:
        same = check.get("same_hyperparameters")
        seeds = {arm: r.get("seed") for arm, r in training.items()}
        same_seed = len(set(map(repr, seeds.values()))) <= 1
        view["check"] = {
            "same": same, "differing": ", ".join(check.get("differing_hyperparameters", [])),
            "same_seed": same_seed, "seeds": ", ".join(f"{a} {s}" for a, s in seeds.items()),
            "steps": ", ".join(f"{a} {fmt(n)}" for a, n in (check.get("steps") or {}).items()),
            "same_steps": check.get("same_steps"),
            "preference": any(label != "sft" for label in (check.get("objectives") or {}).values()),
            "equalised": check.get("equalised"),
            "stopped_early": ", ".join(check.get("stopped_early") or []),
            "warn": not (same and check.get("same_steps") and same_seed)}
    view["rows"] = [[arm, objective_label(r), fmt(r.get("examples")), fmt(r.get("steps")), fmt(r.get("own_steps")),
                     fmt(r.get("first_loss")), fmt(r.get("last_loss")), fmt(r.get("best_eval_loss")),
                     fmt(r.get("too_long")), fmt(r.get("tokens_per_s")), fmt(r.get("peak_rss_mb"))]
                    for arm, r in training.items()]
    hyper = {arm: r.get("hyperparameters") or {} for arm, r in training.items()}
    names = sorted({k for h in hyper.values() for k in h})
    view["settings"] = {"arms": list(hyper), "rows": [[k, *(fmt(h.get(k)) for h in hyper.values())] for k in names]
                        } if names else None
    view["warnings"] = [f"{arm}: {w}" for arm, r in training.items() for w in r.get("warnings") or []]
    return view


def examples_view(summary: dict[str, Any], run_dir: Path) -> dict[str, Any] | None:
    rows = _rows(run_dir / "per_prompt.parquet")
    if not rows:
        for stage in sorted((run_dir / "evaluate").glob("*/answers.parquet")) if (run_dir / "evaluate").is_dir() else []:
            rows += [{**r, "arm": r.get("arm") or stage.parent.name} for r in _rows(stage)]
    if not rows:
        return None
    arms = ordered_arms({r["arm"] for r in rows})
    by_prompt: dict[Any, dict[str, dict[str, Any]]] = {}
    for r in rows:
        by_prompt.setdefault(r["prompt_id"], {})[r["arm"]] = r
    target = summary["target"]["metric"]
    shown = []
    for pid in sorted(by_prompt, key=str)[:EXAMPLES]:
        answers = by_prompt[pid]
        shown.append({"id": str(pid), "prompt": str(next(iter(answers.values())).get("prompt", "")),
                      "answers": [{"arm": a, "score": _num(answers[a].get(target)), "text": str(answers[a].get("text", ""))}
                                  for a in arms if a in answers]})
    return {"arms": arms, "target": target, "total": len(by_prompt), "shown": shown}


def metric_notes(summary: dict[str, Any]) -> list[str]:
    """Caveats a reader needs beside some metrics' figures (Markdown text): the offline toxicity
    scorer is a proxy of Perspective, with its agreement on other generators' text."""
    from heredity.metrics.toxicity.metrics import OFFLINE_PROXY_NOTE

    metrics = set(next(iter(summary.get("arms", {}).values()), {}))
    profile = summary.get("profile") or {}
    profile_scorer = (((summary.get("config") or {}).get("eval") or {}).get("profile") or {}).get("toxicity_scorer")
    profiled = any(str(k).startswith("toxicity/") for k in profile.get("metrics", {})) and \
        profile_scorer in (None, "toxicity")
    return [OFFLINE_PROXY_NOTE] if "toxicity" in metrics or profiled else []


# ----------------------------------------------------------------------------- pages

_ENV = Environment(loader=PackageLoader("heredity.reporting"), autoescape=True, undefined=StrictUndefined,
                   trim_blocks=True, lstrip_blocks=True, keep_trailing_newline=True)
_ENV.filters.update(fmt=fmt, ci=ci, signed=signed)
_ENV.globals.update(headline_view=headline_view, students_view=students_view, seeds_view=seeds_view,
                    dose_response_view=dose_response_view, judge_view=judge_view, profile_view=profile_view)


def render_page(template: str, **context: Any) -> str:
    """One of the pages in ``templates/`` rendered with ``context``."""
    return _ENV.get_template(template).render(**context)


def _dose_response(summary: dict[str, Any]) -> str:
    """The dose-response section alone (empty when the run has none)."""
    return str(_ENV.get_template("sections.html.j2").module.dose_response(summary))


def render_html(summary: dict[str, Any], run_dir: Path) -> str:
    """The whole page of a run from its summary and its files."""
    run_dir = Path(run_dir)
    cfg = summary.get("config") or {}
    teachers = cfg.get("teachers") or []
    timings = summary.get("timings_s") or {}
    compute = summary.get("stage_compute_s") or {}
    return render_page(
        "report.html.j2", title=f"heredity report: {summary.get('name')}", summary=summary,
        target=summary["target"], student=str(cfg.get("student")), k=cfg.get("k"),
        whose="1 teacher's" if len(teachers) == 1 else f"{len(teachers)} teachers'",
        sources=teacher_sources(summary), decoding=decoding_label(summary), notes=metric_notes(summary),
        provenance=provenance_view(summary, run_dir), selection=selection_view(summary, run_dir),
        cost=cost_view(summary, run_dir), training=training_view(summary, run_dir),
        examples=examples_view(summary, run_dir),
        timings=[[k, fmt(v), fmt(compute.get(k))] for k, v in timings.items()])
