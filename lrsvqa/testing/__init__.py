"""Synthetic rasters with known content for tests, demos and benchmarks."""

from lrsvqa.testing.geotiff import expected_values, write_geotiff
from lrsvqa.testing.scenes import Ship, SyntheticScene, make_ship_scene, place_ships

__all__ = [
    "Ship",
    "SyntheticScene",
    "expected_values",
    "make_ship_scene",
    "place_ships",
    "write_geotiff",
]
