"""The image stage on LRS-VQA's real size and format distribution: three ways to read.

    python benchmarks/bench_lrsvqa_io.py [--scale 1.0] [--pngs 5] [--tifs 2] [--work DIR]

Stand-ins follow ``LRS_VQA_merged.jsonl``'s ``image_size`` per image and format: PNGs at
the quantiles of the PNG sizes (median 5,744 px) plus the largest (27,328 px), GeoTIFFs
(striped, no overviews, like the release) at the quantiles of theirs (up to 7,000 px).
``--scale`` shrinks every side (and the cache's 8,000 px threshold) for a quick run.
Each way runs in a fresh interpreter over all stand-ins, so its peak RSS is its own:

- whole : the reference's way: decode the whole image (rasterio), then thumbnail, level 0
          and tiles from that array (without its float32 copy, which is 4x larger still);
- memory: lrsvqa with ``LRSVQA_COG_CACHE=off`` (PNG decoded once into uint8);
- cache 1st / 2nd: lrsvqa with an empty conversion cache, then again with it filled.

The image stage per image: open, square thumbnail, every level-0 tile, 12 scattered
finest-level tiles. Then (b): 24 scattered native tiles of the largest cached COG read
with 1 and with 2 threads.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
DATA = HERE.parent.parent / "shared" / "data" / "LRS_VQA_merged.jsonl"
N_FINEST = 12


def distribution(path: Path) -> dict[str, list[int]]:
    """Long side of each distinct image, by format (png / tif)."""
    sides: dict[str, dict[str, int]] = {"png": {}, "tif": {}}
    with path.open() as handle:
        for line in handle:
            row = json.loads(line)
            kind = "png" if row["image"].lower().endswith(".png") else "tif"
            sides[kind][row["image"]] = max(row["image_size"])
    return {k: sorted(v.values()) for k, v in sides.items()}


def sample(sides: list[int], n: int, with_max: bool) -> list[int]:
    """``n`` sizes at evenly spaced quantiles (the median among them), plus the maximum."""
    if n <= 0:
        return []
    qs = np.linspace(0.1, 0.9, n) if n > 1 else np.array([0.5])
    picks = [int(np.quantile(sides, q)) for q in qs]
    if with_max:
        picks[-1] = sides[-1]
    return list(dict.fromkeys(picks))


def texture(y0: int, h: int, w: int) -> np.ndarray:
    rng = np.random.default_rng(y0)
    yy = np.arange(y0, y0 + h)[:, None]
    xx = np.arange(w)[None, :]
    base = (np.sin(xx / 97.0) * np.cos(yy / 131.0) * 60 + 100).astype(np.int16)
    out = np.empty((3, h, w), np.uint8)
    for b in range(3):
        noise = rng.integers(-6, 7, size=(h, w), dtype=np.int16)
        out[b] = np.clip(base + 30 * b + noise, 0, 255).astype(np.uint8)
    return out


def make_standin(path: Path, side: int, kind: str) -> Path:
    """A side x (3/4 side) RGB image written in strips (PNG via a temporary GeoTIFF)."""
    import warnings

    import rasterio
    import rasterio.shutil
    from rasterio.windows import Window

    if path.exists():
        return path
    w, h = side, max(1, side * 3 // 4)
    tmp = path.with_suffix(".src.tif")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with rasterio.open(
            tmp, "w", driver="GTiff", width=w, height=h, count=3, dtype="uint8"
        ) as dst:
            for y0 in range(0, h, 256):
                rows = min(256, h - y0)
                dst.write(texture(y0, rows, w), window=Window(0, y0, w, rows))
        if kind == "png":
            rasterio.shutil.copy(tmp, str(path) + ".part", driver="PNG", ZLEVEL=1)
            tmp.unlink()
            os.replace(str(path) + ".part", path)
        else:
            os.replace(tmp, path)
    return path


def stage_lrsvqa(paths: list[str], cog_cache: bool) -> None:
    from lrsvqa.io import open_scene
    from lrsvqa.pyramid import DynamicImagePyramid

    for path in paths:
        with (
            open_scene(path, cog_cache=cog_cache) as scene,
            DynamicImagePyramid(scene, tile_size=448) as pyramid,
        ):
            pyramid.thumbnail(448, square=True)
            pyramid.read_tiles(pyramid.tiles(0))
            finest = pyramid.finest
            rng = np.random.default_rng(0)
            tiles = [
                pyramid.tile(
                    finest.index, int(rng.integers(finest.rows)), int(rng.integers(finest.cols))
                )
                for _ in range(N_FINEST)
            ]
            pyramid.read_tiles(tiles)


def stage_whole(paths: list[str]) -> None:
    import rasterio
    from PIL import Image

    from lrsvqa.pyramid import PyramidConfig, plan_levels

    for path in paths:
        with rasterio.open(path) as src:
            whole = np.ascontiguousarray(np.moveaxis(src.read(), 0, -1))  # (H, W, 3)
        image = Image.fromarray(whole)
        h, w = whole.shape[:2]
        scale = 448 / max(w, h)
        image.resize((max(1, round(w * scale)), max(1, round(h * scale))), Image.Resampling.BOX)
        levels = plan_levels(w, h, PyramidConfig(tile_size=448))
        side = 448 * levels[0].factor
        for r in range(levels[0].rows):
            for c in range(levels[0].cols):
                image.crop((c * side, r * side, (c + 1) * side, (r + 1) * side)).resize(
                    (448, 448), Image.Resampling.BOX
                )
        rng = np.random.default_rng(0)
        for _ in range(N_FINEST):
            x, y = int(rng.integers(max(1, w - 448))), int(rng.integers(max(1, h - 448)))
            np.ascontiguousarray(whole[y : y + 448, x : x + 448])
        del image, whole


def threads(path: str, n: int) -> float:
    from lrsvqa.pyramid import DynamicImagePyramid

    best = float("inf")
    for rep in range(3):
        with DynamicImagePyramid(path, tile_size=448, read_threads=n) as pyramid:
            finest = pyramid.finest
            rng = np.random.default_rng(100 + rep)
            tiles = [
                pyramid.tile(
                    finest.index, int(rng.integers(finest.rows)), int(rng.integers(finest.cols))
                )
                for _ in range(24)
            ]
            start = time.perf_counter()
            pyramid.read_tiles(tiles)
            best = min(best, time.perf_counter() - start)
    return best


def measure(call: str, env: dict[str, str]) -> dict[str, float]:
    """Run ``call`` in a fresh interpreter: wall and CPU seconds, peak RSS (MB)."""
    code = (
        "import json, os, sys, time, warnings; warnings.simplefilter('ignore'); "
        f"sys.path.insert(0, {str(HERE)!r}); import bench_lrsvqa_io as b; "
        "from lrsvqa.pipeline.cost import peak_rss_mb; "
        "t, c = time.perf_counter(), time.process_time(); "
        f"r = {call}; "
        "print(json.dumps({'seconds': time.perf_counter() - t, 'cpu': time.process_time() - c, "
        "'peak_rss_mb': peak_rss_mb(), 'result': r}))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, **env},
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--scale", type=float, default=1.0, help="Shrink every side by this.")
    parser.add_argument("--pngs", type=int, default=5, help="PNG stand-ins (incl. the largest).")
    parser.add_argument("--tifs", type=int, default=2, help="GeoTIFF stand-ins.")
    parser.add_argument(
        "--work", type=Path, default=Path.home() / ".cache" / "lrsvqa" / "bench-lrsvqa-io"
    )
    args = parser.parse_args()
    sides = distribution(DATA)
    print(
        f"LRS-VQA: {len(sides['png'])} PNG (median {int(np.median(sides['png']))} px, "
        f"max {sides['png'][-1]} px), {len(sides['tif'])} GeoTIFF (max {sides['tif'][-1]} px)"
    )
    plan = [("png", s) for s in sample(sides["png"], args.pngs, True)]
    plan += [("tif", s) for s in sample(sides["tif"], args.tifs, True)]
    args.work.mkdir(parents=True, exist_ok=True)
    paths = []
    for kind, side in plan:
        scaled = max(64, round(side * args.scale))
        paths.append(str(make_standin(args.work / f"{kind}{scaled}.{kind}", scaled, kind)))
    pixels = sum(max(64, round(s * args.scale)) ** 2 * 3 // 4 for _, s in plan)
    print(f"stand-ins (scale {args.scale}): " + ", ".join(Path(p).name for p in paths))
    print(
        f"  {pixels * 3 / 2**20:.0f} MB of RGB pixels in all; largest {Path(paths[0 if len(plan) == 1 else args.pngs - 1]).name}"
    )
    cache = args.work / "cache"
    subprocess.run(["rm", "-rf", str(cache)], check=True)
    env = {
        "LRSVQA_CACHE": str(cache),
        "LRSVQA_COG_MIN_SIDE": str(max(64, round(8000 * args.scale))),
    }
    runs = {
        "whole": measure(f"b.stage_whole({paths!r})", env),
        "memory": measure(f"b.stage_lrsvqa({paths!r}, False)", {**env, "LRSVQA_COG_CACHE": "off"}),
        "cache 1st": measure(f"b.stage_lrsvqa({paths!r}, True)", env),
        "cache 2nd": measure(f"b.stage_lrsvqa({paths!r}, True)", env),
    }
    print("(a) image stage over all stand-ins (open, thumbnail, level 0, 12 finest tiles each)")
    for name, r in runs.items():
        print(
            f"    {name:9s}: {r['seconds']:7.1f} s wall {r['cpu']:7.1f} s CPU  "
            f"peak RSS {r['peak_rss_mb']:6.0f} MB"
        )
    w, m, c1, c2 = (runs[k] for k in ("whole", "memory", "cache 1st", "cache 2nd"))
    print(
        f"    peak RSS memory/whole {m['peak_rss_mb'] / w['peak_rss_mb']:.2f}, "
        f"cache 2nd/whole {c2['peak_rss_mb'] / w['peak_rss_mb']:.2f}; "
        f"time cache 1st/2nd {c1['seconds'] / c2['seconds']:.1f}x wall "
        f"({c1['cpu'] / c2['cpu']:.1f}x CPU), memory/cache 2nd {m['seconds'] / c2['seconds']:.1f}x wall"
    )
    from lrsvqa.io import cogcache

    os.environ.update(env)
    cogs = sorted(cogcache.entries(), key=lambda p: p.stat().st_size)
    if cogs:
        largest = str(cogs[-1])
        one = measure(f"b.threads({largest!r}, 1)", env)["result"]
        two = measure(f"b.threads({largest!r}, 2)", env)["result"]
        print(f"(b) 24 scattered native tiles of {Path(largest).name} (DEFLATE COG), best of 3")
        print(f"    1 thread {one:.3f} s, 2 threads {two:.3f} s: {one / two:.2f}x")
    print(f"machine: {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
