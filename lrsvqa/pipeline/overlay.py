"""Overlay picture of an answer: per-level focus heat and the chosen tiles on the thumbnail.

One panel per level visited (heat of its token scores, its chosen tiles outlined),
then a summary panel with every level's chosen tiles and the finest tiles in bold,
and a legend underneath.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image, ImageDraw, ImageFont

if TYPE_CHECKING:
    from lrsvqa.focus.select import FocusResult, LevelFocus
    from lrsvqa.io.window import Window
    from lrsvqa.pipeline.evidence import Evidence
    from lrsvqa.pyramid import DynamicImagePyramid, Tile

LEVEL_COLOURS = [
    (0, 200, 255),
    (80, 255, 80),
    (255, 220, 0),
    (255, 120, 0),
    (255, 40, 160),
    (180, 90, 255),
    (255, 255, 255),
]
HEAT_LOW = np.array([255, 255, 0], dtype=np.float64)  # yellow
HEAT_HIGH = np.array([255, 0, 0], dtype=np.float64)  # red
MARGIN = 8
TITLE_H = 22
LEGEND_H = 58


def _font(size: int) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1
        return ImageFont.load_default()


def level_colour(level: int) -> tuple[int, int, int]:
    return LEVEL_COLOURS[level % len(LEVEL_COLOURS)]


def render_overlay(
    path: str | os.PathLike[str],
    *,
    question: str,
    text: str,
    evidence: Evidence,
    focus: FocusResult | None,
    pyramid: DynamicImagePyramid,
    panel_size: int = 512,
) -> str:
    """Write the overlay PNG of an answer (its evidence and focus heat) and return its path."""
    base = pyramid.thumbnail(panel_size)
    width, height = pyramid.scene.width, pyramid.scene.height
    scale = base.shape[1] / width
    levels: list[LevelFocus] = list(focus.levels) if focus is not None else []
    panels: list[tuple[str, Image.Image]] = []
    for lvl in levels:
        panel = Image.fromarray(base).convert("RGB")
        if lvl.token_scores is not None:
            panel = _heat(panel, lvl.encoded, lvl.token_scores, scale)
        draw = ImageDraw.Draw(panel)
        for choice in lvl.chosen:
            _outline(draw, choice.tile.window, scale, level_colour(lvl.level), 2, width, height)
        scored = "scored" if lvl.token_scores is not None else "read"
        panels.append(
            (
                f"level {lvl.level} (1/{_factor(lvl.factor)}): {len(lvl.encoded)} tiles {scored}, "
                f"{len(lvl.chosen)} chosen",
                panel,
            )
        )
    summary = Image.fromarray(base).convert("RGB")
    draw = ImageDraw.Draw(summary)
    finest = evidence.finest_level
    for tile in evidence.tiles:
        thick = 4 if tile.finest else 1
        _outline(draw, tile.window, scale, level_colour(tile.level), thick, width, height)
    panels.append(
        (
            f"kept tiles (finest: level {finest})" if finest is not None else "thumbnail only",
            summary,
        )
    )
    return _compose(panels, question, text, [lvl.level for lvl in levels], path)


def _heat(
    panel: Image.Image, tiles: list[Tile], scores: list[np.ndarray], scale: float
) -> Image.Image:
    h, w = panel.height, panel.width
    heat = np.zeros((h, w), dtype=np.float64)
    # Min-max per level: the contrast between tokens is what the picture must show.
    low = min((float(s.min()) for s in scores if s.size), default=0.0)
    top = max((float(s.max()) for s in scores if s.size), default=0.0)
    if top <= low:
        return panel
    for tile, grid in zip(tiles, scores, strict=True):
        x0, y0 = round(tile.window.col_off * scale), round(tile.window.row_off * scale)
        x1, y1 = round(tile.window.col_end * scale), round(tile.window.row_end * scale)
        if x1 <= x0 or y1 <= y0:
            continue
        img = Image.fromarray(((grid - low) / (top - low)).astype(np.float32), mode="F")
        cells = np.asarray(img.resize((x1 - x0, y1 - y0), Image.Resampling.NEAREST))
        cx1, cy1 = min(x1, w), min(y1, h)
        region = heat[y0:cy1, x0:cx1]
        np.maximum(region, cells[: cy1 - y0, : cx1 - x0], out=region)
    strength = np.sqrt(np.clip(heat, 0, 1))
    colour = HEAT_LOW + (HEAT_HIGH - HEAT_LOW) * strength[..., None]
    alpha = (0.65 * strength)[..., None]
    pixels = np.asarray(panel, dtype=np.float64)
    mixed = pixels * (1 - alpha) + colour * alpha
    return Image.fromarray(np.clip(mixed, 0, 255).astype(np.uint8))


def _outline(
    draw: ImageDraw.ImageDraw,
    window: Window,
    scale: float,
    colour: tuple[int, int, int],
    thick: int,
    width: int,
    height: int,
) -> None:
    inside = window.clip(width, height)
    if inside.area == 0:
        return
    box = (
        inside.col_off * scale,
        inside.row_off * scale,
        max(inside.col_off * scale + 1, inside.col_end * scale - 1),
        max(inside.row_off * scale + 1, inside.row_end * scale - 1),
    )
    draw.rectangle(box, outline=colour, width=thick)


def _compose(
    panels: list[tuple[str, Image.Image]],
    question: str,
    text: str,
    levels: list[int],
    path: str | os.PathLike[str],
) -> str:
    pw = max(p.width for _, p in panels)
    ph = max(p.height for _, p in panels)
    cols = min(len(panels), 3)
    rows = -(-len(panels) // cols)
    header = 2 * TITLE_H
    canvas = Image.new(
        "RGB",
        (cols * (pw + MARGIN) + MARGIN, header + rows * (ph + TITLE_H + MARGIN) + LEGEND_H),
        (32, 32, 32),
    )
    draw = ImageDraw.Draw(canvas)
    font, small = _font(15), _font(13)
    question = question if len(question) < 110 else question[:107] + "…"
    reply = text if len(text) < 110 else text[:107] + "…"
    draw.text((MARGIN, 4), f"Q: {question}", fill=(255, 255, 255), font=font)
    draw.text((MARGIN, 4 + TITLE_H), f"A: {reply}", fill=(255, 255, 160), font=font)
    for i, (title, panel) in enumerate(panels):
        x = MARGIN + (i % cols) * (pw + MARGIN)
        y = header + (i // cols) * (ph + TITLE_H + MARGIN)
        draw.text((x, y + 3), title, fill=(230, 230, 230), font=small)
        canvas.paste(panel, (x, y + TITLE_H))
    _legend(draw, canvas, levels, small)
    canvas.save(os.fspath(path), format="PNG")
    return os.fspath(path)


def _legend(draw: ImageDraw.ImageDraw, canvas: Image.Image, levels: list[int], font) -> None:
    y = canvas.height - LEGEND_H + 8
    x = MARGIN
    draw.text((x, y), "tiles:", fill=(230, 230, 230), font=font)
    x += 48
    for level in levels:
        draw.rectangle((x, y + 2, x + 14, y + 14), outline=level_colour(level), width=3)
        draw.text((x + 20, y), f"level {level}", fill=(230, 230, 230), font=font)
        x += 90
    draw.text((x, y), "(bold: tiles whose tokens reach the LLM)", fill=(200, 200, 200), font=font)
    y += 24
    draw.text((MARGIN, y), "focus heat:", fill=(230, 230, 230), font=font)
    x0, bar_w = MARGIN + 86, 200
    for i in range(bar_w):
        s = np.sqrt(i / (bar_w - 1))
        colour = tuple(int(c) for c in HEAT_LOW + (HEAT_HIGH - HEAT_LOW) * s)
        draw.line((x0 + i, y + 2, x0 + i, y + 14), fill=colour)
    draw.text(
        (x0 + bar_w + 8, y),
        "low to high attention of the question (scaled per level)",
        fill=(200, 200, 200),
        font=font,
    )


def _factor(factor: float) -> str:
    """A level's scale for a label: ``4`` for power-of-two levels, ``27.11`` for release ones."""
    return str(int(factor)) if float(factor).is_integer() else f"{factor:.2f}"
