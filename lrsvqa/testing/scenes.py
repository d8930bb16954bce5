"""Synthetic scenes with known objects: bright "ships" on dark water.

Used by tests, demos and benchmarks: the ground truth (where each ship is) is known,
so focus and evidence can be checked against it.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from lrsvqa.testing.geotiff import write_geotiff

log = logging.getLogger(__name__)

WATER = (18, 42, 74)
LAND = (96, 88, 60)
SHIP = (236, 236, 228)


@dataclass(frozen=True)
class Ship:
    """A ship as an axis-aligned native pixel box."""

    x: int  # left column
    y: int  # top row
    width: int
    height: int

    @property
    def box(self) -> tuple[int, int, int, int]:
        """(x1, y1, x2, y2), LRS-VQA's ``hbox`` convention."""
        return (self.x, self.y, self.x + self.width, self.y + self.height)

    @property
    def center(self) -> tuple[float, float]:
        return (self.x + self.width / 2, self.y + self.height / 2)


@dataclass(frozen=True)
class SyntheticScene:
    path: Path
    width: int
    height: int
    ships: tuple[Ship, ...]
    crs: str | None

    def to_dict(self) -> dict[str, object]:
        data = asdict(self)
        data["path"] = str(self.path)
        return data


def place_ships(
    width: int, height: int, n: int, *, seed: int = 0, size: tuple[int, int] = (60, 16)
) -> tuple[Ship, ...]:
    """``n`` non-overlapping ships on the water (right 4/5 of the scene), seeded."""
    rng = np.random.default_rng(seed)
    ships: list[Ship] = []
    length, beam = size
    tries = 0
    while len(ships) < n and tries < 10_000:
        tries += 1
        horizontal = bool(rng.integers(0, 2))
        w, h = (length, beam) if horizontal else (beam, length)
        x0_min = width // 5
        if width - w <= x0_min or height - h <= 0:
            break
        ship = Ship(int(rng.integers(x0_min, width - w)), int(rng.integers(0, height - h)), w, h)
        if all(_apart(ship, other, margin=length) for other in ships):
            ships.append(ship)
    return tuple(ships)


def _apart(a: Ship, b: Ship, margin: int) -> bool:
    return (
        a.x + a.width + margin <= b.x
        or b.x + b.width + margin <= a.x
        or a.y + a.height + margin <= b.y
        or b.y + b.height + margin <= a.y
    )


def make_ship_scene(
    path: str | os.PathLike[str],
    width: int = 4096,
    height: int | None = None,
    *,
    ships: int | tuple[Ship, ...] = 5,
    ship_size: tuple[int, int] = (60, 16),
    seed: int = 0,
    crs: str | None = "EPSG:32650",
    blocksize: int = 512,
    overviews: bool = True,
    sparse: bool = False,
) -> SyntheticScene:
    """Write a GeoTIFF of water (land strip on the left) with ships at known positions.

    ``sparse=True`` writes only the blocks that hold a ship (black elsewhere): a
    100,000 px scene then takes seconds and a few MB.
    """
    height = height or width
    fleet = (
        ships
        if isinstance(ships, tuple)
        else place_ships(width, height, ships, seed=seed, size=ship_size)
    )
    land_edge = width // 10

    def fill(x0: int, y0: int, w: int, h: int, band: int) -> np.ndarray:
        block = np.zeros((h, w), dtype=np.uint8)
        if not sparse:
            xs = np.arange(x0, x0 + w)
            ys = np.arange(y0, y0 + h)
            ripple = ((xs[None, :] // 7 + ys[:, None] // 5) % 3).astype(np.uint8)
            block[:] = WATER[band] + ripple
            block[:, : max(0, min(w, land_edge - x0))] = LAND[band]
        for ship in fleet:
            sx0, sy0 = max(ship.x, x0), max(ship.y, y0)
            sx1, sy1 = min(ship.x + ship.width, x0 + w), min(ship.y + ship.height, y0 + h)
            if sx1 > sx0 and sy1 > sy0:
                block[sy0 - y0 : sy1 - y0, sx0 - x0 : sx1 - x0] = SHIP[band]
        return block

    out = write_geotiff(
        path,
        width,
        height,
        count=3,
        dtype="uint8",
        tiled=True,
        blocksize=blocksize,
        overviews=overviews,
        crs=crs,
        fill=fill,
        sparse=sparse,
    )
    scene = SyntheticScene(Path(out), width, height, fleet, crs)
    Path(str(out) + ".ships.json").write_text(json.dumps(scene.to_dict(), indent=1))
    return scene


def cached_ship_scene(
    cache: str | os.PathLike[str], size: int, *, sparse: bool, ships: int = 12
) -> Path:
    """A ``size`` px ship scene in ``cache``, generated once (written aside, then renamed)."""
    folder = Path(cache)
    folder.mkdir(parents=True, exist_ok=True)
    name = f"{size // 1000}k" if size % 1000 == 0 else str(size)
    path = folder / f"bench_{name}{'_sparse' if sparse else ''}.tif"
    if not path.exists():
        log.info("generating %s", path)
        tmp = path.with_suffix(".part.tif")
        make_ship_scene(tmp, size, ships=ships, sparse=sparse)
        Path(f"{tmp}.ships.json").replace(f"{path}.ships.json")
        tmp.replace(path)
    return path
