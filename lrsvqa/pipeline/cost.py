"""The cost report: tokens, analytic FLOPs, wall time per stage, peak memory.

Two FLOPs conventions, always labelled:

*ours* (``flops``/``tflops``): a multiply-add is 2 FLOPs, every matrix counts, GQA
shrinks the key/value projections. Per decoder layer over n tokens with hidden size
d, key/value width d_kv and gated MLP width m (3 matrices):
    projections 2·n·(2·d² + 2·d·d_kv) + attention scores 2·2·n²·d + MLP 2·3·n·d·m,
plus the vision tower for every tile encoded and the focus passes.

*papers'* (``paper_flops``/``paper_tflops``): FastV / PyramidDrop / LRS-VQA count a
multiply-add once, per layer 4·n·d² + 2·n²·d + k·n·d·m with k the MLP's matrices (3 for
the gated MLPs of every supported LLM; FastV wrote 2 for a two-matrix FFN), no GQA, and
no vision tower. The LRS-VQA efficiency table (anyres 21,312 tokens -> 243.4 TFLOPs,
PyramidDrop 102, FastV 109 on Qwen2-7B shapes) is reproduced by exactly this reading
over the vision tokens; its 36.6 for the method also contains the RFM passes, which
the paper does not size (see README, "FLOPs"). So the papers' figure here is the LLM
prefill plus the focus passes, in their units.

Focus passes count what runs: the layers below the deepest read layer in full, and at
each read layer only the readout (k over all tokens, q and scores for the last token).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from lrsvqa.models.base import Capabilities


def layer_prefill_flops(caps: Capabilities, n: int, keys: int | None = None) -> float:
    """FLOPs of one decoder layer over ``n`` tokens attending to ``keys`` keys (default
    ``n``; more when earlier keys come from a KV cache)."""
    d = caps.hidden_size
    heads = max(caps.num_heads, 1)
    d_kv = d * max(caps.num_kv_heads, 1) // heads
    projections = 2 * n * (2 * d * d + 2 * d * d_kv)
    scores = 2 * 2 * n * (n if keys is None else keys) * d
    mlp = 2 * 3 * n * d * caps.intermediate_size
    return float(projections + scores + mlp)


def prefill_flops(caps: Capabilities, tokens_per_layer: Sequence[int]) -> float:
    """FLOPs of a prefill whose layer i sees ``tokens_per_layer[i]`` tokens."""
    return sum(layer_prefill_flops(caps, n) for n in tokens_per_layer)


#: Matrices of the MLP of every supported LLM (gate, up, down).
MLP_MATRICES = 3


def paper_layer_flops(caps: Capabilities, n: int, keys: int | None = None) -> float:
    """One decoder layer in the papers' convention: ``4nd² + 2n·keys·d + 3ndm``
    (multiply-adds counted once, no GQA; ``keys`` defaults to ``n``)."""
    d, m = caps.hidden_size, caps.intermediate_size
    return float(
        4 * n * d * d + 2 * n * (n if keys is None else keys) * d + MLP_MATRICES * n * d * m
    )


def paper_prefill_flops(caps: Capabilities, tokens_per_layer: Sequence[int]) -> float:
    """A prefill in the papers' convention (FastV / PyramidDrop / LRS-VQA tables)."""
    return sum(paper_layer_flops(caps, n) for n in tokens_per_layer)


def _readout_flops(caps: Capabilities, n: int, keys: int, *, paper: bool) -> float:
    # k projection of all n tokens, q of the last one, its scores against every key
    d = caps.hidden_size
    d_kv = d if paper else d * max(caps.num_kv_heads, 1) // max(caps.num_heads, 1)
    macs = n * d * d_kv + d * d + keys * d
    return float(macs if paper else 2 * macs)


def focus_pass_flops(
    caps: Capabilities,
    layers: Sequence[int],
    run: int,
    keys: int | None = None,
    *,
    paper: bool = False,
) -> float:
    """One focus pass reading ``layers``: layers ``0 .. max(layers) - 1`` in full over the
    ``run`` tokens that ran (attending to ``keys``, more with a cached prefix), plus the
    readout at each read layer. ``paper`` selects the papers' convention."""
    if not layers:
        return 0.0
    keys = run if keys is None else keys
    per_layer = paper_layer_flops if paper else layer_prefill_flops
    full = max(layers) * per_layer(caps, run, keys)
    return full + sum(_readout_flops(caps, run, keys, paper=paper) for _ in set(layers))


def peak_rss_mb() -> float:
    """This process's peak resident memory in MB (VmHWM; ru_maxrss as a fallback)."""
    status = Path("/proc/self/status")
    if status.exists():
        for line in status.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


@dataclass
class CostReport:
    """What one answer cost."""

    # Per level ("thumbnail", "0", "1"…): tokens of every tile the focus looked at, and
    # those the vision tower actually ran for this question (the rest came from the cache).
    vision_tokens: dict[str, int] = field(default_factory=dict)
    vision_tokens_encoded: dict[str, int] = field(default_factory=dict)
    tiles_encoded: dict[str, int] = field(default_factory=dict)
    cache_hits: int = 0  # tiles (thumbnail included) served from the per-scene cache
    focus_passes: list[int] = field(default_factory=list)  # sequence length of each focus pass
    focus_tokens_run: list[int] = field(default_factory=list)  # of those, tokens actually run
    focus_layers: int = 0  # decoder layers each focus pass runs in full (then the readout)
    llm_vision_tokens: int = 0  # vision tokens in the LLM input
    llm_prompt_tokens: int = 0  # whole prompt length
    llm_tokens_per_layer: list[int] = field(default_factory=list)
    new_tokens: int = 0
    vision_flops: float = 0.0
    focus_flops: float = 0.0
    llm_flops: float = 0.0
    # The papers' convention (see the module docstring): LLM prefill and focus passes.
    paper_llm_flops: float = 0.0
    paper_focus_flops: float = 0.0
    seconds: dict[str, float] = field(default_factory=dict)  # read, encode, focus, generate, total
    peak_rss_mb: float = 0.0

    @property
    def flops(self) -> float:
        """Our convention: vision tower + focus passes + LLM prefill, 2 FLOPs a multiply-add."""
        return self.vision_flops + self.focus_flops + self.llm_flops

    @property
    def tflops(self) -> float:
        return self.flops / 1e12

    @property
    def paper_flops(self) -> float:
        """The papers' convention: LLM prefill + focus passes, multiply-adds once."""
        return self.paper_llm_flops + self.paper_focus_flops

    @property
    def paper_tflops(self) -> float:
        return self.paper_flops / 1e12

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["tflops"] = self.tflops
        data["paper_tflops"] = self.paper_tflops
        return data

    def summary(self) -> str:
        looked = sum(self.vision_tokens.values())
        encoded = sum(self.vision_tokens_encoded.values())
        secs = self.seconds.get("total", 0.0)
        return (
            f"{self.llm_vision_tokens:,} vision tokens to the LLM ({looked:,} looked at, "
            f"{encoded:,} newly encoded, {self.cache_hits} tiles from cache), "
            f"{self.tflops:.3g} TFLOPs (papers' count {self.paper_tflops:.3g}), {secs:.2f} s, "
            f"peak RSS {self.peak_rss_mb:,.0f} MB"
        )
