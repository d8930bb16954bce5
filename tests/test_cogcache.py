"""The conversion cache: hits, misses, invalidation, atomicity after a kill, LRU eviction,
``bench prepare`` (resumable, one line per damaged scene) and the GDAL settings."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import lrsvqa
from lrsvqa.io import Window, cogcache, open_scene

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A private cache with a low threshold, so small PNGs are converted."""
    root = tmp_path / "cache"
    monkeypatch.setenv("LRSVQA_CACHE", str(root))
    monkeypatch.setenv("LRSVQA_COG_MIN_SIDE", "300")
    monkeypatch.delenv("LRSVQA_COG_CACHE", raising=False)
    monkeypatch.delenv("LRSVQA_COG_CACHE_GB", raising=False)
    return root / "cog"


def _png(path: Path, width: int = 640, height: int = 400, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    ys, xs = np.mgrid[0:height, 0:width]
    pixels = np.stack([(xs * 3 + ys * (b + 1) + seed * 17) % 251 for b in range(3)], axis=-1)
    pixels = pixels + rng.integers(0, 3, size=pixels.shape)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels.astype(np.uint8)).save(path)
    return path


def _read(path: Path | str, **kwargs) -> tuple[np.ndarray, np.ndarray, str, str]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with open_scene(path, **kwargs) as scene:
            native = scene.read(Window(37, 21, 300, 200))
            coarse = scene.read(Window(0, 0, scene.width, scene.height), (100, 160))
            return native, coarse, scene.path, scene.read_path


def test_miss_then_hit_reads_the_same_pixels(cache: Path, tmp_path: Path) -> None:
    png = _png(tmp_path / "scene.png")
    first = cogcache.ensure_cog(png)
    assert first.status == "converted" and first.cog is not None and first.cog.parent == cache
    assert cogcache.ensure_cog(png).status == "cached"
    native, coarse, shown, read_from = _read(png, cog_cache=True)
    assert shown == str(png) and read_from == str(first.cog)  # the user's name is kept
    ref_native, ref_coarse, _, ref_from = _read(png)  # memory mode, no cache
    assert ref_from == str(png)
    np.testing.assert_array_equal(native, ref_native)  # lossless, same pixels
    assert np.abs(coarse.astype(int) - ref_coarse).mean() < 2  # overview vs box filter
    with open_scene(png, cog_cache=True) as scene:
        assert scene.read_mode == "windowed" and scene.info().cached_cog == str(first.cog)


def test_changed_file_is_a_miss_and_replaces_the_old_entry(cache: Path, tmp_path: Path) -> None:
    png = _png(tmp_path / "scene.png")
    old = cogcache.ensure_cog(png).cog
    stat = png.stat()
    os.utime(png, ns=(stat.st_atime_ns, stat.st_mtime_ns + 5_000_000_000))  # same bytes
    touched = cogcache.ensure_cog(png)
    assert touched.status == "converted" and touched.cog != old  # a new mtime is a miss
    assert old is not None and not old.exists()  # and the old version is dropped
    _png(png, seed=1)  # new content
    again = cogcache.ensure_cog(png)
    assert again.status == "converted" and again.cog != touched.cog
    native, _, _, _ = _read(png, cog_cache=True)
    np.testing.assert_array_equal(native, _read(png)[0])  # the new pixels, not the old


def test_off_small_and_windowed_scenes_are_read_as_they_are(
    cache: Path, tmp_path: Path, geotiff, monkeypatch: pytest.MonkeyPatch
) -> None:
    small = _png(tmp_path / "small.png", 200, 150)
    assert cogcache.ensure_cog(small).status == "not-needed"
    cog_like = geotiff(700, 500, overviews=True)
    assert cogcache.ensure_cog(cog_like).status == "not-needed"
    big = _png(tmp_path / "big.png")
    monkeypatch.setenv("LRSVQA_COG_CACHE", "off")
    assert cogcache.ensure_cog(big).status == "off"
    assert _read(big, cog_cache=True)[3] == str(big)
    assert not cache.exists() or not cogcache.entries()


