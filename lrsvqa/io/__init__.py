"""Raster I/O: windowed, overview-aware reads of any GDAL raster to uint8 RGB."""

from lrsvqa.io.geo import reproject_geometry, window_polygon
from lrsvqa.io.limits import DEFAULT_MAX_PIXELS, MAX_PIXELS_ENV, max_pixels
from lrsvqa.io.scene import ReadPlan, Scene, SceneInfo, open_scene
from lrsvqa.io.stretch import BandStretch
from lrsvqa.io.window import Window

__all__ = [
    "DEFAULT_MAX_PIXELS",
    "MAX_PIXELS_ENV",
    "BandStretch",
    "ReadPlan",
    "Scene",
    "SceneInfo",
    "Window",
    "max_pixels",
    "open_scene",
    "reproject_geometry",
    "window_polygon",
]
