"""Dynamic Image Pyramid: levels of a scene, coarse to native, cut into tiles."""

from lrsvqa.pyramid.grid import Level, PyramidConfig, Tile, plan_levels
from lrsvqa.pyramid.pyramid import DynamicImagePyramid

__all__ = ["DynamicImagePyramid", "Level", "PyramidConfig", "Tile", "plan_levels"]
