"""PyramidDrop position ids after a drop: kept as they were, or compacted as the release does."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch

from lrsvqa.errors import ConfigError
from lrsvqa.models import from_pretrained
from lrsvqa.prune.llm import LLMPruneConfig, generate_pruned

IMAGE = np.random.default_rng(3).integers(0, 256, size=(300, 448, 3), dtype=np.uint8)
QUESTION = "What is in the image? Answer the question using a single word or phrase."
NEW = 3


@pytest.fixture(scope="module")
def llava() -> Any:
    return from_pretrained("tiny/llava", device="cpu")


def _run(ad: Any, positions: str, ratio: float = 0.5) -> tuple[Any, list[int], list[list[Any]]]:
    """Generate; per layer, the (rows, cos) each attention call saw, prefill first."""
    lm = ad.language_model()
    seen: list[list[Any]] = [[] for _ in lm.layers]
    handles = []
    for i, layer in enumerate(lm.layers):

        def spy(module: Any, args: Any, kwargs: dict[str, Any], i: int = i) -> None:
            hidden = args[0] if args else kwargs["hidden_states"]
            seen[i].append((hidden.shape[1], kwargs["position_embeddings"][0].detach().clone()))

        handles.append(layer.self_attn.register_forward_pre_hook(spy, with_kwargs=True))
    config = LLMPruneConfig(
        "pdrop", pdrop_layers=(1, 2, 3), pdrop_ratio=ratio, pdrop_positions=positions
    )
    inputs = ad.build_inputs(ad.stock_segments(IMAGE), QUESTION)
    try:
        gen, per_layer = generate_pruned(ad, inputs, config, max_new_tokens=NEW)
    finally:
        for h in handles:
            h.remove()
    return (gen, inputs.length), per_layer, seen


def _cos(ad: Any, positions: torch.Tensor) -> torch.Tensor:
    lm = ad.language_model()
    x = torch.zeros(1, positions.numel(), lm.config.hidden_size)
    return lm.rotary_emb(x, positions.view(1, -1))[0]


def test_compact_renumbers_prefill_and_decoding(llava: Any) -> None:
    (gen, length), per_layer, seen = _run(llava, "compact")
    assert per_layer[0] == length and per_layer[1] < length and per_layer[3] < per_layer[2]
    for i, calls in enumerate(seen):
        rows, cos = calls[0]  # prefill: the rows present, numbered 0..n-1
        assert rows == per_layer[i]
        assert torch.allclose(cos, _cos(llava, torch.arange(rows)), atol=1e-6), i
        for t, (q, step_cos) in enumerate(calls[1:]):  # decoding: after this layer's rows
            assert q == 1
            assert torch.allclose(step_cos, _cos(llava, torch.tensor([rows + t])), atol=1e-6)
    assert len(seen[0]) == len(gen.token_ids)  # prefill + one call per later token


def test_keep_leaves_original_ids(llava: Any) -> None:
    (_, length), per_layer, seen = _run(llava, "keep")
    last = len(seen) - 1
    rows, cos = seen[last][0]
    assert rows == per_layer[last] < length
    assert not torch.allclose(cos, _cos(llava, torch.arange(rows)), atol=1e-4)
    for t, (_, step_cos) in enumerate(seen[last][1:]):
        assert torch.allclose(step_cos, _cos(llava, torch.tensor([length + t])), atol=1e-6)


def test_compact_without_a_drop_is_stock(llava: Any) -> None:
    (compact, _), _, _ = _run(llava, "compact", ratio=1.0)
    inputs = llava.build_inputs(llava.stock_segments(IMAGE), QUESTION)
    stock = llava.generate(inputs, max_new_tokens=NEW, do_sample=False)
    assert compact.token_ids == stock.token_ids


def test_compact_refused_for_mrope_and_recorded() -> None:
    qwen = from_pretrained("tiny/qwen2_vl", device="cpu")
    inputs = qwen.build_inputs(qwen.stock_segments(IMAGE), QUESTION)
    with pytest.raises(ConfigError, match="M-RoPE"):
        generate_pruned(qwen, inputs, LLMPruneConfig("pdrop", pdrop_positions="compact"))
    with pytest.raises(ConfigError, match="keep, compact"):
        LLMPruneConfig("pdrop", pdrop_positions="shift")
    assert LLMPruneConfig("pdrop", pdrop_positions="compact").to_dict()["pdrop_positions"] == (
        "compact"
    )
