"""Defects found by using the CLI as a new user: each fails fast with one line, exit 2."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from lrsvqa.cli import ask_cmd
from lrsvqa.cli.main import main
from lrsvqa.cli.options import FOCUS_PARAMS, focus_config, take
from lrsvqa.errors import RasterReadError
from lrsvqa.pipeline import Pipeline
from lrsvqa.testing import Ship, make_ship_scene
from lrsvqa.testing.stub import StubAdapter

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def scene(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("cli") / "scene.tif"
    make_ship_scene(path, 2048, ships=(Ship(1500, 400, 120, 40),))
    return path


def _stub_pipeline(**kw: Any) -> Pipeline:
    focus = take(kw, FOCUS_PARAMS)
    return Pipeline(StubAdapter(), focus=focus_config(**focus), progress=kw["progress"])


def _no_model(**kw: Any) -> Any:
    raise AssertionError("a model was loaded before the bad input was noticed")


def _error_line(err: str) -> str:
    lines = [line for line in err.splitlines() if "lrsvqa: error:" in line]
    assert len(lines) == 1, err
    return lines[0]


@pytest.mark.parametrize("option", ["--geojson", "--overlay"])
def test_unwritable_output_paths_fail_before_any_model_loads(
    scene: Path, tmp_path: Path, capsys, monkeypatch, option: str
) -> None:
    monkeypatch.setattr(ask_cmd, "build_pipeline", _no_model)
    target = tmp_path / "no" / "such" / "dir" / "x.out"
    rc = main(["ask", str(scene), "how many ships?", option, str(target)])
    err = capsys.readouterr().err
    assert rc == 2
    line = _error_line(err)
    assert option in line and "does not exist" in line and "Traceback" not in err
    rc = main(["ask", str(scene), "q", option, str(tmp_path)])  # a folder, not a file
    assert rc == 2 and "is a directory" in capsys.readouterr().err


@pytest.mark.parametrize(
    "command", [["sample", "{out}", "--size", "256"], ["convert", "{scene}", "{out}"]]
)
def test_commands_writing_a_raster_check_its_folder_first(
    scene: Path, tmp_path: Path, capsys, command: list[str]
) -> None:
    out = tmp_path / "no" / "such" / "x.tif"
    args = [a.format(out=out, scene=scene) for a in command]
    rc = main(args)
    err = capsys.readouterr().err
    assert rc == 2 and "Traceback" not in err
    line = _error_line(err)
    assert "does not exist" in line and str(out.parent) in line
    assert not out.parent.exists()


def test_epsg4326_evidence_of_a_scene_without_crs_fails_first(
    tmp_path: Path, capsys, monkeypatch
) -> None:
    path = tmp_path / "nocrs.tif"
    make_ship_scene(path, 600, ships=(Ship(300, 200, 60, 16),), crs=None)
    monkeypatch.setattr(ask_cmd, "build_pipeline", _no_model)
    args = ["ask", str(path), "q", "--geojson", str(tmp_path / "e.json")]
    rc = main([*args, "--geojson-crs", "EPSG:4326"])
    assert rc == 2 and "no CRS" in _error_line(capsys.readouterr().err)


def test_bench_out_that_is_a_file_fails_before_any_model_loads(tmp_path: Path, capsys) -> None:
    data = tmp_path / "q.jsonl"
    data.write_text("")
    (tmp_path / "images").mkdir()
    out = tmp_path / "run"
    out.write_text("not a folder")
    args = ["bench", "--data", str(data), "--image-root", str(tmp_path / "images")]
    rc = main([*args, "--model", "fake/x", "--out", str(out)])
    assert rc == 2 and "--out" in _error_line(capsys.readouterr().err)


def test_a_budget_below_the_thumbnail_is_refused(scene: Path, capsys, monkeypatch) -> None:
    monkeypatch.setattr(ask_cmd, "build_pipeline", _stub_pipeline)
    rc = main(["ask", str(scene), "how many ships?", "--budget", "10"])
    captured = capsys.readouterr()
    assert rc == 2 and captured.out == ""  # no answer computed over the budget
    line = _error_line(captured.err)
    assert "--budget 10" in line and "16" in line  # the stub's thumbnail: 4 x 4 tokens
    assert main(["ask", str(scene), "how many ships?", "--budget", "16"]) == 0
    assert "16 vision tokens to the LLM" in capsys.readouterr().out


def test_the_progress_bar_is_erased_before_the_error_line(scene: Path, capsys, monkeypatch) -> None:
    """A read that fails mid-level (a damaged block) while the tile bar is drawn."""
    from lrsvqa.pyramid import DynamicImagePyramid

    monkeypatch.setattr(ask_cmd, "build_pipeline", _stub_pipeline)
    original = DynamicImagePyramid.read_tiles
    calls = {"n": 0}

    def failing(self: Any, tiles: Any) -> Any:
        calls["n"] += 1
        if calls["n"] == 2:  # level 0's second batch of tiles
            raise RasterReadError(f"{scene}: cannot read pixels (damaged block)")
        return original(self, tiles)

    monkeypatch.setattr(DynamicImagePyramid, "read_tiles", failing)
    rc = main(["ask", str(scene), "how many ships?"])
    err = capsys.readouterr().err
    assert rc == 2
    assert "encoding level 0 tiles" in err  # the bar was drawn (9 tiles at level 0)
    line = _error_line(err)
    shown = line.rsplit("\r", 1)[-1]  # what a terminal shows after the last carriage return
    assert shown.startswith("lrsvqa: error:"), repr(line)
    assert not re.search(r"\d+/\d+", shown)


def test_readme_commands_work_as_root_and_with_sudo() -> None:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    assert "sudo apt-get" not in text
    for match in re.finditer(r"apt-get install", text):
        before = text[max(0, match.start() - 400) : match.start()]
        assert "as root" in before, text[match.start() - 200 : match.end()]
