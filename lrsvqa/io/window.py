"""Pixel windows: plain frozen values in native image coordinates."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, order=True)
class Window:
    """A rectangle of native pixels: columns [col_off, col_off+width), rows likewise.

    A window may reach past the image edge; reads pad that part with black.
    """

    col_off: int
    row_off: int
    width: int
    height: int

    def __post_init__(self) -> None:
        if self.width < 0 or self.height < 0:
            raise ValueError(f"window size must be non-negative, got {self.width}x{self.height}")

    @property
    def col_end(self) -> int:
        return self.col_off + self.width

    @property
    def row_end(self) -> int:
        return self.row_off + self.height

    @property
    def area(self) -> int:
        return self.width * self.height

    def intersection(self, other: Window) -> Window:
        """The overlap of two windows (an empty window when they do not meet)."""
        c0, r0 = max(self.col_off, other.col_off), max(self.row_off, other.row_off)
        c1, r1 = min(self.col_end, other.col_end), min(self.row_end, other.row_end)
        return Window(c0, r0, max(0, c1 - c0), max(0, r1 - r0))

    def clip(self, width: int, height: int) -> Window:
        """This window restricted to an image of ``width`` x ``height`` pixels."""
        return self.intersection(Window(0, 0, width, height))

    def to_rasterio(self) -> object:
        from rasterio.windows import Window as RioWindow

        return RioWindow(self.col_off, self.row_off, self.width, self.height)

    def to_tuple(self) -> tuple[int, int, int, int]:
        """(col_off, row_off, width, height)."""
        return (self.col_off, self.row_off, self.width, self.height)

    def to_box(self) -> tuple[int, int, int, int]:
        """(x1, y1, x2, y2) pixel box, the convention of LRS-VQA's ``hbox``."""
        return (self.col_off, self.row_off, self.col_end, self.row_end)
