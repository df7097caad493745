"""report.html, `heredity report` and `heredity compare` on real small runs, checked in a
headless Chromium: every plot drawn, no console error, no request leaving the file."""

from __future__ import annotations

import io
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import tiny_config
from rich.console import Console

from heredity.pipeline import run
from heredity.plan import config_from_dict

pytestmark = pytest.mark.slow

TEACHERS = ("gemma-7b-it", "Mixtral-8x7B-Instruct-v0.1_concise", "Mixtral-8x7B-Instruct-v0.1_verbose")


def heredity(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "heredity.cli", *args], capture_output=True, text=True, timeout=900)


def with_usage(data_dir: Path, name: str, folder: Path) -> Path:
    """An AlpacaEval file as Parquet carrying token counts and latencies (word counts as a
    stand-in: the files record none), as an API teacher's log would."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = folder / f"{name}.parquet"
    if not path.is_file():
        rows = json.loads((data_dir / "alpaca_eval" / f"{name}.json").read_text())
        pq.write_table(pa.Table.from_pylist([
            {**r, "prompt_tokens": len(r["instruction"].split()), "completion_tokens": len(r["output"].split()),
             "latency_s": 0.01 * len(r["output"].split())} for r in rows]), path)
    return path


def pool_config(data_dir: Path, direction: str = "max", folder: Path | None = None) -> dict:
    """Three replayed AlpacaEval teachers (two with token counts, one of them priced; one
    without), a variant arm, tiny real training."""
    cfg = tiny_config()
    alpaca = data_dir / "alpaca_eval"
    cfg["name"] = f"pool-{direction}"
    cfg["prompts"] = {"source": str(alpaca / "gpt-3.5-turbo-0613.json"), "field": "instruction", "id_field": None,
                      "eval_every": 3, "limit_train": 6, "limit_eval": 3}
    cfg["teachers"] = [{"backend": "replay", "replay": {"path": str(
        alpaca / f"{t}.json" if folder is None or i == 2 else with_usage(data_dir, t, folder))}}
        for i, t in enumerate(TEACHERS)]
    cfg["teachers"][0].update(price_per_1k_prompt_tokens=0.5, price_per_1k_completion_tokens=1.5)
    cfg["k"] = 1
    cfg["score"] = {"metrics": ["words", "mtld"]}
    cfg["select"] = {"metric": "words", "direction": direction,
                     "variants": {"lexical": {"strategy": "best", "metric": "mtld", "direction": "max"}}}
    cfg["eval"]["max_new_tokens"] = 16
    return cfg


@pytest.fixture(scope="module")
def runs(data_dir: Path, tmp_path_factory) -> tuple[Path, Path]:
    """Two finished runs on the same held-out prompts: longest answer wins, then shortest (the
    second starts from a copy of the first, so only what the target changes is recomputed)."""
    root = tmp_path_factory.mktemp("html")
    first, second = root / "longest", root / "shortest"
    run(config_from_dict(pool_config(data_dir, "max", root)), first, Console(file=io.StringIO()))
    shutil.copytree(first, second)
    run(config_from_dict(pool_config(data_dir, "min", root)), second, Console(file=io.StringIO()))
    return first, second


def test_every_run_writes_a_self_contained_report(runs):
    first, _ = runs
    html = (first / "report.html").read_text()
    assert_self_contained(html)
    summary = json.loads((first / "summary.json").read_text())
    # plots first: students' forest and means, the selection, teacher shares, tokens, loss
    assert html.count('<img class="plot"') == 6
    for heading in ("The students on held-out prompts", "The selection", "Cost per teacher", "Training", "Examples"):
        assert heading in html
    assert "active − passive, words (held out)" in html and "<details>" in html
    # teacher credit and cost per teacher from the pool's own files; money for the priced teacher
    for teacher in TEACHERS:
        assert teacher in html
    assert "cost</th>" in html and "Tokens per teacher" in html
    assert f"{len_candidates(first, TEACHERS[2])} candidates carry no token counts" in html
    # provenance: the commit (or its absence), model identities, optional package versions
    assert "heredity commit" in html and "model: student" in html and "matplotlib" in html
    assert summary["provenance"]["models"]["student"].startswith("embedded:smollm2-135m-instruct")
    # the variant's own row in every comparison, side effects sentence or the explicit "none"
    assert "lexical − passive" in html
    assert "while targeting" in html or "No held-out metric of a steered arm" in html or "as targeted" in html
    assert "Winners by teacher:" in (first / "report.md").read_text()


def len_candidates(run_dir: Path, teacher: str) -> int:
    import pyarrow.parquet as pq

    return sum(r == teacher for r in pq.read_table(run_dir / "generate" / "candidates.parquet")["teacher"].to_pylist())


def test_report_command_rerenders_without_recomputing(runs, tmp_path):
    first, _ = runs
    copy = tmp_path / "copy"
    shutil.copytree(first, copy)
    for name in ("report.html", "report.md"):
        (copy / name).unlink()
    summary_before = (copy / "summary.json").read_bytes()
    manifests = {p: p.read_bytes() for p in copy.rglob("manifest.json")}
    # an older summary without the keys added since (undefined, provenance) still renders
    old = json.loads(summary_before)
    old.pop("undefined"), old.pop("provenance")
    (copy / "summary.json").write_text(json.dumps(old))
    result = heredity("report", str(copy))
    assert result.returncode == 0, result.stderr[-3000:]
    assert (copy / "report.html").is_file() and (copy / "report.md").is_file()
    assert json.loads((copy / "summary.json").read_text()) == old  # left as it is
    assert {p: p.read_bytes() for p in copy.rglob("manifest.json")} == manifests
    assert "report.html" in result.stderr and "active − passive words" in result.stderr
    # no summary: one line, no traceback
    bad = heredity("report", str(tmp_path / "nothing"))
    assert bad.returncode == 1 and "Traceback" not in bad.stderr and "no summary.json" in bad.stderr


def test_compare_pairs_runs_on_shared_prompts(runs, tmp_path):
    first, second = runs
    out = tmp_path / "cmp"
    result = heredity("compare", str(first), str(second), "--out", str(out))
    assert result.returncode == 0, result.stderr[-3000:]
    html, md = (out / "compare.html").read_text(), (out / "compare.md").read_text()
    assert_self_contained(html)
    assert "shortest − longest" in md and "| max words |" in md and "| min words |" in md
    # the base student is the same model on the same prompts in both runs: a zero difference
    import pyarrow.parquet as pq

    from heredity.reporting.compare import load_runs, paired_across

    paired = paired_across(load_runs([first, second]))["shortest − longest"]
    assert paired["base"]["words"]["diff"] == 0 and paired["base"]["words"]["n"] == 3
    def words(run_dir: Path) -> dict:
        return {(r["arm"], r["prompt_id"]): r["words"] for r in pq.read_table(run_dir / "per_prompt.parquet").to_pylist()}

    answers, first_answers = words(second), words(first)
    ids = sorted(i for a, i in answers if a == "active")
    direct = sum(answers["active", i] - first_answers["active", i] for i in ids) / len(ids)
    assert paired["active"]["words"]["diff"] == pytest.approx(direct)


def test_prices_change_no_stage_key(data_dir: Path):
    from heredity.stages.generate import teacher_fingerprint

    plain = config_from_dict(pool_config(data_dir))
    priced_cfg = pool_config(data_dir)
    for t in priced_cfg["teachers"]:
        t.update(price_per_1k_prompt_tokens=9.0, price_per_1k_completion_tokens=9.0)
    priced = config_from_dict(priced_cfg)
    assert [teacher_fingerprint(t, None) for t in plain.teachers] == [teacher_fingerprint(t, None) for t in priced.teachers]


# ------------------------------------------------------------------------------ the browser


EXTERNAL = re.compile(r"""(?:src|href|action)\s*=\s*["']?\s*(?:https?:)?//|url\(\s*["']?\s*(?:https?:)?//|@import""", re.I)
BROWSER_OWN_HOSTS = re.compile(r"^https?://([a-z0-9-]+\.)*(google\.com|googleapis\.com|gstatic\.com)([^a-z0-9.-]|$)")
PROBE = ("<script>addEventListener('load',()=>{const r=[...document.images].map(i=>[i.complete,i.naturalWidth,"
         "i.naturalHeight,i.getBoundingClientRect().width]);const d=document.createElement('pre');d.id='probe';"
         "d.textContent=JSON.stringify(r);document.body.appendChild(d);});</script>")


def assert_self_contained(html: str) -> None:
    assert not EXTERNAL.search(html), EXTERNAL.search(html).group(0)
    assert "<script src" not in html and "<link" not in html


def chromium() -> str:
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    if path is None:
        pytest.skip("chromium not installed (apt-get install -y chromium)")
    return path


def browse(page: Path, tmp: Path, *extra: str) -> subprocess.CompletedProcess:
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             f"--user-data-dir={tmp / 'profile'}", "--host-resolver-rules=MAP * ~NOTFOUND",
             "--disable-features=NetworkTimeServiceQuerying,OptimizationHints,MediaRouter,Translate",
             "--enable-logging=stderr", "--v=0", "--virtual-time-budget=5000"]
    return subprocess.run([chromium(), *flags, *extra, page.as_uri()], capture_output=True, text=True, timeout=180)


