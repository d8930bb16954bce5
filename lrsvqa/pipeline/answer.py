"""Results of ``Pipeline.ask``: the answer, its map evidence, its cost, its config."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

from shapely.geometry import Polygon, mapping

from lrsvqa.errors import ConfigError
from lrsvqa.io.geo import reproject_geometry
from lrsvqa.io.window import Window
from lrsvqa.pipeline.cost import CostReport


@dataclass(frozen=True)
class TileEvidence:
    """A tile the focus chose: where it is, how strongly, how many tokens it kept."""

    level: int
    factor: int
    row: int
    col: int
    window: Window  # native pixels, clipped to the image
    score: float
    kept_tokens: int
    geometry: Polygon  # in the scene CRS (pixel coordinates when the scene has none)
    finest: bool

    def to_dict(self) -> dict[str, Any]:
        return {
            "level": self.level,
            "factor": self.factor,
            "row": self.row,
            "col": self.col,
            "box": list(self.window.to_box()),
            "score": self.score,
            "kept_tokens": self.kept_tokens,
            "finest": self.finest,
        }


@dataclass
class Evidence:
    """The chosen tiles per level, with map geometry."""

    tiles: list[TileEvidence] = field(default_factory=list)
    crs: str | None = None  # the scene CRS; None: geometries are in pixel coordinates
    scene_bounds: tuple[float, float, float, float] | None = None

    @property
    def finest_level(self) -> int | None:
        finest = [t.level for t in self.tiles if t.finest]
        return finest[0] if finest else None

    def finest_tiles(self) -> list[TileEvidence]:
        return [t for t in self.tiles if t.finest]

    def levels(self) -> list[int]:
        return sorted({t.level for t in self.tiles})

    def to_dict(self) -> dict[str, Any]:
        levels = []
        for level in self.levels():
            tiles = [t for t in self.tiles if t.level == level]
            levels.append(
                {
                    "level": level,
                    "factor": tiles[0].factor,
                    "tiles": [t.to_dict() for t in tiles],
                }
            )
        return {
            "crs": self.crs,
            "pixel_coordinates": self.crs is None,
            "finest_level": self.finest_level,
            "levels": levels,
        }

    def to_geojson(self, crs: str = "scene") -> dict[str, Any]:
        """A FeatureCollection of the chosen tiles in the scene CRS or EPSG:4326."""
        if crs not in ("scene", "EPSG:4326"):
            raise ConfigError(f"crs must be 'scene' or 'EPSG:4326', got {crs!r}")
        if crs == "EPSG:4326" and self.crs is None:
            raise ConfigError(
                "the scene has no CRS, so its evidence cannot be reprojected to EPSG:4326"
            )
        features = []
        for tile in self.tiles:
            geometry = tile.geometry
            if crs == "EPSG:4326":
                geometry = reproject_geometry(geometry, self.crs, "EPSG:4326")
            features.append(
                {
                    "type": "Feature",
                    "geometry": mapping(geometry),
                    "properties": {
                        "level": tile.level,
                        "row": tile.row,
                        "col": tile.col,
                        "score": tile.score,
                        "kept_tokens": tile.kept_tokens,
                        "finest": tile.finest,
                        "pixel_box": list(tile.window.to_box()),
                    },
                }
            )
        collection: dict[str, Any] = {"type": "FeatureCollection", "features": features}
        if crs == "scene":
            if self.crs is None:
                collection["properties"] = {"coordinates": "pixel (no CRS in the scene)"}
            else:
                # Not part of RFC 7946, but GDAL and QGIS read it for non-WGS84 data.
                collection["crs"] = {"type": "name", "properties": {"name": _crs_urn(self.crs)}}
        return collection

    def to_geodataframe(self, crs: str = "scene") -> Any:
        """The chosen tiles as a GeoDataFrame (level, score, kept tokens, pixel box), in the
        scene CRS (``"scene"``) or reprojected to ``crs`` (e.g. ``"EPSG:4326"``)."""
        import geopandas as gpd

        if crs != "scene" and self.crs is None:
            raise ConfigError(
                f"the scene has no CRS, so its evidence cannot be reprojected to {crs}; "
                "use crs='scene' (pixel coordinates)"
            )
        target = self.crs if crs == "scene" else crs
        rows, geometries = [], []
        for tile in self.tiles:
            row = tile.to_dict()
            row["pixel_box"] = row.pop("box")
            rows.append(row)
            geometry = tile.geometry
            if crs != "scene":
                geometry = reproject_geometry(geometry, self.crs, crs)
            geometries.append(geometry)
        columns = ["level", "factor", "row", "col", "score", "kept_tokens", "finest", "pixel_box"]
        return gpd.GeoDataFrame(rows, columns=columns, geometry=geometries, crs=target)


def _crs_urn(crs: str) -> str:
    if crs.upper().startswith("EPSG:"):
        return f"urn:ogc:def:crs:EPSG::{crs.split(':', 1)[1]}"
    return crs


@dataclass
class Answer:
    """The model's answer to one question about one scene."""

    text: str
    question: str
    scene: str
    evidence: Evidence
    cost: CostReport
    config: dict[str, Any]
    focus: Any = None  # the FocusResult (token scores per level), for overlays
    notes: list[str] = field(default_factory=list)  # e.g. a budget that cut tokens

    def to_geojson(self, crs: str = "scene") -> dict[str, Any]:
        return self.evidence.to_geojson(crs)

    def save_overlay(
        self, path: str | os.PathLike[str], *, pyramid: Any = None, panel_size: int = 512
    ) -> str:
        """Write a PNG: focus heat per level and the chosen tiles on the scene thumbnail."""
        from lrsvqa.pipeline.overlay import render_overlay

        return render_overlay(self, path, pyramid=pyramid, panel_size=panel_size)

    def to_dict(self) -> dict[str, Any]:
        return {
            "text": self.text,
            "question": self.question,
            "scene": self.scene,
            "evidence": self.evidence.to_dict(),
            "cost": self.cost.to_dict(),
            "config": self.config,
            "notes": list(self.notes),
        }
