"""PyramidDrop and FastV vs no dropping: analytic prefill FLOPs and measured prefill time.

Analytic: ``pipeline.cost.prefill_flops`` over the tokens each layer sees, for the scaled
model below and for the real LLaVA-NeXT-7B shapes (hidden 4096, 32 layers, MLP 11008, 32
heads) with the same layout: 576 thumbnail + 4 x 576 anyres tile tokens = 2,880 image
tokens, 48 row newlines (kept, never ranked) and the prompt's text (about 60 tokens).
Goals: PyramidDrop (lambda 0.5, 4 stages) FLOPs ratio <= 0.48 on the real shapes.

Measured: a randomly initialised LLaVA-NeXT (stock ``LlavaNextForConditionalGeneration``,
the tiny CLIP tower, a Llama LLM of 32 layers at reduced width so it runs on 2 CPU cores)
behind the real ``LlavaNextAdapter``; prefill = ``generate`` of one new token through
``generate_pruned``, ``--repeats`` rounds of (none, pdrop, fastv); a ratio is the median
over rounds of the ratio within one round. The process's CPU-time ratio is printed next to
the wall-time one: it hardly moves when other jobs share the cores. Goal: PyramidDrop
wall-time ratio <= 0.6. At reduced width attention is a larger share of a layer than at 4096, so
the scaled model's FLOPs ratio is printed next to the measured one.

    python benchmarks/bench_pyramid_drop.py [--hidden 512] [--heads 8] [--mlp 1376]
        [--layers 32] [--repeats 3]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")

QUESTION = "What is in the image? Answer the question using a single word or phrase."
SYSTEM = "A chat between a curious human and an artificial intelligence assistant."


def build_adapter(hidden: int, heads: int, mlp: int, layers: int) -> object:
    import torch
    from transformers import LlavaNextConfig, LlavaNextForConditionalGeneration

    from lrsvqa.models import from_pretrained
    from lrsvqa.models.llava_next import LlavaNextAdapter

    tiny = from_pretrained("tiny/llava_next", device="cpu")  # processor, tokenizer, CLIP tower
    cfg = tiny.model.config.to_dict()
    text = dict(
        cfg["text_config"],
        hidden_size=hidden,
        intermediate_size=mlp,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        num_key_value_heads=heads,
        head_dim=hidden // heads,
    )
    config = LlavaNextConfig(
        text_config=text,
        vision_config=cfg["vision_config"],
        image_token_index=cfg["image_token_index"],
        image_grid_pinpoints=cfg["image_grid_pinpoints"],
    )
    config._attn_implementation = "sdpa"
    torch.manual_seed(0)
    model = LlavaNextForConditionalGeneration(config).eval()
    model.generation_config.do_sample = False
    return LlavaNextAdapter(
        model, tiny.processor, model_id="bench/llava-next-scaled", revision=None
    )


def anyres_inputs(ad: object, hidden: int) -> object:
    """Base image (24x24, no newlines) + a 2x2 anyres grid of 24x24 tiles with newlines."""
    import torch

    from lrsvqa.models import VisionSegment, VisionTokens

    gen = torch.Generator().manual_seed(0)

    def tokens() -> VisionTokens:
        return VisionTokens(embeds=torch.randn(576, hidden, generator=gen), grid=(24, 24))

    segments = [VisionSegment(tokens(), kind="thumbnail", group=0)]
    for r, c in ((0, 0), (0, 1), (1, 0), (1, 1)):
        segments.append(VisionSegment(tokens(), offset=(24 * r, 24 * c), group=1, kind="tile"))
    return ad.build_inputs(segments, QUESTION, system=SYSTEM)  # type: ignore[attr-defined]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hidden", type=int, default=512)
    parser.add_argument("--heads", type=int, default=8)
    parser.add_argument("--mlp", type=int, default=1376)  # 11008 / 4096 x hidden
    parser.add_argument("--layers", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    import torch

    from lrsvqa.models.llava_next import LlavaNextAdapter
    from lrsvqa.pipeline.cost import paper_prefill_flops, prefill_flops
    from lrsvqa.prune.llm import LLMPruneConfig, generate_pruned, planned_tokens_per_layer

    configs = {
        "none": LLMPruneConfig("none"),
        "pdrop": LLMPruneConfig("pdrop", pdrop_ratio=0.5),  # boundaries L/4, L/2, 3L/4
        "fastv": LLMPruneConfig("fastv", fastv_k=2, fastv_ratio=0.5),
    }

    ad = build_adapter(args.hidden, args.heads, args.mlp, args.layers)
    inputs = anyres_inputs(ad, args.hidden)
    n_image = len(inputs.vision_positions)  # type: ignore[attr-defined]
    n_sep = len(inputs.separator_positions)  # type: ignore[attr-defined]
    length = inputs.length  # type: ignore[attr-defined]
    n_text = length - n_image - n_sep
    caps = ad.capabilities  # type: ignore[attr-defined]
    real = LlavaNextAdapter.capabilities_for(LlavaNextAdapter.reference_config())

    print(
        f"prompt: {length} tokens = {n_image} image + {n_sep} newlines + {n_text} text; "
        f"scaled LLM: {args.layers} layers, hidden {args.hidden}, {args.heads} heads, "
        f"MLP {args.mlp}; torch threads {torch.get_num_threads()}"
    )

    def flops_ratio(c: object, name: str, total: int, image: int, count=prefill_flops) -> float:  # type: ignore[no-untyped-def]
        plan = planned_tokens_per_layer(configs[name], c.num_layers, total, image)  # type: ignore[attr-defined]
        return count(c, plan) / count(c, [total] * c.num_layers)  # type: ignore[arg-type, attr-defined]

    real_len = 2880 + 48 + 60
    analytic = {
        name: (flops_ratio(real, name, real_len, 2880), flops_ratio(caps, name, length, n_image))
        for name in ("pdrop", "fastv")
    }
    paper = {  # the papers' convention (multiply-adds once, no GQA), same 7B shapes
        name: flops_ratio(real, name, real_len, 2880, paper_prefill_flops)
        for name in ("pdrop", "fastv")
    }

    def run(name: str) -> tuple[float, float, list[int]]:
        wall, cpu = time.perf_counter(), time.process_time()
        _, counts = generate_pruned(ad, inputs, configs[name], max_new_tokens=1)  # type: ignore[arg-type]
        return time.perf_counter() - wall, time.process_time() - cpu, counts

    for name in configs:  # warm-up
        run(name)
    wall: dict[str, list[float]] = {name: [] for name in configs}
    cpu: dict[str, list[float]] = {name: [] for name in configs}
    counts: dict[str, list[int]] = {}
    for _ in range(args.repeats):
        for name in configs:
            w, c, counts[name] = run(name)
            wall[name].append(w)
            cpu[name].append(c)

    def ratio(times: dict[str, list[float]], name: str) -> float:
        """Median over rounds of (this method / no dropping) within the same round."""
        return statistics.median(t / b for t, b in zip(times[name], times["none"], strict=True))

    print()
    print(
        "| method | tokens per layer (first, stage starts) | FLOPs ratio, LLaVA-NeXT-7B | "
        "same, papers' convention | FLOPs ratio, scaled | prefill wall s (median) | "
        "wall ratio | CPU-time ratio |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for name in configs:
        seen = counts[name]
        steps = [seen[0]] + [seen[i] for i in range(1, len(seen)) if seen[i] != seen[i - 1]]
        real_r, scaled_r = analytic.get(name, (1.0, 1.0))
        print(
            f"| {name} | {' → '.join(map(str, steps))} | {real_r:.3f} | "
            f"{paper.get(name, 1.0):.3f} | {scaled_r:.3f} | "
            f"{statistics.median(wall[name]):.2f} | {ratio(wall, name):.3f} | "
            f"{ratio(cpu, name):.3f} |"
        )
    pd_real = analytic["pdrop"][0]
    pd_time = ratio(wall, "pdrop")
    print()
    print(f"command: python {' '.join(sys.argv)}")
    print(
        f"PyramidDrop (lambda 0.5, 4 stages): FLOPs ratio {pd_real:.3f} on LLaVA-NeXT-7B shapes "
        f"(goal <= 0.48: {'met' if pd_real <= 0.48 else 'MISSED'}), measured prefill time "
        f"ratio {pd_time:.3f} (goal <= 0.6: {'met' if pd_time <= 0.6 else 'MISSED'})"
    )
    print(
        f"FastV (K=2, R=0.5): FLOPs ratio {analytic['fastv'][0]:.3f} on LLaVA-NeXT-7B shapes, "
        f"measured prefill time ratio {ratio(wall, 'fastv'):.3f}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
