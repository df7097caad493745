"""A pip user's install: a non-editable ``pip install`` of the package, run away from any checkout,
with the benchmark data in a folder in hub schema (``hub_data_dir``, built from the committed excerpts).

The venv sees the test interpreter's site-packages (torch and the rest are not reinstalled: ``--no-deps``) but
its own copy of heredity comes first, and the command runs from a temporary folder with no
``../shared`` beside it and no ``HEREDITY_*`` variables, so only the installed files and the given
data folder can be used. ``slow``: the whole profile (``--suite all --limit 5``) takes minutes on CPU.
"""

from __future__ import annotations

import os
import shutil
import site
import subprocess
import sys
import time
from pathlib import Path

import pytest

from heredity.core.models import cache_dir

REPO = Path(__file__).resolve().parents[1]
MODEL = "embedded:smollm2-135m-instruct"


@pytest.fixture(scope="module")
def venv_bin(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("install")
    # what the build reads, copied so the build leaves nothing in the checkout (egg-info, build/)
    source = root / "source"
    shutil.copytree(REPO / "src", source / "src", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / name, source / name)
    venv = root / "venv"
    # without pip: the venv's own bundled setuptools would shadow the test interpreter's (which builds
    # wheels); pip, setuptools and every dependency then come from the interpreter running the tests,
    # nothing from an index
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    bin_dir = venv / "bin"
    # A venv made from inside a venv sees its *base* interpreter's packages (--system-site-packages),
    # not those of the venv the tests run in: name the test interpreter's site-packages in a .pth file
    # instead. A .pth line adds a folder but runs none of that folder's own .pth files, so the
    # checkout's editable install stays invisible and the venv's copy of heredity is the only one.
    own = subprocess.run([str(bin_dir / "python"), "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
                         capture_output=True, text=True, check=True).stdout.strip()
    outer = [p for p in site.getsitepackages() + [site.getusersitepackages()] if Path(p).is_dir()]
    Path(own, "test-interpreter.pth").write_text("".join(f"{p}\n" for p in outer), encoding="utf-8")
    done = subprocess.run([str(bin_dir / "python"), "-m", "pip", "install", "--quiet", "--no-deps", "--no-index",
                           "--no-build-isolation", str(source)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-3000:]
    return bin_dir


def run(bin_dir: Path, args: list[str], cwd: Path, timeout: float = 1200, **extra_env) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("HEREDITY_") and k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env.update(PATH=f"{bin_dir}{os.pathsep}{env.get('PATH', '')}", HEREDITY_CACHE=str(cache_dir()),
               OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", COLUMNS="200", **extra_env)
    return subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


def test_installed_package_is_its_own_copy_with_its_data(venv_bin, tmp_path):
    done = run(venv_bin, [str(venv_bin / "python"), "-c",
                          "import heredity, heredity.config as c; from importlib.resources import files; "
                          "print(heredity.__file__); c.bundled_config_data('quickstart'); "
                          "print(files('heredity.data.toxicity').joinpath('minilm_ridge.json').is_file())"], tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    location, data_ok = done.stdout.split()[-2:]
    assert location.startswith(str(venv_bin.parent)) and data_ok == "True"


def test_installed_cli_reads_a_hub_schema_folder(venv_bin, hub_data_dir, tmp_path):
    listed = run(venv_bin, ["heredity", "data", "--data-dir", str(hub_data_dir)], tmp_path)
    assert listed.returncode == 0, listed.stdout[-2000:] + listed.stderr[-2000:]
    assert "found (hub schema)" in " ".join(listed.stdout.split())
    done = run(venv_bin, ["heredity", "profile", MODEL, "--suite", "stereoset", "--limit", "3", "--threads", "1",
                          "--data-dir", str(hub_data_dir)], tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "stereoset: 3 items" in done.stderr


def test_installed_cli_without_data_says_what_is_missing(venv_bin, tmp_path):
    # an empty user cache and the hub unreachable: a one-line error naming every place looked
    done = run(venv_bin, ["heredity", "profile", MODEL, "--suite", "calibration", "--limit", "3"], tmp_path,
               XDG_CACHE_HOME=str(tmp_path / "cache"), HF_HUB_OFFLINE="1")
    assert done.returncode == 1
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    error = " ".join(lines[lines.index(next(line for line in lines if line.startswith("error:"))):])
    assert "Traceback" not in done.stderr
    assert str(tmp_path / "cache" / "heredity" / "data" / "hellaswag" / "hellaswag_val.jsonl") in error
    assert "Rowan/hellaswag" in error


# Every suite on the real model from an installed copy takes minutes (565 s measured contended on 2
# cores), too long for the CI suite: run it before a release with `python -m pytest -m release`.
@pytest.mark.release
def test_installed_profile_all_suites(venv_bin, hub_data_dir, tmp_path):
    started = time.perf_counter()
    done = run(venv_bin, ["heredity", "profile", MODEL, "--suite", "all", "--limit", "5", "--threads", "1",
                          "--data-dir", str(hub_data_dir), "--out", str(tmp_path / "profile")], tmp_path)
    seconds = time.perf_counter() - started
    assert done.returncode == 0, done.stderr[-3000:]
    print(f"heredity profile --suite all --limit 5: {seconds:.0f} s")
    from heredity.profile import SUITES

    for name in SUITES:
        assert (tmp_path / "profile" / f"{name}.parquet").is_file(), name
