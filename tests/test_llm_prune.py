"""PyramidDrop and FastV inside the LLM, over every adapter family, on tiny local models.

The reference for physical dropping keeps every row and, from each boundary layer on, hides
the dropped keys with a 4-D boolean attention mask handed to the decoder layers by forward
pre-hooks; ranking there reads the same masked attention. Equal logits prove that dropping
rows, slicing rotary/positions/masks and the per-layer KV caches change nothing else.
"""

from __future__ import annotations

import os

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")

import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from lrsvqa.errors import ConfigError
from lrsvqa.models import families, from_pretrained, tiny
from lrsvqa.models.attention import layer_attention
from lrsvqa.prune.llm import (
    LLMPruneConfig,
    default_pdrop_layers,
    generate_pruned,
    planned_tokens_per_layer,
)

FAMILIES = families()
QUESTION = "What is in the image? Answer the question using a single word or phrase."
NEW_TOKENS = 6
IMAGE = np.random.default_rng(1).integers(0, 256, size=(300, 448, 3), dtype=np.uint8)
PDROP = LLMPruneConfig("pdrop", pdrop_layers=(1, 2, 3), pdrop_ratio=0.5)
FASTV = LLMPruneConfig("fastv", fastv_k=2, fastv_ratio=0.5)


@pytest.fixture(scope="module")
def tiny_dirs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("tiny_models")
    return {f: tiny.build(f, root / f) for f in FAMILIES}


def _hook_state(model: torch.nn.Module) -> dict[str, tuple[tuple[int, ...], ...]]:
    return {
        name: (tuple(m._forward_hooks), tuple(m._forward_pre_hooks))
        for name, m in model.named_modules()
    }


_BASELINE: dict[int, dict[str, tuple[tuple[int, ...], ...]]] = {}


@pytest.fixture(scope="module")
def adapters(tiny_dirs: dict[str, Path]) -> dict[str, Any]:
    loaded = {f: from_pretrained(str(p), device="cpu") for f, p in tiny_dirs.items()}
    for ad in loaded.values():
        # Stock transformers adds its own hooks on first use: baseline after one stock call.
        ad.model.generate(**ad.stock_inputs(IMAGE, QUESTION), max_new_tokens=1, do_sample=False)
        _BASELINE[id(ad.model)] = _hook_state(ad.model)
    return loaded


@pytest.fixture(scope="module")
def eager(tiny_dirs: dict[str, Path]) -> dict[str, Any]:
    return {
        f: from_pretrained(str(p), device="cpu", attn_implementation="eager")
        for f, p in tiny_dirs.items()
    }


