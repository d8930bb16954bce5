"""The I/O commands as a user runs them: inspect, convert, sample, --version, bad input."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
import rasterio

import lrsvqa
from lrsvqa.cli.main import main
from tests.test_io import _png_header, bad_inputs


def run(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = main(args)
    out, err = capsys.readouterr()
    return code, out, err


def test_version_and_help(capsys) -> None:
    code, out, _ = run(["--version"], capsys)
    assert code == 0 and lrsvqa.__version__ in out
    code, out, _ = run(["--help"], capsys)
    assert code == 0 and "inspect" in out and "convert" in out


def test_inspect_rgb_byte(shared_data: Path, capsys) -> None:
    code, out, _ = run(["inspect", str(shared_data / "RGB.byte.tif")], capsys)
    assert code == 0
    assert "791 x 718" in out and "3 band(s)" in out and "EPSG:32618" in out
    code, out, _ = run(["inspect", str(shared_data / "RGB.byte.tif"), "--json"], capsys)
    data = json.loads(out)
    assert data["scene"]["width"] == 791 and data["scene"]["height"] == 718
    assert data["scene"]["epsg"] == 32618 and data["scene"]["count"] == 3
    assert data["pyramid"]["levels"][0]["tokens_per_tile"] == 256


def test_inspect_cogeo_lists_overviews(shared_data: Path, capsys) -> None:
    code, out, _ = run(["inspect", str(shared_data / "cogeo.tif")], capsys)
    assert code == 0 and "2, 4, 8, 16, 32, 64" in out


def test_inspect_is_metadata_only_on_a_100k_scene(tmp_path: Path, capsys) -> None:
    # A sparse 100,000 px scene; inspect must not touch its pixels.
    path = tmp_path / "big.tif"
    profile = dict(
        driver="GTiff",
        width=100_000,
        height=100_000,
        count=3,
        dtype="uint8",
        tiled=True,
        blockxsize=512,
        blockysize=512,
        SPARSE_OK="TRUE",
        BIGTIFF="YES",
        crs="EPSG:32650",
        transform=rasterio.transform.from_origin(0, 0, 0.5, 0.5),
    )
    with rasterio.open(path, "w", **profile):
        pass
    # Building overviews of 1e10 px takes long; an external .ovr at 1/128 is instant.
    ovr = dict(
        profile, width=782, height=782, transform=rasterio.transform.from_origin(0, 0, 64, 64)
    )
    with rasterio.open(f"{path}.ovr", "w", **ovr):
        pass
    start = time.perf_counter()
    code, out, err = run(["inspect", str(path), "--json"], capsys)
    assert time.perf_counter() - start < 2
    assert code == 0, err
    data = json.loads(out)
    assert data["scene"]["width"] == 100_000
    assert len(data["pyramid"]["levels"]) == 8
    assert data["scene"]["overviews"] == [128]


def test_sample_then_inspect_then_convert(tmp_path: Path, capsys) -> None:
    scene = tmp_path / "sample.tif"
    code, out, _ = run(["sample", str(scene), "--size", "1500", "--ships", "3"], capsys)
    assert code == 0 and scene.exists() and Path(f"{scene}.ships.json").exists()
    code, out, _ = run(["inspect", str(scene), "--check"], capsys)
    assert code == 0 and "EPSG:32650" in out and "level 1" in out
    cog = tmp_path / "out.tif"
    code, out, err = run(["convert", str(scene), str(cog)], capsys)
    assert code == 0, err
    with rasterio.open(cog) as src, rasterio.open(scene) as orig:
        assert src.crs == orig.crs and src.transform == orig.transform
        assert src.overviews(1) == [2, 4] and src.block_shapes[0] == (512, 512)
        assert (src.read() == orig.read()).all()
    code, _, err = run(["convert", str(scene), str(cog)], capsys)  # never overwrites silently
    assert code == 2 and "--overwrite" in err


def test_convert_png_keeps_pixels(tmp_path: Path, capsys) -> None:
    import numpy as np
    from PIL import Image

    png = tmp_path / "in.png"
    pixels = np.random.default_rng(0).integers(0, 255, (700, 900, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(png)
    code, _, err = run(["convert", str(png), str(tmp_path / "out.tif")], capsys)
    assert code == 0, err
    with rasterio.open(tmp_path / "out.tif") as src:
        np.testing.assert_array_equal(np.moveaxis(src.read(), 0, -1), pixels)


def _assert_one_line_error(code: int, err: str, name: str) -> None:
    assert code == 2
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    assert lines[0].startswith("lrsvqa: error:") and name in lines[0]
    assert "Traceback" not in err


def test_bad_input_gives_one_line_and_exit_2(
    tmp_path: Path, shared_data: Path, geotiff, capsys
) -> None:
    cases = {name: path for name, (path, _) in bad_inputs(tmp_path, shared_data, geotiff).items()}
    cases["corrupt"] = shared_data / "corrupt.tif"
    cases["huge"] = _png_header(tmp_path / "huge.png", 200_000, 200_000)
    for name, path in cases.items():
        start = time.perf_counter()
        code, _, err = run(["inspect", "--check", str(path)], capsys)
        assert time.perf_counter() - start < 10, name
        _assert_one_line_error(code, err, path.name)


def test_png_over_limit_from_cli(tmp_path: Path, monkeypatch, capsys) -> None:
    from PIL import Image

    path = tmp_path / "big.png"
    Image.new("RGB", (200, 200)).save(path)
    monkeypatch.setenv("LRSVQA_MAX_PIXELS", "10000")
    code, _, err = run(["inspect", str(path)], capsys)
    _assert_one_line_error(code, err, "big.png")
    assert "LRSVQA_MAX_PIXELS" in err


def test_debug_shows_the_traceback(tmp_path: Path) -> None:
    missing = str(tmp_path / "missing.tif")
    plain = subprocess.run(
        [sys.executable, "-m", "lrsvqa.cli.main", "inspect", missing],
        capture_output=True,
        text=True,
    )
    assert plain.returncode == 2 and "Traceback" not in plain.stderr
    debug = subprocess.run(
        [sys.executable, "-m", "lrsvqa.cli.main", "--debug", "inspect", missing],
        capture_output=True,
        text=True,
    )
    assert debug.returncode != 0 and "Traceback" in debug.stderr


def test_cli_start_is_light() -> None:
    code = "import sys, lrsvqa.cli.main; sys.exit('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0
    # nor does the Python API before a model is loaded (torch: ~180 MB, ~2 s)
    code = "import sys, lrsvqa.pipeline, lrsvqa.focus; sys.exit('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0
