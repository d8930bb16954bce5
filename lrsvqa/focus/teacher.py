"""Teacher targets for distilling the Region Focus Module: items, inputs, cached targets.

Teacher: the full LVLM's attention from the last prompt token to the candidate vision
tokens at a deep layer (or the mean over several), on the thumbnail + level-0 tiles of the
question's scene, cut with the adapter's tile size as the pipeline does. Targets and
inputs are computed once and cached as safetensors.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from lrsvqa.errors import ConfigError
from lrsvqa.focus.distilled import (
    _atomic_write_bytes,
    _generation_positions,
    candidate_positions,
    weight_anchor,
)
from lrsvqa.focus.scoring import candidate_distribution

if TYPE_CHECKING:
    from lrsvqa.models.base import Adapter

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RfmItem:
    """One training or evaluation item: a question about a scene."""

    item_id: str
    scene: Path
    question: str


def resolve_teacher_layers(layers: Sequence[int] | None, depth: int) -> tuple[int, ...]:
    """Absolute layer indices; negative ones count from the end; None: the last layer."""
    if layers is None:
        return (depth - 1,)
    if not layers:
        raise ConfigError("give at least one teacher layer")
    out = []
    for layer in layers:
        absolute = layer + depth if layer < 0 else layer
        if not 0 <= absolute < depth:
            raise ConfigError(
                f"teacher layer {layer} is out of range: the model has {depth} layers"
            )
        out.append(absolute)
    return tuple(sorted(set(out)))


# --------------------------------------------------------------------- teacher targets
@dataclass
class Prepared:
    """One item ready for the student: inputs, candidate positions and the teacher target."""

    item_id: str
    embeds: torch.Tensor  # (L, hidden), the adapter's dtype, CPU
    positions: torch.Tensor  # the adapter's generation-form position ids
    candidates: torch.Tensor  # (n,) sequence positions of candidate vision tokens
    teacher: torch.Tensor  # (n,) float32 distribution

    def tensors(self) -> dict[str, torch.Tensor]:
        return {
            "embeds": self.embeds.contiguous(),
            "positions": self.positions.contiguous(),
            "candidates": self.candidates.contiguous(),
            "teacher": self.teacher.contiguous(),
        }


def iter_prepared(
    adapter: Adapter, items: Sequence[RfmItem], teacher_layers: Sequence[int]
) -> Iterator[Prepared]:
    """Encode each scene's thumbnail + level-0 tiles once and yield its items' teacher targets."""
    from lrsvqa.focus.padding import unpadded_keep
    from lrsvqa.focus.segments import thumbnail_segment, tile_segment
    from lrsvqa.pyramid import DynamicImagePyramid, PyramidConfig

    caps = adapter.capabilities
    config = PyramidConfig(tile_size=caps.tile_size, thumbnail_size=caps.thumbnail_size)
    current: tuple[Path, list[Any]] | None = None
    for item in items:
        if current is None or current[0] != item.scene:
            with DynamicImagePyramid(item.scene, config=config) as pyramid:
                thumb = adapter.encode([pyramid.thumbnail(caps.thumbnail_size, square=True)])[0]
                tiles = pyramid.tiles(0)
                tokens = adapter.encode(pyramid.read_tiles(tiles))
                segs = [thumbnail_segment(thumb)]
                segs += [  # padding never enters the teacher's softmax either
                    tile_segment(tok, tile, unpadded_keep(pyramid, tile, tok.grid))
                    for tok, tile in zip(tokens, tiles, strict=True)
                ]
            current = (item.scene, segs)
        inputs = adapter.build_inputs(current[1], item.question)
        candidates = candidate_positions(inputs)
        attention = adapter.attention(inputs, list(teacher_layers))  # (layers, heads, n_vision)
        full = attention.new_zeros(*attention.shape[:2], inputs.length)
        full[..., inputs.vision_positions.to(full.device)] = attention
        with torch.no_grad():
            teacher = candidate_distribution(full, candidates.to(full.device)).float().cpu()
        yield Prepared(
            item.item_id,
            inputs.inputs_embeds[0].detach().cpu(),
            _generation_positions(adapter, inputs).detach().cpu(),
            candidates,
            teacher,
        )


def _item_key(item: RfmItem, teacher_layers: Sequence[int], base: str) -> str:
    try:
        stat = item.scene.stat()
        stamp = [stat.st_size, stat.st_mtime_ns]
    except OSError:
        stamp = []
    blob = json.dumps(
        [item.item_id, str(item.scene), stamp, item.question, list(teacher_layers), base]
    )
    return hashlib.sha1(blob.encode()).hexdigest()[:20]


def prepare_cached(
    adapter: Adapter,
    items: Sequence[RfmItem],
    teacher_layers: Sequence[int],
    cache_dir: Path,
    *,
    progress: bool = False,
) -> list[Path]:
    """Cache file per item (computed only when missing): inputs + teacher target."""
    from safetensors.torch import save
    from tqdm import tqdm

    from lrsvqa.focus.distilled import architecture_fingerprint

    cache_dir.mkdir(parents=True, exist_ok=True)
    base = architecture_fingerprint(adapter) + str(adapter.capabilities.tile_size)
    base += hashlib.sha1(json.dumps(weight_anchor(adapter)).encode()).hexdigest()[:8]
    paths = [cache_dir / f"{_item_key(i, teacher_layers, base)}.safetensors" for i in items]
    todo = [i for i, p in zip(items, paths, strict=True) if not p.is_file()]
    where = {i.item_id: p for i, p in zip(items, paths, strict=True)}
    bar = tqdm(
        total=len(todo), desc="teacher targets", unit="item", disable=not progress or not todo
    )
    try:
        for prep in iter_prepared(adapter, todo, teacher_layers):
            blob = save(prep.tensors(), metadata={"item_id": prep.item_id})
            _atomic_write_bytes(where[prep.item_id], blob)
            bar.update(1)
    finally:
        bar.close()
    return paths


def load_prepared(path: Path) -> Prepared:
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata() or {}
        t = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 - safe_open has no __iter__
    return Prepared(
        meta.get("item_id", path.stem), t["embeds"], t["positions"], t["candidates"], t["teacher"]
    )
