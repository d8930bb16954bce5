"""The ask pipeline: tokens to the LLM, wall time pruned vs unpruned, cache reuse, memory.

    python benchmarks/bench_pipeline.py [--cache DIR] [--layers 4] [--vision-layers 4] [--scene 2688]

(1) Tokens reaching the LLM on a 27,328 px scene (the largest LRS-VQA image) with
    Qwen2-VL geometry (448 px tiles, 256 tokens each): default rfm selector vs ``all``
    (budget 2,500) vs an anyres-equivalent count at the same maximum resolution.
(2) Wall time of one question, pruned (rfm) vs ``all`` at the same maximum resolution,
    on a randomly initialised Qwen2-VL with real layer shapes (hidden 1536, MLP 8960,
    vision width 1280) but few layers, on a ``--scene`` px scene.
(3) Six questions vs one on the same scene (the per-scene cache at work).
(4) Peak RSS of ``ask`` with a tiny model on a 100,000 px vs a 10,000 px sparse scene,
    each in a fresh process.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
HERE = Path(__file__).resolve().parent
QUESTIONS = [
    "How many ships are there? Answer the question using a single word or phrase.",
    "Is there a ship near the coast? Answer the question using a single word or phrase.",
    "What color is the largest ship? Answer the question using a single word or phrase.",
    "Where is the smallest ship? Answer the question using a single word or phrase.",
    "Is the water calm? Answer the question using a single word or phrase.",
    "What is on the left side of the image? Answer the question using a single word or phrase.",
]


def scene(cache: Path, size: int, sparse: bool) -> Path:
    from lrsvqa.testing import cached_ship_scene

    return cached_ship_scene(cache, size, sparse=sparse)


def tokens_section(cache: Path) -> None:
    from lrsvqa.focus import FocusConfig
    from lrsvqa.pipeline import Pipeline
    from lrsvqa.pyramid import DynamicImagePyramid

    path = scene(cache, 27_328, sparse=True)
    counts = {}
    for selector in ("rfm", "all"):
        with Pipeline.from_pretrained(
            "tiny/qwen2_vl", device="cpu", focus=FocusConfig(selector=selector)
        ) as p:
            answer = p.ask(path, QUESTIONS[0])
            counts[selector] = (answer.cost.llm_vision_tokens, answer.evidence.finest_level)
            tile, per_tile = (
                p.adapter.capabilities.tile_size,
                p.adapter.capabilities.n_tokens_per_tile,
            )
    with DynamicImagePyramid(path, tile_size=tile) as pyramid:
        finest = pyramid.levels[counts["rfm"][1]]
        all_level = pyramid.levels[counts["all"][1]]
        anyres = finest.n_tiles * per_tile + per_tile  # every tile at that resolution + base image
    ours = counts["rfm"][0]
    print("(1) tokens to the LLM, 27,328 x 27,328 px scene, 448 px tiles (256 tokens)")
    print(
        f"    rfm (default: keep 25 %, 6 tiles/level) : {ours:>9,} tokens, finest level "
        f"{finest.index} (1/{finest.factor} scale, native)"
    )
    print(
        f"    all (budget 2,500)                      : {counts['all'][0]:>9,} tokens, level "
        f"{all_level.index} (1/{all_level.factor} scale)"
    )
    print(
        f"    anyres at the same max resolution       : {anyres:>9,} tokens "
        f"({finest.n_tiles:,} tiles + base)"
    )
    print(
        f"    ours / anyres = 1/{anyres / ours:,.0f}   ours / all = {ours / counts['all'][0]:.2f}   "
        "(goal <= 1/10; the paper: 2,376 vs 21,312)"
    )


def timing_section(
    cache: Path, layers: int, vision_layers: int, size: int, new_tokens: int
) -> None:
    sys.path.insert(0, str(HERE))
    from scaled import build_scaled_qwen2_vl

    from lrsvqa.focus import FocusConfig
    from lrsvqa.models import from_pretrained
    from lrsvqa.pipeline import Pipeline

    path = scene(cache, size, sparse=False)
    with tempfile.TemporaryDirectory() as tmp:
        build_scaled_qwen2_vl(tmp, layers=layers, vision_layers=vision_layers)
        adapter = from_pretrained(tmp, device="cpu")

    def one(selector: str, budget: int) -> tuple[float, object]:
        adapter.clear_focus_cache()
        pipeline = Pipeline(
            adapter,
            focus=FocusConfig(selector=selector, token_budget=budget),
            max_new_tokens=new_tokens,
        )
        start = time.perf_counter()
        answer = pipeline.ask(path, QUESTIONS[0])
        elapsed = time.perf_counter() - start
        pipeline.close()
        return elapsed, answer

    one("rfm", 2500)  # warm-up (thread pools, allocator)
    pruned_s, pruned = one("rfm", 2500)
    finest = pruned.evidence.finest_level  # type: ignore[attr-defined]
    # `all` may use the whole context (the pipeline refuses a budget the context cannot hold)
    all_s, full = one("all", 16_384)
    assert full.evidence.finest_level == finest, "all must reach the same max resolution"  # type: ignore[attr-defined]
    print(
        f"(2) one question, {size} px scene, scaled Qwen2-VL ({layers} LLM layers, "
        f"{vision_layers} vision layers, real widths), {new_tokens} new tokens per answer"
    )
    for name, secs, ans in (("rfm", pruned_s, pruned), ("all", all_s, full)):
        cost = ans.cost  # type: ignore[attr-defined]
        print(
            f"    {name:4}: {secs:7.2f} s  {cost.llm_vision_tokens:6,} vision tokens to the LLM, "
            f"{sum(cost.tiles_encoded.values()):3} tiles encoded, {cost.tflops:7.3f} TFLOPs (ours), "
            f"{cost.paper_tflops:7.3f} (papers')  "
            f"{ {k: round(v, 2) for k, v in cost.seconds.items()} }"
        )
    print(
        f"    pruned / all wall time = {pruned_s / all_s:.2f} (goal <= 0.35); "
        f"FLOPs ratio = {pruned.cost.flops / full.cost.flops:.2f} (ours), "
        f"{pruned.cost.paper_flops / full.cost.paper_flops:.2f} (papers')"
    )  # type: ignore[attr-defined]

    adapter.clear_focus_cache()
    pipeline = Pipeline(adapter, max_new_tokens=new_tokens)
    start = time.perf_counter()
    pipeline.ask(path, QUESTIONS[0])
    first = time.perf_counter() - start
    later = []
    for question in QUESTIONS[1:]:
        answer = pipeline.ask(path, question)
        later.append(
            f"{sum(answer.cost.tiles_encoded.values())} new tiles + {answer.cost.cache_hits} cached "
            f"({answer.cost.seconds['total']:.1f} s)"
        )
    six = time.perf_counter() - start
    print(
        f"(3) 6 questions on one scene: {six:.2f} s vs 1 question {first:.2f} s = "
        f"{six / first:.2f}x (goal <= 2x); questions 2-6: {'; '.join(later)}"
    )


def rss_section(cache: Path) -> None:
    code = (
        "import json, sys; from lrsvqa.pipeline import Pipeline; "
        "p = Pipeline.from_pretrained('tiny/qwen2_vl', device='cpu'); "
        "a = p.ask(sys.argv[1], 'How many ships are there?'); "
        "print(json.dumps({'rss': a.cost.peak_rss_mb, 'finest': a.evidence.finest_level, "
        "'seconds': a.cost.seconds['total']}))"
    )
    results = {}
    for size in (10_000, 100_000):
        path = scene(cache, size, sparse=True)
        out = subprocess.run(
            [sys.executable, "-c", code, str(path)], capture_output=True, text=True, check=True
        )
        results[size] = json.loads(out.stdout.strip().splitlines()[-1])
    small, big = results[10_000], results[100_000]
    print("(4) peak RSS of one ask (tiny/qwen2_vl, fresh process, down to native resolution)")
    print(f"    10,000 px : {small['rss']:6.0f} MB ({small['seconds']:.1f} s)")
    print(f"    100,000 px: {big['rss']:6.0f} MB ({big['seconds']:.1f} s)")
    print(f"    ratio {big['rss'] / small['rss']:.2f} (goal <= 1.5, and <= 1,536 MB)")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--cache", type=Path, default=Path.home() / ".cache" / "lrsvqa" / "bench")
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--vision-layers", type=int, default=4)
    parser.add_argument(
        "--new-tokens",
        type=int,
        default=8,
        help="Tokens generated per answer (LRS-VQA answers are a word or phrase; a random "
        "model never stops by itself).",
    )
    parser.add_argument(
        "--scene", type=int, default=2688, help="Scene size for the timing sections."
    )
    parser.add_argument(
        "--skip", default="", help="Comma-separated sections to skip: tokens,timing,rss."
    )
    args = parser.parse_args()
    skip = set(filter(None, args.skip.split(",")))
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    hf_logging.set_verbosity_error()
    print("command: python " + " ".join(sys.argv))
    if "tokens" not in skip:
        tokens_section(args.cache)
    if "timing" not in skip:
        timing_section(args.cache, args.layers, args.vision_layers, args.scene, args.new_tokens)
    if "rss" not in skip:
        rss_section(args.cache)


if __name__ == "__main__":
    main()
