"""The LRS-VQA paper's efficiency table in both FLOPs conventions, from its token counts.

Usage: python benchmarks/bench_flops.py
Analytic (no model runs): Qwen2-7B LLM shapes, vision tokens only, LLM prefill only.
"""

from __future__ import annotations

from lrsvqa.bench.efficiency import SOURCE, efficiency_table


def main() -> None:
    rows = efficiency_table()
    base = rows[0]
    print(f"Published: {SOURCE}")
    print()
    print(
        "| method | tokens (first → last layer) | papers' convention TFLOPs | published | "
        "error | ours TFLOPs | ratio to anyres, papers' | ratio to anyres, ours |"
    )
    print("|---|---|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        print(
            f"| {r.method} | {r.tokens_per_layer[0]:,} → {r.tokens_per_layer[-1]:,} | "
            f"{r.paper_tflops:.1f} | {r.published_tflops:.1f} | {100 * r.relative_error:+.1f} % | "
            f"{r.our_tflops:.1f} | {r.paper_tflops / base.paper_tflops:.3f} | "
            f"{r.our_tflops / base.our_tflops:.3f} |"
        )
    for r in rows:
        if r.note:
            print(f"\n{r.method}: {r.note}")


if __name__ == "__main__":
    main()
