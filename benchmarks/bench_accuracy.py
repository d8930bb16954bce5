"""The method measured: accuracy, grounding and cost of every selector on held-out scenes.

Held-out synthetic worlds (seeds never used in training) of 4,096 to 30,000 px, written as
GeoTIFFs with average overviews; LRS-VQA-style questions of every category from their ground
truth. Each configuration answers every question through the real ``Pipeline`` (no stub):

    thumbnail   the global view only
    all         every tile of the finest level that fits the token budget, all tokens
    uniform     tiles spread evenly, coarse to fine; random: seeded random tiles
    rfm         the training-free Region Focus Module (the model's own attention)
    rfm+pdrop   rfm, then PyramidDrop inside the LLM; rfm+fastv: FastV instead
    distilled   rfm ranking by a distilled RFM (``lrsvqa train-rfm`` on this model), if given
    oracle      the native tiles that hold the asked-about objects, all their tokens

Per configuration: accuracy (all questions, small-object questions, per category), evidence
grounding (share of each ground-truth box covered by the finest tiles; hit = share >= 50 %),
vision tokens to the LLM, TFLOPs and seconds per question.

    python benchmarks/bench_accuracy.py [--model micro/qwen2_vl] [--scenes 12]
        [--per-scene 20] [--distilled RFM_DIR] [--cache DIR] [--json OUT] [--chart OUT.png]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")

HELD_OUT = 20_000_000  # seeds of the benchmark's worlds; training uses 0 .. tens of thousands
SIZES = (4096, 5120, 6144, 8192, 10240, 12288, 16384, 30000)


def scenes(cache: Path, n: int) -> list[tuple[Path, Any]]:
    from lrsvqa.testing.world import load_world, make_world, write_world

    cache.mkdir(parents=True, exist_ok=True)
    out = []
    for i in range(n):
        size = SIZES[i % len(SIZES)]
        path = cache / f"held_{i:02d}_{size}.tif"
        if not (path.exists() and Path(f"{path}.world.json").exists()):
            world = make_world(size, seed=HELD_OUT + i, small=0.5)
            print(
                f"writing {path.name} ({size:,} px, {len(world.objects)} objects)", file=sys.stderr
            )
            tmp = path.with_name(path.stem + ".part.tif")
            write_world(tmp, world)
            Path(f"{tmp}.world.json").replace(f"{path}.world.json")
            tmp.replace(path)
        out.append((path, load_world(path)))
    return out


def questions(world: Any, seed: int, per_scene: int) -> list[Any]:
    from lrsvqa.testing.world_questions import world_questions

    seen: dict[str, Any] = {}
    for k in range(12):
        for q in world_questions(world, seed=seed * 100 + k):
            seen.setdefault(q.text, q)
        if len(seen) >= per_scene:
            break
    return list(seen.values())[:per_scene]


def coverage_of(answer: Any, world: Any, q: Any) -> float | None:
    from lrsvqa.bench.grounding import coverage

    if not q.targets:
        return None
    boxes = [t.window.to_box() for t in answer.evidence.finest_tiles()]
    values = [coverage(world.objects[i].box, boxes) for i in q.targets]
    vals = [v for v in values if v is not None]
    return sum(vals) / len(vals) if vals else None


def oracle_answer(pipeline: Any, path: Path, world: Any, q: Any) -> dict[str, Any]:
    """Thumbnail + every native tile under the targets (all tokens, within the budget)."""
    from lrsvqa.bench.grounding import coverage
    from lrsvqa.io.window import Window
    from lrsvqa.pipeline.session import Stopwatch
    from lrsvqa.prune import thumbnail_segment, tile_segment

    start = time.perf_counter()
    session = pipeline.session(path)
    pyramid = session.pyramid
    last = len(pyramid.levels) - 1
    watch = Stopwatch()
    thumb = session.thumbnail(watch).tokens[0]
    tiles: dict[Any, Any] = {}
    for i in q.targets:
        x0, y0, x1, y1 = world.objects[i].box
        for t in pyramid.tiles_under(Window(x0, y0, max(1, x1 - x0), max(1, y1 - y0)), last):
            tiles[t.key] = t
    room = (
        pipeline.focus.token_budget - thumb.n
    ) // pipeline.adapter.capabilities.n_tokens_per_tile
    chosen = sorted(tiles.values(), key=lambda t: t.key)[: max(0, room)]
    tokens = session.encode_tiles(chosen, watch).tokens if chosen else []
    segments = [thumbnail_segment(thumb)] + [
        tile_segment(tok, tile) for tile, tok in zip(chosen, tokens, strict=True)
    ]
    inputs = pipeline.adapter.build_inputs(segments, q.text)
    gen = pipeline.adapter.generate(inputs, max_new_tokens=pipeline.max_new_tokens)
    boxes = [pyramid.image_window(t).to_box() for t in chosen]
    covs = [coverage(world.objects[i].box, boxes) for i in q.targets]
    covs = [c for c in covs if c is not None]
    from lrsvqa.pipeline.cost import prefill_flops

    caps = pipeline.adapter.capabilities
    flops = caps.vision_flops_per_tile * (len(chosen) + 1) + prefill_flops(
        caps, [inputs.length] * caps.num_layers
    )
    return {
        "text": gen.text.strip(),
        "tokens": int(inputs.vision_positions.numel()),
        "tflops": flops / 1e12,
        "seconds": time.perf_counter() - start,
        "coverage": sum(covs) / len(covs) if covs else None,
    }


def configs(distilled: str | None) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {
        "thumbnail": {"selector": "thumbnail"},
        "all": {"selector": "all"},
        "uniform": {"selector": "uniform"},
        "random": {"selector": "random"},
        "rfm": {"selector": "rfm"},
        "rfm+pdrop": {"selector": "rfm", "llm": "pdrop"},
        "rfm+fastv": {"selector": "rfm", "llm": "fastv"},
    }
    if distilled:
        out["distilled"] = {"selector": "rfm", "focus": f"distilled:{distilled}"}
    out["oracle"] = {"oracle": True}
    return out


def normalise(text: str) -> str:
    return text.strip().strip(".").lower()


def run(args: argparse.Namespace) -> dict[str, Any]:
    from lrsvqa.focus import FocusConfig
    from lrsvqa.models import from_pretrained
    from lrsvqa.pipeline import Pipeline
    from lrsvqa.prune import PruneConfig
    from lrsvqa.prune.llm import LLMPruneConfig

    adapter = from_pretrained(args.model, device="cpu")
    caps = adapter.capabilities
    worlds = scenes(Path(args.cache), args.scenes)
    items = [(p, w, q) for s, (p, w) in enumerate(worlds) for q in questions(w, s, args.per_scene)]
    print(f"{len(items)} questions over {len(worlds)} scenes", file=sys.stderr)
    rows: list[dict[str, Any]] = []
    for name, spec in configs(args.distilled).items():
        if spec.get("oracle"):
            pipeline = Pipeline(adapter, max_new_tokens=6)
        else:
            focus = FocusConfig(selector=spec["selector"], focus=spec.get("focus", "attention"))
            prune = PruneConfig(llm=LLMPruneConfig(method=spec.get("llm", "none")))
            pipeline = Pipeline(adapter, focus=focus, prune=prune, max_new_tokens=6)
        started = time.perf_counter()
        for path, world, q in items:
            if spec.get("oracle"):
                got = oracle_answer(pipeline, path, world, q)
            else:
                t0 = time.perf_counter()
                answer = pipeline.ask(path, q.text)
                got = {
                    "text": answer.text,
                    "tokens": answer.cost.llm_vision_tokens,
                    "tflops": answer.cost.tflops,
                    "seconds": time.perf_counter() - t0,
                    "coverage": coverage_of(answer, world, q),
                }
            native_tiles = _native_tiles(pipeline, path)
            rows.append(
                {
                    "config": name,
                    "scene": path.name,
                    "size": world.width,
                    "category": q.category,
                    "small": q.small,
                    "truth": q.answer,
                    "correct": normalise(got["text"]) == q.answer,
                    "all_native_tokens": native_tiles * caps.n_tokens_per_tile
                    + caps.n_tokens_per_tile,
                    **got,
                }
            )
        pipeline.close()
        print(f"{name}: {time.perf_counter() - started:.0f} s", file=sys.stderr)
    return summarise(rows)


_NATIVE: dict[str, int] = {}


def _native_tiles(pipeline: Any, path: Path) -> int:
    if str(path) not in _NATIVE:
        _NATIVE[str(path)] = pipeline.session(path).pyramid.levels[-1].n_tiles
    return _NATIVE[str(path)]


def summarise(rows: list[dict[str, Any]]) -> dict[str, Any]:
    by: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for r in rows:
        by[r["config"]].append(r)

    def acc(items: list[dict[str, Any]]) -> float | None:
        return round(100 * sum(r["correct"] for r in items) / len(items), 1) if items else None

    table = {}
    for name, items in by.items():
        covs = [r["coverage"] for r in items if r["coverage"] is not None]
        cats: dict[str, list[dict[str, Any]]] = defaultdict(list)
        for r in items:
            cats[r["category"]].append(r)
        table[name] = {
            "n": len(items),
            "accuracy": acc(items),
            "small_objects": acc([r for r in items if r["small"]]),
            "large_objects": acc(
                [r for r in items if not r["small"] and r["coverage"] is not None]
            ),
            "per_category": {c: acc(v) for c, v in sorted(cats.items())},
            "grounding_mean": round(100 * sum(covs) / len(covs), 1) if covs else None,
            "grounding_hit": round(100 * sum(c >= 0.5 for c in covs) / len(covs), 1)
            if covs
            else None,
            "tokens": round(sum(r["tokens"] for r in items) / len(items), 1),
            "all_native_tokens": round(sum(r["all_native_tokens"] for r in items) / len(items)),
            "tflops": round(sum(r["tflops"] for r in items) / len(items), 5),
            "seconds": round(sum(r["seconds"] for r in items) / len(items), 3),
        }
    majority: dict[str, float] = {}
    some = next(iter(by.values()))
    cats2: dict[str, list[str]] = defaultdict(list)
    for r in some:
        cats2[r["category"]].append(r["truth"])
    for c, truths in cats2.items():
        top = max(set(truths), key=truths.count)
        majority[c] = round(100 * truths.count(top) / len(truths), 1)
    return {"configs": table, "majority_baseline": majority, "rows": rows}


def print_table(result: dict[str, Any]) -> None:
    head = f"{'config':<11} {'n':>4} {'acc':>6} {'small':>6} {'ground':>7} {'hit':>6} {'tokens':>7} {'TFLOPs':>8} {'s/q':>6}"
    print(head)
    for name, r in result["configs"].items():
        print(
            f"{name:<11} {r['n']:>4} {r['accuracy']!s:>6} {r['small_objects']!s:>6} "
            f"{r['grounding_mean']!s:>7} {r['grounding_hit']!s:>6} {r['tokens']:>7} "
            f"{r['tflops']:>8.5f} {r['seconds']:>6.2f}"
        )
    cats = sorted({c for r in result["configs"].values() for c in r["per_category"]})
    print("\nper category (accuracy %; majority baseline last)")
    print(f"{'config':<11} " + " ".join(f"{c[:10]:>10}" for c in cats))
    for name, r in result["configs"].items():
        print(f"{name:<11} " + " ".join(f"{r['per_category'].get(c)!s:>10}" for c in cats))
    print(
        f"{'majority':<11} " + " ".join(f"{result['majority_baseline'].get(c)!s:>10}" for c in cats)
    )


def chart(result: dict[str, Any], path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(result["configs"])
    acc = [result["configs"][n]["accuracy"] or 0 for n in names]
    small = [result["configs"][n]["small_objects"] or 0 for n in names]
    tokens = [result["configs"][n]["tokens"] for n in names]
    fig, (a, b) = plt.subplots(1, 2, figsize=(12, 4.2))
    x = range(len(names))
    a.bar([i - 0.2 for i in x], acc, 0.4, label="all questions")
    a.bar([i + 0.2 for i in x], small, 0.4, label="small objects")
    a.set_xticks(list(x), names, rotation=30)
    a.set_ylabel("accuracy %")
    a.legend()
    a.set_title("held-out synthetic scenes, 4k-30k px (micro model)")
    b.bar(list(x), tokens, color="gray")
    b.set_xticks(list(x), names, rotation=30)
    b.set_ylabel("vision tokens to the LLM")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="micro/qwen2_vl")
    parser.add_argument("--scenes", type=int, default=12)
    parser.add_argument("--per-scene", type=int, default=20)
    parser.add_argument("--distilled", default=None, help="a train-rfm output folder")
    parser.add_argument(
        "--cache",
        default=os.path.join(
            os.environ.get("LRSVQA_CACHE", os.path.expanduser("~/.cache/lrsvqa")), "bench-accuracy"
        ),
    )
    parser.add_argument("--json", default=None)
    parser.add_argument("--chart", default=None)
    args = parser.parse_args()
    result = run(args)
    print_table(result)
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1) + "\n")
    if args.chart:
        chart(result, args.chart)


if __name__ == "__main__":
    main()
