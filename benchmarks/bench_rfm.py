"""Focus wall time: distilled RFM (n layers) vs the training-free RFM at a deep layer.

Usage: python benchmarks/bench_rfm.py [--layers N] [--deep K] [--width W] [--repeat R]
A randomly initialised Qwen2-VL-like model with the real 28-layer depth but a reduced
width (so it runs on CPU) scores the same prompt: the global thumbnail + 9 level-0 tiles
(3 x 3 x 256 + 256 vision tokens) of a synthetic 1,344 px ship scene. The training-free
RFM reading layer K runs K layers; the distilled RFM runs its N - 1 copied layers plus
the q/k projections of its last one, so expect a ratio of about N / K (goal <= 0.4).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def build_adapter(width: int, depth: int = 28) -> object:
    """A random Qwen2-VL with the tiny vision tower and a ``depth``-layer, ``width``-wide LLM."""
    import torch
    from transformers import Qwen2VLConfig, Qwen2VLForConditionalGeneration

    from lrsvqa.models import tiny
    from lrsvqa.models.qwen import Qwen2VLAdapter

    (_, small), processor = tiny._qwen("qwen2_vl")
    text = small.text_config.to_dict()
    heads = max(2, width // 64)
    text.update(
        hidden_size=width,
        intermediate_size=width * 4,
        num_hidden_layers=depth,
        num_attention_heads=heads,
        num_key_value_heads=max(1, heads // 4),
        layer_types=["full_attention"] * depth,
    )
    half = width // heads // 2  # rotary frequencies per head, split (t, h, w)
    text["rope_parameters"] = dict(
        text["rope_parameters"],
        mrope_section=[half - 2 * (3 * half // 8), 3 * half // 8, 3 * half // 8],
    )
    vision = small.vision_config.to_dict()
    vision["hidden_size"] = width
    cfg = Qwen2VLConfig(
        text_config=text,
        vision_config=vision,
        image_token_id=small.image_token_id,
        video_token_id=small.video_token_id,
        vision_start_token_id=small.vision_start_token_id,
        vision_end_token_id=small.vision_end_token_id,
    )
    torch.manual_seed(0)
    model = Qwen2VLForConditionalGeneration(cfg).eval()
    return Qwen2VLAdapter(
        model, processor, model_id=f"bench/qwen2_vl-{depth}L-{width}", revision=None
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--layers", type=int, default=4, help="distilled RFM layers (N)")
    parser.add_argument("--deep", type=int, default=None, help="training-free layer K [27]")
    parser.add_argument("--width", type=int, default=512)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()

    import torch

    from lrsvqa.focus import AttentionScorer
    from lrsvqa.focus.distilled import DistilledScorer, RegionFocusModule, RfmMeta
    from lrsvqa.prune.tokens import thumbnail_segment, tile_segment
    from lrsvqa.pyramid import DynamicImagePyramid, PyramidConfig
    from lrsvqa.testing import make_ship_scene

    adapter = build_adapter(args.width)
    caps = adapter.capabilities  # type: ignore[attr-defined]
    deep = args.deep if args.deep is not None else caps.num_layers - 1
    with tempfile.TemporaryDirectory() as tmp:
        scene = make_ship_scene(Path(tmp) / "scene.tif", 3 * caps.tile_size, ships=6, seed=0)
        config = PyramidConfig(tile_size=caps.tile_size, thumbnail_size=caps.thumbnail_size)
        with DynamicImagePyramid(scene.path, config=config) as pyramid:
            thumb = adapter.encode([pyramid.thumbnail(caps.thumbnail_size, square=True)])[0]  # type: ignore[attr-defined]
            tiles = pyramid.tiles(0)
            tokens = adapter.encode(pyramid.read_tiles(tiles))  # type: ignore[attr-defined]
    segments = [thumbnail_segment(thumb)] + [
        tile_segment(t, ti) for t, ti in zip(tokens, tiles, strict=True)
    ]
    question = "How many ships are there?"
    free = AttentionScorer([deep])
    module = RegionFocusModule.from_adapter(adapter, args.layers)  # type: ignore[arg-type]
    distilled = DistilledScorer(module, RfmMeta.for_adapter(adapter, args.layers, [deep]))  # type: ignore[arg-type]

    def timed(scorer: object, cold: bool = True) -> float:
        runs = []
        for i in range(args.repeat + 1):  # the first run warms up
            if cold:  # a new scene: no vision-prefix KV cache from an earlier question
                adapter.clear_focus_cache()  # type: ignore[attr-defined]
            start = time.perf_counter()
            scorer.score(adapter, segments, f"{question} ({i})")  # type: ignore[attr-defined]
            runs.append(time.perf_counter() - start)
        return statistics.median(runs[1:])

    t_free, t_dist = timed(free), timed(distilled)
    t_warm = timed(free, cold=False)
    print("command:", " ".join([Path(sys.executable).name, *sys.argv]))
    print(
        f"model: random Qwen2-VL-like, {caps.num_layers} layers, width {caps.hidden_size}, "
        f"{caps.num_heads} heads; torch {torch.__version__}, {torch.get_num_threads()} threads"
    )
    length = free.score(adapter, segments, question).sequence_length  # type: ignore[arg-type]
    print(f"prompt: thumbnail + {len(tiles)} level-0 tiles = {length} tokens")
    print(
        f"training-free RFM at layer {deep} ({deep + 1} layers): {t_free * 1000:.0f} ms "
        f"(median of {args.repeat}, first question on a scene)"
    )
    print(f"distilled RFM, n = {args.layers}: {t_dist * 1000:.0f} ms")
    print(f"ratio: {t_dist / t_free:.3f} (expected ~{args.layers / (deep + 1):.2f}; goal <= 0.4)")
    print(
        f"later questions on the same tiles: training-free {t_warm * 1000:.0f} ms with the "
        "vision prefix's KV cache (only the question's tokens run)"
    )


if __name__ == "__main__":
    main()
