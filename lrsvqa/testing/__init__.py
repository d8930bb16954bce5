"""Synthetic rasters with known content for tests, demos and benchmarks."""

from lrsvqa.testing.geotiff import expected_values, write_geotiff
from lrsvqa.testing.questions import write_synthetic
from lrsvqa.testing.scenes import (
    Ship,
    SyntheticScene,
    cached_ship_scene,
    make_ship_scene,
    place_ships,
)

__all__ = [
    "Ship",
    "SyntheticScene",
    "cached_ship_scene",
    "expected_values",
    "make_ship_scene",
    "place_ships",
    "write_geotiff",
    "write_synthetic",
]
