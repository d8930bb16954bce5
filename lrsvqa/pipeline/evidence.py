"""Evidence of an answer: the tiles the focus chose, per level, with map geometry."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from shapely.geometry import Polygon, mapping

from lrsvqa.errors import ConfigError
from lrsvqa.io.geo import reproject_geometry
from lrsvqa.io.window import Window

if TYPE_CHECKING:
    from lrsvqa.focus.select import FocusResult
    from lrsvqa.pyramid import DynamicImagePyramid


@dataclass(frozen=True)
class TileEvidence:
    """A tile the focus chose: where it is, how strongly, how many tokens it kept."""

    level: int
    factor: float
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
    # the scene's bounds in its CRS (None without CRS): ask-many's footprint column
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


def evidence_of(pyramid: DynamicImagePyramid, focus: FocusResult) -> Evidence:
    """The evidence of a focus result: every level's chosen tiles (at the finest level,
    those with kept tokens) with their native windows and geometry in the scene CRS."""
    scene = pyramid.scene
    finest = focus.finest_level
    tiles: list[TileEvidence] = []
    for level in focus.levels:
        is_last = level is focus.levels[-1] and finest is not None
        for choice in level.chosen:
            if is_last and choice.kept_tokens == 0:
                continue
            window = pyramid.image_window(choice.tile)
            tiles.append(
                TileEvidence(
                    level=choice.tile.level,
                    factor=level.factor,
                    row=choice.tile.row,
                    col=choice.tile.col,
                    window=window,
                    score=choice.score,
                    kept_tokens=choice.kept_tokens,
                    geometry=pyramid.geometry(window),
                    finest=is_last,
                )
            )
    crs = scene.crs.to_string() if scene.crs else None
    bounds = tuple(float(v) for v in scene.bounds) if crs else None
    return Evidence(tiles=tiles, crs=crs, scene_bounds=bounds)  # type: ignore[arg-type]
