from pathlib import Path

import pytest

from heredity.core.rundir import Stage, atomic_path, read_json, write_json


def test_failed_write_leaves_old_file_and_no_temp(tmp_path: Path):
    target = tmp_path / "x.json"
    write_json(target, {"v": 1})
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_text("partial")
            raise RuntimeError("killed")
    assert read_json(target) == {"v": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["x.json"]


def test_stage_reused_only_with_same_key(tmp_path: Path):
    stage = Stage(tmp_path, "select", {"metric": "length"})
    assert not stage.reuse()
    stage.start()
    stage.finish({"out": "x"})
    assert Stage(tmp_path, "select", {"metric": "length"}).reuse()
    changed = Stage(tmp_path, "select", {"metric": "mtld"})
    assert not changed.reuse()
    changed.start()  # an outdated manifest is dropped before its files are overwritten
    assert not (tmp_path / "select" / "manifest.json").exists()