@pytest.fixture(params=FAMILIES)
def family(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def _inputs(ad: Any) -> Any:
    return ad.build_inputs(ad.stock_segments(IMAGE), QUESTION)


def _assert_same(got: Any, want: Any) -> None:
    assert got.token_ids == want.token_ids
    assert got.scores is not None and want.scores is not None
    assert len(got.scores) == len(want.scores)
    for mine, theirs in zip(got.scores, want.scores, strict=True):
        assert (mine - theirs).abs().max().item() <= 1e-5


# --------------------------------------------------------------------- reference
def _top(scores: torch.Tensor, candidates: torch.Tensor, keep: float) -> torch.Tensor:
    """Candidate positions to drop: all but the round-half-up ``keep`` share by score."""
    n = int(candidates.numel())
    k = min(n, math.floor(n * keep + 0.5))
    order = torch.sort(scores[candidates], descending=True, stable=True).indices
    return candidates[order[k:]]


class MaskedReference:
    """Every row stays; a layer's attention hides the keys dropped at or before it.

    ``rank(idx, layer, hidden, kwargs, present)`` returns the positions to drop at layer
    ``idx`` (or None); it sees the masked kwargs of that layer.
    """

    def __init__(self, ad: Any, length: int, rank: Callable[..., torch.Tensor | None]):
        self.lm = ad.language_model()
        self.length = length
        self.rank = rank
        self.calls = 0
        self.present = torch.ones(length, dtype=torch.bool)
        self.per_layer: list[torch.Tensor] = []

    def _mask(self, present: torch.Tensor, q: int, kv: int) -> torch.Tensor:
        cols = torch.ones(kv, dtype=torch.bool)
        cols[: self.length] = present
        causal = torch.ones(q, kv, dtype=torch.bool).tril(kv - q)
        # Additive float mask: eager attention adds the mask to its scores (a bool would add 1).
        keep = (causal & cols).view(1, 1, q, kv)
        return torch.zeros(keep.shape).masked_fill(~keep, torch.finfo(torch.float32).min)

    def _hook(self, idx: int) -> Callable[..., Any]:
        def hook(module: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
            hidden = args[0]
            q = hidden.shape[1]
            if self.calls == 1:
                masked = dict(kwargs, attention_mask=self._mask(self.present, q, q))
                drop = self.rank(idx, module, hidden, masked, self.present.clone())
                if drop is not None:
                    self.present[drop] = False
                self.per_layer.append(self.present.clone())
                return args, dict(kwargs, attention_mask=self._mask(self.present, q, q))
            kv = kwargs["cache"].layers[idx].get_seq_length() + q
            return args, dict(kwargs, attention_mask=self._mask(self.per_layer[idx], q, kv))

        return hook

    def _count(self, *_: Any) -> None:
        self.calls += 1

    def generate(self, ad: Any, inputs: Any) -> Any:
        handles = [self.lm.register_forward_pre_hook(self._count)]
        try:
            for i, layer in enumerate(self.lm.layers):
                handles.append(layer.register_forward_pre_hook(self._hook(i), with_kwargs=True))
            return ad.generate(inputs, max_new_tokens=NEW_TOKENS, output_scores=True)
        finally:
            for h in handles:
                h.remove()


def pdrop_reference(ad: Any, inputs: Any, boundaries: tuple[int, ...], keep: float) -> Any:
    vision = torch.zeros(inputs.length, dtype=torch.bool)
    vision[inputs.vision_positions] = True

    def rank(idx: int, layer: Any, hidden: Any, kwargs: Any, present: Any) -> Any:
        if idx not in boundaries:
            return None
        scores = layer_attention(layer, hidden, kwargs)[0].mean(0)
        return _top(scores, torch.nonzero(vision & present).flatten(), keep)

    return MaskedReference(ad, inputs.length, rank).generate(ad, inputs)


def fastv_reference(ad: Any, eager_ad: Any, inputs: Any, k: int, ratio: float, query: str) -> Any:
    """FastV with the ranking read from the eager model's own attention weights."""
    with torch.no_grad():
        out = eager_ad.model(
            inputs_embeds=inputs.inputs_embeds,
            attention_mask=inputs.attention_mask,
            position_ids=eager_ad.generation_position_ids(inputs),
            output_attentions=True,
        )
    weights = out.attentions[k - 1][0].float()  # (heads, L, L), layer K counting from 1
    scores = weights.mean(0).mean(0) if query == "all" else weights[:, -1].mean(0)
    drop = _top(scores, inputs.vision_positions, 1.0 - ratio)

    def rank(idx: int, *_: Any) -> Any:
        return drop if idx == k else None

    return MaskedReference(ad, inputs.length, rank).generate(ad, inputs)


def _expected_counts(inputs: Any, drops: dict[int, float], layers: int) -> list[int]:
    text = inputs.length - len(inputs.vision_positions)
    n = len(inputs.vision_positions)
    out = []
    for i in range(layers):
        if i in drops:
            n = math.floor(n * drops[i] + 0.5)
        out.append(text + n)
    return out


# ------------------------------------------------------------------------- tests
def test_keep_all_equals_stock_generate(family: str, adapters: dict[str, Any]) -> None:
    ad = adapters[family]
    batch = ad.stock_inputs(IMAGE, QUESTION)
    stock = ad.model.generate(
        **batch,
        max_new_tokens=NEW_TOKENS,
        do_sample=False,
        return_dict_in_generate=True,
        output_logits=True,
    )
    stock_ids = stock.sequences[0, batch["input_ids"].shape[1] :].tolist()
    inputs = _inputs(ad)
    for config in (
        LLMPruneConfig("pdrop", pdrop_layers=(1, 2, 3), pdrop_ratio=1.0),
        LLMPruneConfig("fastv", fastv_k=2, fastv_ratio=0.0),
        LLMPruneConfig("none"),
    ):
        got, counts = generate_pruned(
            ad, inputs, config, max_new_tokens=NEW_TOKENS, output_scores=True
        )
        assert got.token_ids == stock_ids, config
        assert got.scores is not None and len(got.scores) == len(stock.logits)
        for mine, theirs in zip(got.scores, stock.logits, strict=True):
            assert (mine - theirs[0]).abs().max().item() <= 1e-5
        assert counts == [inputs.length] * 4
    assert _hook_state(ad.model) == _BASELINE[id(ad.model)]


def test_pdrop_equals_masked_reference(family: str, adapters: dict[str, Any]) -> None:
    ad = adapters[family]
    inputs = _inputs(ad)
    got, counts = generate_pruned(ad, inputs, PDROP, max_new_tokens=NEW_TOKENS, output_scores=True)
    want = pdrop_reference(ad, inputs, (1, 2, 3), 0.5)
    _assert_same(got, want)
    assert counts == _expected_counts(inputs, {1: 0.5, 2: 0.5, 3: 0.5}, 4)
    n_image = len(inputs.vision_positions)
    assert counts == planned_tokens_per_layer(PDROP, 4, inputs.length, n_image)
    full = ad.generate(inputs, max_new_tokens=NEW_TOKENS, output_scores=True)
    assert full.scores is not None and got.scores is not None
    assert (full.scores[0] - got.scores[0]).abs().max().item() > 1e-3  # it did drop


def _check_fastv(ad: Any, eager_ad: Any, query: str) -> None:
    inputs = _inputs(ad)
    config = LLMPruneConfig("fastv", fastv_k=2, fastv_ratio=0.5, fastv_query=query)
    got, counts = generate_pruned(ad, inputs, config, max_new_tokens=NEW_TOKENS, output_scores=True)
    want = fastv_reference(ad, eager_ad, inputs, 2, 0.5, query)
    _assert_same(got, want)
    assert counts == _expected_counts(inputs, {2: 0.5}, 4)
    n_image = len(inputs.vision_positions)
    assert counts == planned_tokens_per_layer(config, 4, inputs.length, n_image)


def test_fastv_equals_masked_reference(
    family: str, adapters: dict[str, Any], eager: dict[str, Any]
) -> None:
    _check_fastv(adapters[family], eager[family], "all")


@pytest.mark.parametrize("name", ["qwen2_5_vl", "llava_next"])
def test_fastv_last_token_query(name: str, adapters: dict[str, Any], eager: dict[str, Any]) -> None:
    _check_fastv(adapters[name], eager[name], "last")


@pytest.mark.parametrize("name", ["qwen2_vl", "llava"])
def test_eager_attention_masks_are_sliced(name: str, eager: dict[str, Any]) -> None:
    # Eager attention hands every layer a 4-D mask: prefill and decoding must slice it.
    ad = eager[name]
    inputs = _inputs(ad)
    got, _ = generate_pruned(ad, inputs, PDROP, max_new_tokens=NEW_TOKENS, output_scores=True)
    _assert_same(got, pdrop_reference(ad, inputs, (1, 2, 3), 0.5))
    got, _ = generate_pruned(ad, inputs, FASTV, max_new_tokens=NEW_TOKENS, output_scores=True)
    _assert_same(got, fastv_reference(ad, ad, inputs, 2, 0.5, "all"))


def test_layers_see_and_cache_their_kept_rows(adapters: dict[str, Any]) -> None:
    ad = adapters["llava_next"]
    inputs = _inputs(ad)
    seen: list[list[tuple[int, int]]] = [[] for _ in ad.language_model().layers]

    def record(idx: int) -> Callable[..., None]:
        def hook(module: Any, args: Any, kwargs: Any, output: Any) -> None:
            cache = kwargs["cache"].layers[idx].get_seq_length()
            seen[idx].append((int(args[0].shape[1]), cache))

        return hook

    handles = [
        layer.register_forward_hook(record(i), with_kwargs=True)
        for i, layer in enumerate(ad.language_model().layers)
    ]
    try:
        gen, counts = generate_pruned(ad, inputs, PDROP, max_new_tokens=3)
    finally:
        for h in handles:
            h.remove()
    steps = len(gen.token_ids)
    assert steps == 3
    for idx, rows in enumerate(seen):
        # prefill: the kept rows; then one new row per step, appended to this layer's cache
        assert rows[0] == (counts[idx], counts[idx])
        assert rows[1:] == [(1, counts[idx] + s) for s in range(1, steps)]
    # separators (newlines) stay: the deepest layer holds all text + separators
    text = inputs.length - len(inputs.vision_positions)
    assert len(inputs.separator_positions) > 0 and counts[-1] > text


def test_stock_model_unchanged_afterwards(family: str, adapters: dict[str, Any]) -> None:
    ad = adapters[family]
    inputs = _inputs(ad)
    before = ad.generate(inputs, max_new_tokens=3, output_scores=True)
    generate_pruned(ad, inputs, PDROP, max_new_tokens=3)
    generate_pruned(ad, inputs, FASTV, max_new_tokens=3)
    assert _hook_state(ad.model) == _BASELINE[id(ad.model)]
    _assert_same(ad.generate(inputs, max_new_tokens=3, output_scores=True), before)


def test_hooks_removed_when_generate_fails(
    adapters: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    ad = adapters["qwen2_vl"]

    def boom(*_: Any, **__: Any) -> Any:
        raise RuntimeError("boom")

    monkeypatch.setattr(ad, "generate", boom)
    with pytest.raises(RuntimeError, match="boom"):
        generate_pruned(ad, _inputs(ad), PDROP)
    assert _hook_state(ad.model) == _BASELINE[id(ad.model)]


@pytest.mark.parametrize(
    "kwargs",
    [
        {"method": "pdrop", "pdrop_ratio": 0.0},
        {"method": "pdrop", "pdrop_ratio": 1.5},
        {"method": "fastv", "fastv_ratio": 1.0},
        {"method": "fastv", "fastv_ratio": -0.1},
        {"method": "fastv", "fastv_k": 0},
        {"method": "fastv", "fastv_query": "middle"},
        {"method": "pdrop", "pdrop_layers": (2, 2)},
        {"method": "pdrop", "pdrop_layers": (3, 1)},
        {"method": "pdrop", "pdrop_layers": (0, 2)},
        {"method": "pdrop", "pdrop_layers": ()},
        {"method": "nope"},
    ],
)
def test_bad_config(kwargs: dict[str, Any]) -> None:
    with pytest.raises(ConfigError):
        LLMPruneConfig(**kwargs).validate(4)


def test_config_against_depth(adapters: dict[str, Any]) -> None:
    with pytest.raises(ConfigError, match="4 decoder layers"):
        LLMPruneConfig("pdrop", pdrop_layers=(1, 2, 4)).validate(4)
    with pytest.raises(ConfigError, match="4 decoder layers"):
        LLMPruneConfig("fastv", fastv_k=4).validate(4)
    ad = adapters["llava"]
    with pytest.raises(ConfigError):
        generate_pruned(ad, _inputs(ad), LLMPruneConfig("pdrop", pdrop_layers=(2, 5)))
    assert _hook_state(ad.model) == _BASELINE[id(ad.model)]
    LLMPruneConfig("pdrop").validate(4)
    assert default_pdrop_layers(32) == (8, 16, 24)
    assert default_pdrop_layers(28) == (7, 14, 21)
    assert default_pdrop_layers(4) == (1, 2, 3)
    config = LLMPruneConfig("pdrop", pdrop_layers=(2, 3), pdrop_ratio=0.25)
    assert LLMPruneConfig(**config.to_dict()) == config
    assert config.to_dict()["pdrop_layers"] == [2, 3]
