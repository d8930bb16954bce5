"""Pyramid reads vs a naive whole-image decode, and memory vs scene size.

    python benchmarks/bench_io.py [--cache DIR]

Generates (once, cached) a 30,000 px tiled GeoTIFF with overviews, a 10,000 px one and
a 100,000 px sparse one, then measures each workload in a fresh subprocess so that
peak RSS belongs to that workload alone:

(a) ours: pyramid + thumbnail + every coarsest-level tile + 24 native tiles, vs naive:
    read the whole image into memory and resize it (what the reference does, minus
    its float32 copy, which would be 4x larger still);
(b) our peak RSS on the 100k scene vs the 10k scene (same workload).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

N_NATIVE = 24


def ours(path: str) -> dict[str, float]:
    from lrsvqa.pyramid import DynamicImagePyramid

    start = time.perf_counter()
    with DynamicImagePyramid(path, tile_size=448) as pyramid:
        pyramid.thumbnail(448)
        for tile in pyramid.tiles(0):
            pyramid.read_tile(tile)
        finest = pyramid.finest
        rng = np.random.default_rng(0)
        for _ in range(N_NATIVE):
            tile = pyramid.tile(
                finest.index, int(rng.integers(finest.rows)), int(rng.integers(finest.cols))
            )
            pyramid.read_tile(tile)
    return {"seconds": time.perf_counter() - start}


def naive(path: str) -> dict[str, float]:
    import rasterio
    from PIL import Image

    start = time.perf_counter()
    with rasterio.open(path) as src:
        whole = src.read()  # (3, H, W) uint8: the whole image in memory
    image = Image.fromarray(np.moveaxis(whole, 0, -1))
    image.resize((448, 448), Image.Resampling.BILINEAR)
    return {"seconds": time.perf_counter() - start}


def measure(kind: str, path: Path) -> dict[str, float]:
    """Run one workload in a fresh interpreter; return its seconds and peak RSS (MB)."""
    here = str(Path(__file__).parent)
    code = (
        f"import json, sys; sys.path.insert(0, {here!r}); import bench_io; "
        "from lrsvqa.pipeline.cost import peak_rss_mb; "
        f"r = bench_io.{kind}({str(path)!r}); "
        "r['peak_rss_mb'] = peak_rss_mb(); "
        "print(json.dumps(r))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def baseline_rss() -> float:
    code = (
        "import lrsvqa.pyramid, rasterio; from lrsvqa.pipeline.cost import peak_rss_mb; "
        "print(peak_rss_mb())"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return float(out.stdout.strip())


def scenes(cache: Path) -> dict[str, Path]:
    from lrsvqa.testing import cached_ship_scene

    specs = {"30k": (30_000, False), "10k": (10_000, True), "100k": (100_000, True)}
    return {
        name: cached_ship_scene(cache, size, sparse=sparse)
        for name, (size, sparse) in specs.items()
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--cache", type=Path, default=Path.home() / ".cache" / "lrsvqa" / "bench")
    args = parser.parse_args()
    paths = scenes(args.cache)
    print(f"interpreter + imports alone: {baseline_rss():.0f} MB peak RSS")

    ours_30k = measure("ours", paths["30k"])
    naive_30k = measure("naive", paths["30k"])
    print("(a) 30,000 x 30,000 tiled GeoTIFF with overviews")
    print(
        f"    ours : {ours_30k['seconds']:7.2f} s  peak RSS {ours_30k['peak_rss_mb']:7.0f} MB "
        f"(thumbnail + level-0 tiles + {N_NATIVE} native tiles)"
    )
    print(
        f"    naive: {naive_30k['seconds']:7.2f} s  peak RSS {naive_30k['peak_rss_mb']:7.0f} MB "
        "(whole image read + resize)"
    )
    print(
        f"    speed-up {naive_30k['seconds'] / ours_30k['seconds']:.1f}x, "
        f"memory ratio {ours_30k['peak_rss_mb'] / naive_30k['peak_rss_mb']:.3f}"
    )

    ours_10k = measure("ours", paths["10k"])
    ours_100k = measure("ours", paths["100k"])
    print("(b) same workload, sparse scenes")
    print(
        f"    10,000 px : {ours_10k['seconds']:6.2f} s  peak RSS {ours_10k['peak_rss_mb']:6.0f} MB"
    )
    print(
        f"    100,000 px: {ours_100k['seconds']:6.2f} s  peak RSS {ours_100k['peak_rss_mb']:6.0f} MB"
    )
    print(
        f"    RSS ratio 100k / 10k = {ours_100k['peak_rss_mb'] / ours_10k['peak_rss_mb']:.2f} "
        "(goal <= 1.5, and <= 1024 MB)"
    )


if __name__ == "__main__":
    main()
