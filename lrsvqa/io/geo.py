"""The one place where pixel windows become map geometry (and back)."""

from __future__ import annotations

from typing import Any

from affine import Affine
from shapely.geometry import Polygon, mapping, shape
from shapely.geometry.base import BaseGeometry

from lrsvqa.io.window import Window


def window_polygon(window: Window, transform: Affine) -> Polygon:
    """The window's four corners through ``transform``: exact for rotated rasters too."""
    corners = [
        (window.col_off, window.row_off),
        (window.col_end, window.row_off),
        (window.col_end, window.row_end),
        (window.col_off, window.row_end),
    ]
    return Polygon([transform @ corner for corner in corners])


def reproject_geometry(
    geometry: BaseGeometry, src_crs: Any, dst_crs: Any, *, segments: int = 16
) -> BaseGeometry:
    """Reproject a shapely geometry between coordinate reference systems.

    Edges are first cut into ``segments`` pieces (of the geometry's larger side), so that
    a straight edge in ``src_crs`` follows its true, slightly curved course in ``dst_crs``.
    """
    import shapely
    from rasterio.warp import transform_geom

    minx, miny, maxx, maxy = geometry.bounds
    step = max(maxx - minx, maxy - miny) / max(segments, 1)
    if step > 0:
        geometry = shapely.segmentize(geometry, step)
    return shape(transform_geom(src_crs, dst_crs, mapping(geometry)))
