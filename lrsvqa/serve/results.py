"""What a finished job keeps: the ``--json`` answer, evidence in EPSG:4326, focus heat.

The heavy parts of an ``Answer`` (the kept vision tokens) are dropped; the token scores
per level stay, so the heat raster and the overlay PNG can be drawn on request.
"""

from __future__ import annotations

import io
import math
import tempfile
import threading
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image
from shapely.geometry import mapping

from lrsvqa.io import reproject_geometry

HEAT_LOW = np.array([255, 255, 0], dtype=np.float64)  # the overlay's yellow → red
HEAT_HIGH = np.array([255, 0, 0], dtype=np.float64)


@dataclass
class JobResult:
    answer: Any  # the Answer, its kept tokens dropped
    data: dict[str, Any]  # answer JSON, evidence GeoJSON, heat tile scores
    tile_size: int
    scene_size: tuple[int, int]  # (width, height) in native pixels
    _overlay: bytes | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def overlay_png(self) -> bytes:
        """The CLI's overlay picture (opens the scene on its own: no model needed)."""
        with self._lock:
            if self._overlay is None:
                with tempfile.TemporaryDirectory(prefix="lrsvqa-overlay-") as tmp:
                    path = Path(tmp) / "overlay.png"
                    self.answer.save_overlay(path)
                    self._overlay = path.read_bytes()
            return self._overlay

    def heat_png(self, level: int) -> tuple[bytes, tuple[int, int, int, int]] | None:
        """The focus heat of ``level`` at token resolution (one pixel a token), and the native
        pixel box it covers; None when the level was not scored."""
        focus = self.answer.focus
        found = [lvl for lvl in (focus.levels if focus else []) if lvl.level == level]
        if not found or found[0].token_scores is None or not found[0].encoded:
            return None
        lvl = found[0]
        grid_r, grid_c = lvl.token_scores[0].shape
        cell = self.tile_size * lvl.factor / grid_c
        width, height = self.scene_size
        out_w, out_h = max(1, math.ceil(width / cell)), max(1, math.ceil(height / cell))
        heat = np.full((out_h, out_w), np.nan)
        for tile, scores in zip(lvl.encoded, lvl.token_scores, strict=True):
            r0, c0 = tile.row * grid_r, tile.col * grid_c
            block = heat[r0 : r0 + grid_r, c0 : c0 + grid_c]
            block[...] = np.asarray(scores, dtype=np.float64)[: block.shape[0], : block.shape[1]]
        rgba = heat_rgba(heat)
        buffer = io.BytesIO()
        Image.fromarray(rgba, "RGBA").save(buffer, format="PNG")
        box = (0, 0, min(width, round(out_w * cell)), min(height, round(out_h * cell)))
        return buffer.getvalue(), box


def heat_rgba(heat: np.ndarray) -> np.ndarray:
    """Scores (NaN = not encoded) → yellow-to-red RGBA, alpha growing with the score."""
    finite = np.isfinite(heat)
    top = float(np.nanmax(heat)) if finite.any() else 0.0
    share = np.where(finite, heat / top if top > 0 else 0.0, 0.0)
    rgb = HEAT_LOW + (HEAT_HIGH - HEAT_LOW) * share[..., None]
    alpha = np.where(finite, 40 + 200 * share, 0)
    return np.concatenate([rgb, alpha[..., None]], axis=-1).round().astype(np.uint8)


def build_result(answer: Any, pyramid: Any) -> JobResult:
    """A JobResult from a fresh Answer and the pyramid it was computed on."""
    crs = answer.evidence.crs
    geojson = answer.to_geojson("EPSG:4326" if crs else "scene")
    focus = answer.focus
    heat: list[dict[str, Any]] = []
    for lvl in focus.levels if focus is not None else []:
        if lvl.token_scores is None:
            continue
        sums = [float(np.asarray(s).sum()) for s in lvl.token_scores]
        top = max(sums) if sums else 0.0
        tiles = []
        for tile, total in zip(lvl.encoded, sums, strict=True):
            geometry = pyramid.geometry(tile)
            if crs:
                geometry = reproject_geometry(geometry, crs, "EPSG:4326")
            tiles.append(
                {
                    "row": tile.row,
                    "col": tile.col,
                    "score": total,
                    "share": total / top if top > 0 else 0.0,
                    "pixel_box": list(pyramid.image_window(tile).to_box()),
                    "geometry": mapping(geometry),
                }
            )
        heat.append({"level": lvl.level, "factor": lvl.factor, "tiles": tiles})
    slim = replace(answer, focus=replace(focus, final_tokens=[]) if focus is not None else None)
    data = {
        "answer": answer.to_dict(),
        "geojson": geojson,
        "geojson_crs": "EPSG:4326" if crs else "pixel",
        "heat": heat,
        "summary": answer.cost.summary(),
    }
    scene = pyramid.scene
    return JobResult(
        answer=slim,
        data=data,
        tile_size=pyramid.tile_size,
        scene_size=(scene.width, scene.height),
    )
