"""report.html: one self-contained page per run (no request leaves the file).

Plots first, tables and provenance on demand (``<details>``). The page reads ``summary.json``
(passed in) plus the run's own files — ``score/scores.parquet``, ``select/<arm>.parquet``,
``generate/candidates.parquet``, ``train/<arm>/train_log.parquet``, ``per_prompt.parquet`` —
and tolerates any of them missing (older runs, runs copied without their pools): a section
without its data says so instead of failing. Plots: :mod:`heredity.reporting.plots`.
"""

from __future__ import annotations

import math
from html import escape
from pathlib import Path
from typing import Any

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

CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,Helvetica,Arial,sans-serif;margin:0;color:#1d1d1f;
     background:#fafafa;line-height:1.45}
main{max-width:1150px;margin:0 auto;padding:1.2rem 1.6rem 3rem}
h1{font-size:1.5rem;margin:.2rem 0 .3rem}h2{font-size:1.2rem;margin:2rem 0 .5rem;border-bottom:1px solid #ddd;
padding-bottom:.2rem}h3{font-size:1rem;margin:1.2rem 0 .3rem}
.lede{font-size:1.05rem;margin:.2rem 0 .8rem}
.cards{display:flex;flex-wrap:wrap;gap:.7rem;margin:.6rem 0}
.card{background:#fff;border:1px solid #ddd;border-radius:6px;padding:.55rem .8rem;min-width:13rem}
.card .v{font-size:1.25rem;font-weight:600}.card .l{font-size:.8rem;color:#555}
.sig{color:#b00020;font-weight:600}.ns{color:#777}
img.plot{max-width:100%;height:auto;background:#fff;border:1px solid #eee;border-radius:4px;margin:.4rem 0}
table{border-collapse:collapse;margin:.4rem 0;font-size:.85rem;background:#fff}
th,td{border:1px solid #ddd;padding:.25rem .5rem;text-align:left;vertical-align:top}
td.n{text-align:right;font-variant-numeric:tabular-nums}
details{margin:.5rem 0}summary{cursor:pointer;color:#1f4e99}
.note{color:#555;font-size:.85rem}.warn{background:#fff4e5;border-left:3px solid #f0a020;padding:.4rem .7rem}
.effects li{margin:.15rem 0}
.answers{display:grid;gap:.5rem}.answers pre{white-space:pre-wrap;word-wrap:break-word;background:#fff;
border:1px solid #ddd;border-radius:4px;padding:.4rem;margin:0;font-size:.8rem;max-height:18rem;overflow:auto}
.answers .arm{font-weight:600;font-size:.8rem}
code{font-size:.85em}
"""


# ----------------------------------------------------------------------------- formatting


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
    return escape(str(x))


def ci(pair: Any) -> str:
    lo, hi = (pair or (None, None))[:2] if isinstance(pair, (list, tuple)) else (None, None)
    return "" if lo is None or hi is None else f"[{fmt(lo)}, {fmt(hi)}]"


def signed(x: Any) -> str:
    return "–" if x is None else ("+" if x > 0 else "") + fmt(x)


def table(header: list[str], rows: list[list[str]], numeric_from: int = 1) -> str:
    head = "".join(f"<th>{h}</th>" for h in header)
    body = "".join("<tr>" + "".join(f'<td{" class=n" if i >= numeric_from else ""}>{c}</td>' for i, c in enumerate(r))
                   + "</tr>" for r in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def details(title: str, body: str, open_: bool = False) -> str:
    return f"<details{' open' if open_ else ''}><summary>{escape(title)}</summary>{body}</details>" if body else ""


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


# ----------------------------------------------------------------------------- the run's data


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
        return escape(str(rule))
    strategy = rule.get("strategy", "?")
    bits = [f"{k}={v}" for k, v in rule.items() if k not in ("strategy", "subject_to", "then") and v is not None]
    text = strategy + (f" ({', '.join(bits)})" if bits else "")
    if rule.get("subject_to"):
        text += " subject to " + " and ".join(f"{c.get('metric')} {c.get('op')} {c.get('value')}"
                                              for c in rule["subject_to"] if isinstance(c, dict))
    if isinstance(rule.get("then"), dict):
        text += ", then " + rule_text(rule["then"])
    return escape(text)


# ----------------------------------------------------------------------------- sections


def _headline(summary: dict[str, Any]) -> str:
    metric = summary["target"]["metric"]
    diffs = summary.get("differences") or {}
    cards = []
    for name, label in ((f"{ACTIVE}_vs_{PASSIVE}", "active − passive"), (f"{ACTIVE}_vs_{BASE}", "active − base")):
        d = (diffs.get(name) or {}).get(metric)
        if not d:
            continue
        verdict = ('<span class="sig">CI excludes 0</span>' if significant(d)
                   else '<span class="ns">not significant (CI includes 0)</span>')
        cards.append(f'<div class="card"><div class="l">{label}, {escape(metric)} (held out)</div>'
                     f'<div class="v">{signed(d.get("diff"))}</div><div class="l">95% CI {ci(d.get("ci95"))} · '
                     f'{verdict}</div></div>')
    arms = summary.get("arms") or {}
    for arm in ordered_arms(arms):
        value = arms[arm].get(metric)
        cards.append(f'<div class="card"><div class="l">{escape(arm)} mean {escape(metric)}</div>'
                     f'<div class="v">{fmt(value)}</div><div class="l">95% CI {ci(summary["ci95"][arm].get(metric))}'
                     f'</div></div>')
    effects = side_effects(summary)
    items = "".join(f"<li>{'<b>' if e['target'] else ''}{escape(e['text'])}{'</b>' if e['target'] else ''}: "
                    f"{signed(e['d']['diff'])} {ci(e['d'].get('ci95'))}</li>" for e in effects)
    said = (f'<ul class="effects">{items}</ul>' if items else
            "<p>No held-out metric of a steered arm differs from passive with a 95% CI excluding 0 (and, beyond "
            "the target, a Benjamini-Hochberg q below 0.05).</p>")
    heading = ("What differs between the sources (each arm vs passive, CI excludes 0, q < 0.05)" if teacher_sources(summary)
               else "What changed (steered arm vs passive: CI excludes 0, and q < 0.05 beyond the target)")
    return f'<div class="cards">{"".join(cards)}</div><h3>{heading}</h3>{said}'


def _provenance(summary: dict[str, Any], run_dir: Path) -> str:
    cfg = summary.get("config") or {}
    prov = summary.get("provenance") or {}
    teachers = cfg.get("teachers") or []
    prompts = cfg.get("prompts") or {}
    train = cfg.get("train") or {}
    rows = [
        ["target", f"{escape(summary['target']['direction'])} {escape(summary['target']['metric'])}"],
        ["teachers", "<br>".join(f"{escape(teacher_label(t))}: {escape(str(t.get('backend')))} "
                                 f"{escape(str((t.get('replay') or {}).get('path') or t.get('model')))}, "
                                 f"seed {fmt((t.get('sampling') or {}).get('seed'))}" for t in teachers)],
        ["k (candidates per prompt and teacher)", fmt(cfg.get("k"))],
        ["student", escape(str(cfg.get("student")))],
        ["prompts", escape(str(prompts.get("source"))) + f", eval source {escape(str(prompts.get('eval_source')))}, "
                    f"train limit {fmt(prompts.get('limit_train'))}, eval limit {fmt(prompts.get('limit_eval'))}"],
        ["held-out prompts", fmt(summary.get("eval_prompts"))],
        ["seeds", f"train {fmt(train.get('seed'))}, teachers "
                  + ", ".join(fmt((t.get("sampling") or {}).get("seed")) for t in teachers)],
        ["heredity commit", escape(str(prov.get("git_commit") or "not a git checkout"))],
    ]
    rows += [[f"model: {escape(k)}", f"<code>{escape(str(v))}</code>"] for k, v in model_identities(summary, run_dir).items()]
    versions = {**(summary.get("versions") or {}), **(prov.get("optional_versions") or {})}
    rows.append(["versions", escape(", ".join(f"{k} {v}" for k, v in versions.items()))])
    return table(["", ""], rows, numeric_from=9)


def _students(summary: dict[str, Any]) -> str:
    arms = ordered_arms(summary.get("arms") or {})
    if not arms:
        return "<p>No evaluated arm.</p>"
    metrics = list(summary["arms"][arms[0]])
    per_metric = {m: {a: (summary["arms"][a].get(m), *(summary["ci95"][a].get(m) or (None, None))) for a in arms}
                  for m in metrics}
    diffs: dict[str, dict[str, Any]] = {}
    for name, per in (summary.get("differences") or {}).items():
        for m, d in per.items():
            diffs.setdefault(m, {})[name.replace("_vs_", " − ")] = d
    parts = [plots.forest(diffs, "Paired differences on held-out prompts, 95% CI"),
             plots.means(per_metric, "Held-out means with 95% CIs", arms)]
    rows = [[escape(m)] + [f"{fmt(summary['arms'][a].get(m))} {ci(summary['ci95'][a].get(m))}" for a in arms]
            for m in metrics]
    body = table(["metric", *map(escape, arms)], rows)
    undefined = summary.get("undefined") or {}
    if undefined:
        body += "<p class=note>Left out of the means, undefined on the answer: " + escape("; ".join(
            f"{a} " + ", ".join(f"{m} {k}" for m, k in undefined[a].items()) for a in arms if a in undefined)) + ".</p>"
    trunc = summary.get("truncated_share") or {}
    if trunc:
        body += "<p class=note>Answers cut off at eval.max_new_tokens: " + ", ".join(
            f"{escape(a)} {trunc[a]:.0%}" for a in arms if a in trunc) + ".</p>"
    drows = []
    for name, per in (summary.get("differences") or {}).items():
        for m, d in per.items():
            mark = '<span class="sig">yes</span>' if significant(d) else '<span class="ns">no</span>'
            left = f" ({d['n_undefined']} pairs undefined)" if d.get("n_undefined") else ""
            drows.append([escape(name.replace("_vs_", " − ")), escape(m), signed(d.get("diff")) + left,
                          ci(d.get("ci95")), fmt(d.get("ratio")), mark])
    body += table(["comparison", "metric", "difference", "95% CI", "ratio", "CI excludes 0"], drows, numeric_from=2)
    return "".join(parts) + details("Means and paired differences as tables", body)


def _dose_response(summary: dict[str, Any]) -> str:
    points = dose_response(summary)
    if not points:
        return ""
    target = summary["target"]["metric"]
    base = summary["arms"].get(BASE, {})
    base_ci = (summary.get("ci95") or {}).get(BASE, {}).get(target) or (None, None)
    rows = [[fmt(p["k"]), escape(p["arm"]), fmt(p["kept_mean"]), f"{fmt(p['mean'])} {ci(p['ci95'])}",
             *(f"{signed(d['diff'])} {ci(d['ci95'])}" if d else "–" for d in (p["vs_passive"], p["vs_base"]))]
            for p in points]
    return ("<h2>Dose-response: how strong the selection must be</h2>"
            "<p class=note>Each trained arm whose rule steers the target, placed at k', the number of candidates per "
            "prompt it chose among (passive: a random one, k' = 1). Differences are paired over held-out prompts.</p>"
            + plots.dose_response(points, (base.get(target), *base_ci), target)
            + table(["k'", "arm", f"kept data mean {escape(target)}", f"student {escape(target)}", "− passive",
                     "− base"], rows, numeric_from=2))


def _selection(summary: dict[str, Any], run_dir: Path) -> str:
    card = summary.get("selection") or {}
    if not card.get("metrics"):
        return "<p>No selection data card.</p>"
    target = summary["target"]["metric"]
    sets = [PASSIVE, *steered_arms(card)] if card.get("teacher_share") else [PASSIVE, ACTIVE]
    scores = _rows(run_dir / "score" / "scores.parquet")
    selected = {arm: _rows(run_dir / "select" / f"{arm}.parquet") for arm in sets}
    metrics = [target, *(m for m in card["metrics"] if m != target)]
    parts = []
    if scores:
        per_metric = {m: {"pool": [r.get(m) for r in scores],
                          **{a: [r.get(m) for r in rows] for a, rows in selected.items() if rows}} for m in metrics}
        parts.append(plots.distributions(per_metric, target))
    else:
        parts.append("<p class=note>score/scores.parquet is missing: no distribution plot (the table below is from "
                     "the data card).</p>")
    pool_share = None
    if scores:
        counts: dict[str, int] = {}
        for r in scores:
            counts[r.get("teacher", "?")] = counts.get(r.get("teacher", "?"), 0) + 1
        pool_share = {t: n / len(scores) for t, n in counts.items()}
    if card.get("teacher_share") and len(pool_share or card["teacher_share"].get(PASSIVE, {})) > 1:
        parts.append(plots.teacher_shares(card["teacher_share"], pool_share))
    # shift table: every set against the pool, every steered set against passive
    steered = [a for a in sets if a != PASSIVE]
    rows = []
    for m in metrics:
        e = card["metrics"].get(m) or {}
        pool_mean, passive_mean = (e.get("pool") or {}).get("mean"), (e.get(PASSIVE) or {}).get("mean")
        cells = [escape(m), fmt(pool_mean), fmt(passive_mean), _pct(e.get(PASSIVE, {}).get("shift_pct"))]
        for a in steered:
            mean = (e.get(a) or {}).get("mean")
            vs_passive = None if mean is None or not passive_mean else 100 * (mean - passive_mean) / abs(passive_mean)
            cells += [fmt(mean), _pct((e.get(a) or {}).get("shift_pct")), _pct(vs_passive)]
        rows.append(cells)
    header = ["metric", "pool mean", "passive mean", "passive shift vs pool"]
    for a in steered:
        header += [f"{escape(a)} mean", f"{escape(a)} shift vs pool", f"{escape(a)} shift vs passive"]
    parts.append(f"<p>{fmt(card.get('prompts'))} train prompts, {fmt(card.get('pool_size'))} candidates in the pool.</p>")
    parts.append(table(header, rows))
    if card.get("teacher_share"):
        teachers = sorted({t for s in card["teacher_share"].values() for t in s})
        share_rows = [[escape(t), *(f"{100 * (pool_share or {}).get(t, 0):.1f}%" for _ in [0] if pool_share),
                       *(f"{100 * card['teacher_share'][a].get(t, 0):.1f}%" for a in card["teacher_share"])]
                      for t in teachers]
        parts.append(details("Each teacher's share of the winners (table)", table(
            ["teacher", *(["pool"] if pool_share else []), *map(escape, card["teacher_share"])], share_rows)))
    dropped = card.get("dropped_prompts") or {}
    rules = card.get("rules") or {}
    if dropped or rules:
        drop_rows = [[escape(a), fmt(dropped.get(a, 0)), rule_text(rules.get(a, "–"))] for a in (dropped or rules)]
        note = ("<p class=warn>" + ", ".join(f"{escape(a)} dropped {n} prompt{'s' * (n != 1)}" for a, n in dropped.items() if n)
                + " (no candidate met the rule's conditions).</p>") if any(dropped.values()) else ""
        parts.append(note + details("Selection rules and prompts dropped", table(
            ["set", "prompts dropped", "rule (a prompt is dropped when no candidate satisfies its conditions)"], drop_rows)))
    if card.get("pairs"):
        parts.append(_pairs(card["pairs"]))
    if card.get("sweep"):
        sw = card["sweep"]
        parts.append(plots.sweep(sw.get("steps") or {}, metrics, sw.get("unit", "sample")))
        srows = [[fmt(k), fmt(step.get("prompts")), *(fmt(step.get(m)) for m in metrics)]
                 for k, step in (sw.get("steps") or {}).items()]
        parts.append(details("Steering-strength sweep (table)", table(["k'", "prompts", *map(escape, metrics)], srows)))
    return "".join(parts)


def _pairs(pairs: dict[str, Any]) -> str:
    """The preference arms' pairs: kept and dropped by reason, the margin, who wrote each side."""
    def shares(share: dict[str, Any]) -> str:
        return escape(", ".join(f"{t} {100 * v:.0f}%" for t, v in sorted(share.items(), key=lambda x: -(x[1] or 0)) if v))

    rows = []
    for arm, p in pairs.items():
        rule, m = p.get("rule") or {}, p.get("margin") or {}
        dropped = ", ".join(f"{reason.replace('_', ' ')} {n}" for reason, n in (p.get("dropped") or {}).items() if n)
        rows.append([escape(arm), escape(f"{rule.get('direction')} {rule.get('metric')}"), escape(str(rule.get("rejected"))),
                     fmt(p.get("pairs")), escape(dropped or "none"),
                     f"{fmt(m.get('mean'))} [{fmt(m.get('q25'))}, {fmt(m.get('median'))}, {fmt(m.get('q75'))}]",
                     shares(p.get("chosen_teacher_share") or {}) or "–", shares(p.get("rejected_teacher_share") or {}) or "–"])
    return ("<h3>Preference pairs</h3><p>Chosen = the rule's pick, rejected = another candidate of the same prompt; a pair "
            "is kept when chosen beats rejected on the pair's metric by more than its min_margin (ties are dropped).</p>"
            + table(["arm", "ordered on", "rejected", "pairs", "prompts dropped", "margin mean [q25, median, q75]",
                     "chosen by teacher", "rejected by teacher"], rows, numeric_from=3))


def _pct(x: Any) -> str:
    return "–" if x is None else f"{x:+.1f}%"


def _cost(summary: dict[str, Any], run_dir: Path) -> str:
    candidates = _rows(run_dir / "generate" / "candidates.parquet")
    if not candidates:
        return "<p class=note>generate/candidates.parquet is missing: no cost figures.</p>"
    manifest = _json(run_dir / "generate" / "manifest.json")
    costs = teacher_costs(summary, candidates, manifest.get("teacher_seconds"))
    priced = any(c["cost"] is not None for c in costs)
    rows = [[escape(c["teacher"]), fmt(c["candidates"]), fmt(c["prompt_tokens"]), fmt(c["completion_tokens"]),
             fmt(c["wall_s"]), fmt(c["latency_p50_s"]), fmt(c["latency_p90_s"]), fmt(c["latency_p99_s"]),
             *([fmt(c["cost"])] if priced else [])] for c in costs]
    walls = [c["wall_s"] for c in costs if c["wall_s"] is not None]
    total = [sum(c[k] for c in costs) for k in ("candidates", "prompt_tokens", "completion_tokens")]
    rows.append(["<b>all</b>", *(fmt(x) for x in total), fmt(sum(walls)) if walls else "–", "", "", "",
                 *([fmt(sum(c["cost"] or 0 for c in costs))] if priced else [])])
    unknown = sum(c["unknown_tokens"] for c in costs)
    note = (f"<p class=note>{unknown} candidates carry no token counts (e.g. replayed outputs without them); "
            "they count as 0.</p>") if unknown else ""
    note += ("<p class=note>Wall time: the teacher's part of the generate stage, loading included (– where its "
             "candidates were replayed or generated by an earlier run). Latency: seconds from a request's send to "
             "its answer, per candidate; a local backend answers a batch at once, so a batch's candidates share "
             "its time.</p>")
    price_note = "" if priced else ("<p class=note>No teacher has <code>price_per_1k_prompt_tokens</code> / "
                                    "<code>price_per_1k_completion_tokens</code> in the config: no money column.</p>")
    plot = plots.bars({c["teacher"]: c["prompt_tokens"] + c["completion_tokens"] for c in costs},
                      "Tokens per teacher (prompt + completion)", "tokens") if len(costs) > 1 and any(
        c["prompt_tokens"] + c["completion_tokens"] for c in costs) else ""
    return plot + table(["teacher", "candidates", "prompt tokens", "completion tokens", "generate wall time (s)",
                         "latency p50 (s)", "latency p90 (s)", "latency p99 (s)", *(["cost"] if priced else [])],
                        rows) + note + price_note


def _training(summary: dict[str, Any], run_dir: Path) -> str:
    training = summary.get("training") or {}
    logs = {}
    for arm in ordered_arms(training):
        rows = _rows(run_dir / "train" / arm / "train_log.parquet")
        series: dict[str, list[tuple[float, float]]] = {"loss": [], "eval_loss": []}
        for r in rows:
            for key in series:
                x, y = _num(r.get("step")), _num(r.get(key))
                if x is not None and y is not None:
                    series[key].append((x, y))
        logs[arm] = series
    parts = [plots.losses(logs) or "<p class=note>No training log found (train/&lt;arm&gt;/train_log.parquet).</p>"]
    check = summary.get("training_check") or {}
    if check:
        same = check.get("same_hyperparameters")
        seeds = {arm: r.get("seed") for arm, r in training.items()}
        same_seed = len(set(map(repr, seeds.values()))) <= 1
        steps = ", ".join(f"{escape(a)} {fmt(n)}" for a, n in (check.get("steps") or {}).items())
        text = (f"Same hyper-parameters in every arm: <b>{'yes' if same else 'NO'}</b>"
                + ("" if same else " (differing: " + escape(", ".join(check.get("differing_hyperparameters", []))) + ")")
                + f". Same seed: <b>{'yes' if same_seed else 'NO'}</b> ({escape(', '.join(f'{a} {s}' for a, s in seeds.items()))})."
                + f" Optimiser steps: {steps} (<b>{'equal' if check.get('same_steps') else 'NOT equal'}</b>).")
        if any(label != "sft" for label in (check.get("objectives") or {}).values()):
            text += (" Preference arms take the SFT arms' step count, each step over batch_size prompts (a pair in place "
                     "of an example): equal optimiser steps, not equal tokens.")
        if check.get("equalised"):
            text += " The arms differ in size, so each took the largest arm's step count."
        if check.get("stopped_early"):
            text += " Stopped early on validation loss: " + escape(", ".join(check["stopped_early"])) + "."
        parts.append(f"<p{' class=warn' if not (same and check.get('same_steps') and same_seed) else ''}>{text}</p>")
    rows = [[escape(arm), escape(objective_label(r)), fmt(r.get("examples")), fmt(r.get("steps")), fmt(r.get("own_steps")),
             fmt(r.get("first_loss")), fmt(r.get("last_loss")), fmt(r.get("best_eval_loss")), fmt(r.get("too_long")),
             fmt(r.get("tokens_per_s")), fmt(r.get("peak_rss_mb"))] for arm, r in training.items()]
    body = table(["arm", "objective", "examples", "steps", "own steps", "first loss", "last loss", "best validation loss",
                  "too long", "tokens/s", "peak RSS (MB)"], rows, numeric_from=2)
    hyper = {arm: r.get("hyperparameters") or {} for arm, r in training.items()}
    names = sorted({k for h in hyper.values() for k in h})
    if names:
        body += table(["setting", *map(escape, hyper)], [[escape(k), *(fmt(h.get(k)) for h in hyper.values())]
                                                          for k in names])
    warnings = [f"{escape(arm)}: {escape(w)}" for arm, r in training.items() for w in r.get("warnings") or []]
    if warnings:
        parts.append("<p class=warn>" + "<br>".join(warnings) + "</p>")
    return "".join(parts) + details("Training figures and settings per arm", body)


def _judge(summary: dict[str, Any]) -> str:
    judged = summary.get("judge")
    if not judged:
        return ""
    first = next(iter(judged.values()))

    def cell(m: dict[str, Any]) -> str:
        return "–" if not m or m.get("value") is None else f"{fmt(m['value'])} {ci(m.get('ci95'))}"

    rows = [[escape(n.replace("_vs_", " vs ")), fmt(j.get("pairs")), cell(j.get("win_rate")),
             cell(j.get("length_controlled_win_rate")), cell(j.get("position_consistency")),
             cell(j.get("longer_preferred"))] for n, j in judged.items()]
    return (f"<h2>LLM judge ({escape(str(first.get('judge')))}, {escape(str(first.get('method')))})</h2>"
            "<p class=note>Each pair judged in both orders; win rate of the first arm in %, 95% CIs over prompts.</p>"
            + table(["comparison", "pairs", "win rate", "length-controlled", "position consistency",
                     "longer preferred"], rows))


def _profile(summary: dict[str, Any]) -> str:
    profile = summary.get("profile")
    if not profile:
        return ""
    models = profile.get("models") or []

    def cell(m: dict[str, Any] | None) -> str:
        return "–" if not m or m.get("value") is None else f"{fmt(m['value'])} {ci(m.get('ci95'))}"

    rows = [[escape(k), *(cell(per.get(name)) for name in models)] for k, per in (profile.get("metrics") or {}).items()]
    skipped = profile.get("skipped") or {}
    note = ("<p class=note>Not profiled: " + escape("; ".join(f"{n} ({w})" for n, w in skipped.items())) + ".</p>"
            if skipped else "")
    diffs: dict[str, dict[str, Any]] = {}
    for name, per in (profile.get("differences") or {}).items():
        for key, d in per.items():
            diffs.setdefault(key, {})[name.replace("_vs_", " − ")] = d
    drows = [[escape(name.replace("_vs_", " − ")), escape(k), signed(d.get("diff")), ci(d.get("ci95")), fmt(d.get("n"))]
             for name, per in (profile.get("differences") or {}).items() for k, d in per.items()]
    return ("<h2>Profiles: every model side by side</h2>" + note
            + table(["suite/metric", *map(escape, models)], rows)
            + details("Paired profile differences (plot and table)",
                      plots.forest(diffs, "Profile differences, 95% CI")
                      + table(["comparison", "suite/metric", "difference", "95% CI", "items"], drows, numeric_from=2)))


def _examples(summary: dict[str, Any], run_dir: Path) -> str:
    rows = _rows(run_dir / "per_prompt.parquet")
    if not rows:
        for stage in sorted((run_dir / "evaluate").glob("*/answers.parquet")) if (run_dir / "evaluate").is_dir() else []:
            rows += [{**r, "arm": r.get("arm") or stage.parent.name} for r in _rows(stage)]
    if not rows:
        return "<p class=note>No held-out answers found (per_prompt.parquet).</p>"
    arms = ordered_arms({r["arm"] for r in rows})
    by_prompt: dict[Any, dict[str, dict[str, Any]]] = {}
    for r in rows:
        by_prompt.setdefault(r["prompt_id"], {})[r["arm"]] = r
    target = summary["target"]["metric"]
    shown = sorted(by_prompt, key=str)[:EXAMPLES]
    parts = [f"<p class=note>The first {len(shown)} of {len(by_prompt)} held-out prompts (by id, not picked), "
             f"with each answer's {escape(target)}.</p>"]
    for pid in shown:
        answers = by_prompt[pid]
        prompt = next(iter(answers.values())).get("prompt", "")
        cells = "".join(f'<div><div class="arm">{escape(a)} · {escape(target)} {fmt(_num(answers[a].get(target)))}</div>'
                        f"<pre>{escape(str(answers[a].get('text', '')))}</pre></div>" for a in arms if a in answers)
        parts.append(f"<h3>Prompt {escape(str(pid))}</h3><pre class=note style='white-space:pre-wrap'>"
                     f"{escape(str(prompt))}</pre>"
                     f'<div class="answers" style="grid-template-columns:repeat({len(arms)},1fr)">{cells}</div>')
    return "".join(parts)


def _timings(summary: dict[str, Any]) -> str:
    compute = summary.get("stage_compute_s") or {}
    rows = [[escape(k), fmt(v), fmt(compute.get(k))] for k, v in (summary.get("timings_s") or {}).items()]
    return table(["stage", "this run (s)", "when computed (s)"], rows) if rows else ""


def _seeds(summary: dict[str, Any]) -> str:
    """Training seeds (``train.seeds``): the primary comparisons pooled and per seed, and each
    arm's spread over seeds."""
    seeds = summary.get("seeds")
    if not seeds:
        return ""
    values = [str(s) for s in seeds["values"]]
    rows = []
    for name, per_metric in summary["differences"].items():
        for m, d in per_metric.items():
            if d.get("family") != "primary":
                continue
            per_seed = [seeds["per_seed"][s]["differences"].get(name, {}).get(m, {}) for s in values]
            rows.append([escape(f"{name.replace('_vs_', ' − ')}, {m}"), f"{fmt(d['diff'])} {ci(d['ci95']) or '–'}",
                         ci(d.get("ci95_prompts")) or "–",
                         *(f"{fmt(e.get('diff'))} {ci(e.get('ci95')) or '–'}" for e in per_seed)])
    spread = [[escape(arm), escape(m), fmt(e["sd"]), fmt(e["min"]), fmt(e["max"])]
              for arm, per in seeds["spread"].items() for m, e in per.items()]
    return (f"<h2>Training seeds ({len(values)}: {escape(', '.join(values))})</h2>"
            "<p class=note>Every arm was trained once per seed, the passive data drawn anew per seed. The means "
            "above pool seeds and prompts, and their CIs resample both; the prompt-only CI is what one seed's "
            "run would have claimed.</p>"
            + table(["primary comparison", "pooled [95% CI, prompts and seeds]", "prompt-only CI",
                     *(f"seed {s}" for s in values)], rows)
            + details("Each arm's mean over seeds: spread", table(["arm", "metric", "sd", "min", "max"], spread, 2)))


def study_sections(summary: dict[str, Any]) -> str:
    """The figures of a run that its summary alone holds (headline, students, seeds, dose-response,
    judge, profile), headings one level down: a study's part of the results page."""
    html = "".join([_headline(summary), _students(summary), _seeds(summary), _dose_response(summary),
                    _judge(summary), _profile(summary)])
    return html.replace("<h3>", "<h4>").replace("</h3>", "</h4>").replace("<h2>", "<h3>").replace("</h2>", "</h3>")


def page(title: str, body: str) -> str:
    return ("<!DOCTYPE html>\n<html lang=en><head><meta charset=utf-8>"
            '<meta name="viewport" content="width=device-width, initial-scale=1">'
            f"<title>{escape(title)}</title><style>{CSS}</style></head><body><main>{body}</main></body></html>\n")


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


def _markdown_code(text: str) -> str:
    parts = escape(text).split("`")
    return "".join(f"<code>{p}</code>" if i % 2 else p for i, p in enumerate(parts))


def render_html(summary: dict[str, Any], run_dir: Path) -> str:
    """The whole page of a run from its summary and its files."""
    run_dir = Path(run_dir)
    cfg = summary.get("config") or {}
    target = summary["target"]
    teachers = cfg.get("teachers") or []
    whose = "1 teacher's" if len(teachers) == 1 else f"{len(teachers)} teachers'"
    sources = teacher_sources(summary)
    question = (f"Does selecting, from {whose} k={fmt(cfg.get('k'))} candidates per prompt, the one with the "
                f"{'highest' if target['direction'] == 'max' else 'lowest'} "
                f"<b>{escape(target['metric'])}</b> move the student ({escape(str(cfg.get('student')))}) "
                f"beyond random selection (passive)?")
    if sources:
        question = (f"Which attributes of the student ({escape(str(cfg.get('student')))}) follow the teacher whose "
                    "answers it is fine-tuned on? No arm is selected by a metric: "
                    + ", ".join(f"{escape(a)} = <b>{escape(t)}</b>" for a, t in sources.items()) + ".")
    body = [
        f"<h1>heredity report: {escape(str(summary.get('name')))}</h1>",
        f"<p class=lede>{question}</p>",
        _headline(summary),
        details("Provenance: target, teachers, student, prompts, seeds, versions, model identities",
                _provenance(summary, run_dir)),
        "<h2>The students on held-out prompts</h2>",
        f"<p class=note>{fmt(summary.get('eval_prompts'))} held-out prompts, {escape(decoding_label(summary))}. Means with bootstrap 95% CIs; "
        "differences are paired over prompts (and training seeds, where the run trained several). A primary "
        "comparison counts when its 95% CI excludes 0; an exploratory one only when its Benjamini-Hochberg "
        "q-value is below 0.05 too.</p>",
        *(f"<p class=note>{_markdown_code(note)}</p>" for note in metric_notes(summary)),
        _students(summary),
        _seeds(summary),
        _dose_response(summary),
        "<h2>The selection: what each arm trained on</h2>",
        _selection(summary, run_dir),
        "<h2>Cost per teacher</h2>",
        _cost(summary, run_dir),
        "<h2>Training</h2>",
        _training(summary, run_dir),
        _judge(summary),
        _profile(summary),
        "<h2>Examples</h2>",
        details("Held-out prompts with every arm's answer side by side", _examples(summary, run_dir), open_=False),
        "<h2>Wall time</h2>",
        details("Seconds per stage", _timings(summary)),
    ]
    return page(f"heredity report: {summary.get('name')}", "".join(body))