def test_bad_settings_are_config_errors(cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LRSVQA_COG_CACHE_GB", "lots")
    with pytest.raises(lrsvqa.ConfigError, match="LRSVQA_COG_CACHE_GB"):
        cogcache.cap_bytes()
    monkeypatch.setenv("LRSVQA_COG_MIN_SIDE", "-3")
    with pytest.raises(lrsvqa.ConfigError, match="LRSVQA_COG_MIN_SIDE"):
        cogcache.min_side()


_KILLED_CONVERSION = """
import sys, time
import lrsvqa.io.convert as convert
real = convert._copy_strip
def slow(src, dst, window):
    real(src, dst, window)
    time.sleep(60)  # killed here, with a .part file half written
convert._copy_strip = slow
from lrsvqa.io.cogcache import ensure_cog
ensure_cog(sys.argv[1])
"""


def test_a_killed_conversion_is_never_served_and_is_redone(cache: Path, tmp_path: Path) -> None:
    png = _png(tmp_path / "scene.png", 900, 700)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen([sys.executable, "-c", _KILLED_CONVERSION, str(png)], env=env)
    try:
        deadline = time.monotonic() + 120
        while not list(cache.glob("*.part*")):
            assert proc.poll() is None, "the conversion ended before it could be killed"
            assert time.monotonic() < deadline, "no .part file appeared"
            time.sleep(0.05)
        time.sleep(0.2)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert cogcache.entries() == []  # nothing complete, nothing served
    parts = list(cache.glob("*.part*"))
    assert parts
    result = cogcache.ensure_cog(png)
    assert result.status == "converted"  # redone, not taken from the half-written file
    assert not any(p.exists() for p in parts)  # the dead writer's leftovers are removed
    np.testing.assert_array_equal(_read(png, cog_cache=True)[0], _read(png)[0])


def test_eviction_by_cap_keeps_the_recently_used(
    cache: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pngs = [_png(tmp_path / f"s{i}.png", seed=i) for i in range(3)]
    cogs = []
    for i, png in enumerate(pngs):
        cog = cogcache.ensure_cog(png).cog
        assert cog is not None
        os.utime(cog, (1_000_000 + i, 1_000_000 + i))  # a clear LRU order: s0 oldest
        cogs.append(cog)
    size = max(c.stat().st_size for c in cogs)
    assert cogcache.ensure_cog(pngs[0]).status == "cached"  # a hit makes s0 the newest
    removed = cogcache.evict(cap=2 * size + size // 2)
    assert removed == [cogs[1]]
    assert cogs[0].exists() and cogs[2].exists() and not cogs[1].exists()
    # Through the environment: a cap of ~one entry leaves only the entry just made.
    monkeypatch.setenv("LRSVQA_COG_CACHE_GB", str(1.2 * size / 2**30))
    fresh = cogcache.ensure_cog(_png(tmp_path / "s9.png", seed=9)).cog
    assert cogcache.entries() == [fresh]


def _benchmark(tmp_path: Path, damaged: bool) -> tuple[Path, Path]:
    root = tmp_path / "images"
    rows = []
    for i, name in enumerate(["FAIR/a.png", "FAIR/b.png", "STAR/c.png", "GLH/d.tif"]):
        if name.endswith(".png"):
            _png(root / name, 640 + 16 * i, 400, seed=i)
        else:
            from lrsvqa.testing import write_geotiff

            (root / name).parent.mkdir(parents=True, exist_ok=True)
            write_geotiff(root / name, 700, 500, overviews=True)
        rows.append(
            {
                "question_id": f"FAIR_{i}",
                "image": name,
                "category": "count",
                "text": "How many?",
                "ground_truth": "1",
                "image_size": [640, 400],
            }
        )
    if damaged:
        data = (root / "FAIR/b.png").read_bytes()
        (root / "FAIR/b.png").write_bytes(data[: len(data) // 2])
    data_file = tmp_path / "lrsvqa.jsonl"
    data_file.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return data_file, root


def test_bench_prepare_resumes_and_logs_a_damaged_png(cache: Path, tmp_path: Path) -> None:
    from lrsvqa.bench.prepare import prepare_benchmark

    data, root = _benchmark(tmp_path, damaged=True)
    first = prepare_benchmark(data, root, jobs=2, progress=False)
    assert first.counts["converted"] == 2 and first.counts["not-needed"] == 1
    assert first.counts["failed"] == 1
    lines = Path(first.errors_file).read_text().splitlines()
    assert len(lines) == 1
    error = json.loads(lines[0])
    assert error["image"].endswith("b.png") and error["error"] == "RasterReadError"
    again = prepare_benchmark(data, root, jobs=1, progress=False)  # a rerun resumes
    assert again.counts["converted"] == 0 and again.counts["cached"] == 2
    assert again.counts["failed"] == 1


def _running(pid: int) -> bool:
    """Whether ``pid`` is a live process (not gone, not a zombie awaiting its reaper)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return False
    return state != "Z"


def test_a_killed_bench_prepare_leaves_no_workers_behind(cache: Path, tmp_path: Path) -> None:
    """kill -9 of ``bench prepare``: its conversion workers die with it (they used to
    block forever on the dead parent's queue), and a rerun converts what they left."""
    root = tmp_path / "images"
    rows = []
    for i in range(3):
        _png(root / f"s{i}.png", 2400, 2400, seed=i)
        rows.append(
            {"question_id": f"FAIR_{i}", "image": f"s{i}.png", "category": "count",
             "text": "How many?", "ground_truth": "1", "image_size": [2400, 2400]}
        )  # fmt: skip
    data = tmp_path / "q.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    args = [sys.executable, "-m", "lrsvqa.cli.main", "bench", "prepare", "--data", str(data)]
    args += ["--image-root", str(root), "--jobs", "2"]
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    workers: set[int] = set()
    try:
        deadline = time.monotonic() + 120
        while not workers:
            assert proc.poll() is None, "bench prepare ended before it could be killed"
            assert time.monotonic() < deadline, "no worker started a conversion"
            parts = (cogcache._PART.search(p.name) for p in cache.glob("*.part"))
            workers = {int(m["pid"]) for m in parts if m}  # the writer's pid in its name
            time.sleep(0.02)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    deadline = time.monotonic() + 10
    alive = workers
    while alive and time.monotonic() < deadline:
        alive = {pid for pid in alive if _running(pid)}
        time.sleep(0.1)
    for pid in alive:
        os.kill(pid, signal.SIGKILL)
    assert not alive, f"worker(s) {sorted(alive)} outlived the killed bench prepare"
    from lrsvqa.bench.prepare import prepare_benchmark

    again = prepare_benchmark(data, root, jobs=1, progress=False)
    assert again.counts["converted"] + again.counts["cached"] == 3
    assert not list(cache.glob("*.part*"))


def test_bench_prepare_cli(cache: Path, tmp_path: Path) -> None:
    from lrsvqa.cli.main import main

    data, root = _benchmark(tmp_path, damaged=False)
    errors = tmp_path / "errors.jsonl"
    args = ["bench", "prepare", "--data", str(data), "--image-root", str(root)]
    assert main([*args, "--jobs", "1", "--errors", str(errors)]) == 0
    assert errors.read_text() == ""
    assert len(cogcache.entries()) == 3
    assert main([*args, "--jobs", "0"]) == 2  # bad input: one line, exit 2


def test_gdal_settings_respect_the_users_environment(tmp_path: Path) -> None:
    code = (
        "from lrsvqa.io.gdal_config import gdal_settings; import json; "
        "print(json.dumps(gdal_settings()))"
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT), "GDAL_CACHEMAX": "64"}
    env.pop("GDAL_NUM_THREADS", None)
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
    )
    settings = json.loads(out.stdout)
    assert settings["GDAL_CACHEMAX"] == "64 (environment)"
    assert settings["GDAL_NUM_THREADS"].endswith("(lrsvqa default)")
    assert settings["GDAL_HTTP_MULTIRANGE"] == "YES (lrsvqa default)"
    env.pop("GDAL_CACHEMAX")  # the default, as README states it: a small block cache
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
    )
    assert json.loads(out.stdout)["GDAL_CACHEMAX"] == "32 (lrsvqa default)"


@pytest.mark.parametrize("read_threads", [1, 2, 32])
def test_gdal_decoding_threads_share_the_cpus_with_read_threads(read_threads: int) -> None:
    """Read threads x GDAL's decoding threads stay within the CPUs (both at full width
    oversubscribe them, and 2 read threads were then slower than with 1 GDAL thread each)."""
    code = (
        "import json; from lrsvqa.io.gdal_config import gdal_settings; "
        "from rasterio.env import get_gdal_config; s = gdal_settings(); "
        "print(json.dumps([s['GDAL_NUM_THREADS'], get_gdal_config('GDAL_NUM_THREADS')]))"
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT), "LRSVQA_READ_THREADS": str(read_threads)}
    env.pop("GDAL_NUM_THREADS", None)
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
    )
    reported, in_force = json.loads(out.stdout)
    expected = str(max(1, (os.cpu_count() or 1) // read_threads))
    assert reported == f"{expected} (lrsvqa default)"
    assert str(in_force) == expected


def test_ask_on_a_png_converts_it_without_warnings_and_says_so(cache: Path, tmp_path: Path) -> None:
    """A user's first ask on a big PNG: no raw GDAL/rasterio warning on stderr, and the
    conversion (not part of the cost report) is named once, in --json among the notes."""
    png = _png(tmp_path / "scene.png")
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONWARNINGS": "default"}
    args = [sys.executable, "-m", "lrsvqa.cli.main", "ask", str(png), "How many ships?"]
    args += ["--model", "tiny/qwen2_vl", "--max-new-tokens", "2", "--device", "cpu"]
    first = subprocess.run([*args, "--json"], capture_output=True, text=True, env=env, timeout=300)
    assert first.returncode == 0, first.stderr
    assert "Warning" not in first.stderr, first.stderr
    notes = json.loads(first.stdout)["notes"]
    assert [n for n in notes if "converted once into the COG cache" in n] != []
    second = subprocess.run(args, capture_output=True, text=True, env=env, timeout=300)
    assert second.returncode == 0, second.stderr
    assert "Warning" not in second.stderr and "converted once" not in second.stderr


def test_a_part_whose_writer_is_an_unreaped_zombie_is_stale(tmp_path: Path) -> None:
    """A killed writer that no one has reaped yet (PID 1 of some containers never reaps
    orphans) still answers ``kill(pid, 0)``: its ``.part`` is a leftover all the same."""
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    deadline = time.monotonic() + 10
    while _running(child.pid) and time.monotonic() < deadline:  # exited, not waited for
        time.sleep(0.05)
    try:
        part = tmp_path / f"x.tif.{cogcache.part_suffix()[1:]}"
        part = part.with_name(part.name.replace(f"-{os.getpid()}-", f"-{child.pid}-"))
        part.write_bytes(b"")
        assert cogcache._stale_part(part, time.time())
        mine = tmp_path / f"y.tif{cogcache.part_suffix()}"
        mine.write_bytes(b"")
        assert not cogcache._stale_part(mine, time.time())  # a live writer's part stays
    finally:
        child.wait()
