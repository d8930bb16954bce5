"""Keep-all adapter path vs stock ``generate`` on a scaled, randomly initialised Qwen2-VL.

The model has Qwen2-VL-2B-like layer shapes (LLM hidden 1536, 12 heads, 2 KV heads, MLP
8960; vision width 1280) but few layers so it runs on a CPU. Both paths see the same
448x448 image and prompt; the adapter path is encode (tile cache cleared each run) +
build_inputs + generate. Goal: adapter time <= 1.05 x stock, identical tokens.

    python benchmarks/bench_adapters.py [--layers 4] [--vision-layers 4] [--new-tokens 16] [--repeats 3]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--vision-layers", type=int, default=4)
    parser.add_argument("--new-tokens", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    import numpy as np
    import torch

    from lrsvqa.models import from_pretrained

    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    from scaled import build_scaled_qwen2_vl

    with tempfile.TemporaryDirectory() as tmp:
        build_scaled_qwen2_vl(tmp, layers=args.layers, vision_layers=args.vision_layers)
        ad = from_pretrained(tmp, device="cpu")

    image = np.random.default_rng(0).integers(0, 256, size=(448, 448, 3), dtype=np.uint8)
    question = "What is in the image? Answer the question using a single word or phrase."
    gen = {"max_new_tokens": args.new_tokens, "do_sample": False}

    def stock() -> list[int]:
        batch = ad.stock_inputs(image, question)
        with torch.no_grad():
            out = ad.model.generate(**batch, **gen)
        return list(out[0, batch["input_ids"].shape[1] :].tolist())

    def adapter() -> list[int]:
        inputs = ad.build_inputs(ad.stock_segments(image), question)
        return ad.generate(inputs, **gen).token_ids

    stock(), adapter()  # warm-up
    times: dict[str, list[float]] = {"stock": [], "adapter": []}
    tokens: dict[str, list[int]] = {}
    for _ in range(args.repeats):
        for name, fn in (("stock", stock), ("adapter", adapter)):
            start = time.perf_counter()
            tokens[name] = fn()
            times[name].append(time.perf_counter() - start)
    s, a = statistics.median(times["stock"]), statistics.median(times["adapter"])
    same = tokens["stock"] == tokens["adapter"]
    print("command: python " + " ".join(sys.argv))
    print(f"torch threads: {torch.get_num_threads()}  new tokens: {len(tokens['stock'])}")
    print(f"stock generate   median {s:.3f} s  {[round(x, 3) for x in times['stock']]}")
    print(f"adapter keep-all median {a:.3f} s  {[round(x, 3) for x in times['adapter']]}")
    print(f"ratio adapter/stock {a / s:.3f} (goal <= 1.05)  identical tokens: {same}")
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