def check_in_browser(page: Path, tmp: Path, min_plots: int) -> None:
    tmp.mkdir(parents=True, exist_ok=True)
    shot = tmp / f"{page.stem}.png"
    browse(page, tmp, "--window-size=1280,4000", f"--screenshot={shot}")
    assert shot.is_file() and shot.stat().st_size > 20_000
    # the same page with a probe appended: every image loaded with a nonzero size
    probe = tmp / f"probe-{page.name}"
    probe.write_text(page.read_text().replace("</body>", PROBE + "</body>"))
    netlog = tmp / "net.json"
    result = browse(probe, tmp, "--dump-dom", f"--log-net-log={netlog}")
    found = re.search(r'<pre id="probe">(.*?)</pre>', result.stdout, re.S)
    assert found, result.stderr[-2000:]
    images = json.loads(found.group(1))
    assert len(images) >= min_plots
    assert all(done and w > 0 and h > 0 and shown > 0 for done, w, h, shown in images), images
    errors = [line for line in result.stderr.splitlines() if "CONSOLE" in line]
    assert not errors, errors
    # nothing but the browser's own background traffic appears in the network log
    urls = set(re.findall(r'https?://[^"\s\\]+', netlog.read_text()))
    page_requests = sorted(u for u in urls if not BROWSER_OWN_HOSTS.match(u) and "~notfound" not in u.lower())
    assert not page_requests, page_requests


def test_report_and_compare_render_in_a_headless_browser(runs, tmp_path):
    first, second = runs
    out = tmp_path / "cmp"
    assert heredity("compare", str(first), str(second), "--out", str(out)).returncode == 0
    check_in_browser(first / "report.html", tmp_path / "shots", min_plots=6)
    check_in_browser(out / "compare.html", tmp_path / "shots", min_plots=3)
