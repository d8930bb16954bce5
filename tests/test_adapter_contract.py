"""Contract tests run over every registered adapter family, on tiny local models."""

from __future__ import annotations

import os

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")

import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from lrsvqa.errors import ConfigError, LrsvqaError, ModelError, ModelNotFoundError
from lrsvqa.models import VisionSegment, families, from_pretrained, tiny

FAMILIES = families()
QUESTION = "What is in the image? Answer the question using a single word or phrase."
NEW_TOKENS = 6


def _image(h: int, w: int, seed: int = 1) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, size=(h, w, 3), dtype=np.uint8)


# Non-square so that M-RoPE rows != cols and anyres needs unpadding.
IMAGE = _image(300, 448)


@pytest.fixture(scope="session")
def tiny_dirs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("tiny_models")
    return {f: tiny.build(f, root / f) for f in FAMILIES}


@pytest.fixture(scope="session")
def adapters(tiny_dirs: dict[str, Path]) -> dict[str, Any]:
    loaded = {f: from_pretrained(str(p), device="cpu") for f, p in tiny_dirs.items()}
    for ad in loaded.values():
        # Stock transformers adds its own output-capturing hooks on first use: take the
        # baseline after one stock call.
        ad.model.generate(**ad.stock_inputs(IMAGE, QUESTION), max_new_tokens=1, do_sample=False)
        ad.encode_images([IMAGE])
        _BASELINE[id(ad.model)] = _hook_state(ad.model)
    return loaded


@pytest.fixture(params=FAMILIES)
def family(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def _hook_state(model: torch.nn.Module) -> dict[str, tuple[tuple[int, ...], ...]]:
    return {
        name: (tuple(m._forward_hooks), tuple(m._forward_pre_hooks), tuple(m._backward_hooks))
        for name, m in model.named_modules()
    }


_BASELINE: dict[int, dict[str, tuple[tuple[int, ...], ...]]] = {}


def _no_hooks(model: torch.nn.Module) -> bool:
    """No hook added by us: the hook sets equal those the stock model had at load time."""
    return _hook_state(model) == _BASELINE[id(model)]


def test_auto_classes_load_tiny_folder(family: str, tiny_dirs: dict[str, Path]) -> None:
    from transformers import AutoModelForImageTextToText, AutoProcessor, ProcessorMixin

    from lrsvqa.models import adapter_class

    cls = adapter_class(family)
    proc = AutoProcessor.from_pretrained(tiny_dirs[family])
    model = AutoModelForImageTextToText.from_pretrained(tiny_dirs[family])
    assert isinstance(proc, ProcessorMixin) and isinstance(proc, cls.processor_class)
    assert type(model).__name__ == cls.model_class_name


def test_keep_all_equals_stock_generate(family: str, adapters: dict[str, Any]) -> None:
    ad = adapters[family]
    stock = ad.model.generate(
        **ad.stock_inputs(IMAGE, QUESTION),
        max_new_tokens=NEW_TOKENS,
        do_sample=False,
        return_dict_in_generate=True,
        output_logits=True,
    )
    n_prompt = ad.stock_inputs(IMAGE, QUESTION)["input_ids"].shape[1]
    stock_ids = stock.sequences[0, n_prompt:].tolist()
    inputs = ad.build_inputs(ad.stock_segments(IMAGE), QUESTION)
    assert inputs.length == n_prompt
    ours = ad.generate(inputs, max_new_tokens=NEW_TOKENS, output_scores=True)
    assert ours.token_ids == stock_ids
    assert ours.scores is not None and len(ours.scores) == len(stock.logits)
    for mine, theirs in zip(ours.scores, stock.logits, strict=True):
        assert (mine - theirs[0]).abs().max().item() <= 1e-5
    assert _no_hooks(ad.model)


def test_stock_token_counts_match(family: str, adapters: dict[str, Any]) -> None:
    ad = adapters[family]
    batch = ad.stock_inputs(IMAGE, QUESTION)
    inputs = ad.build_inputs(ad.stock_segments(IMAGE), QUESTION)
    assert torch.equal(inputs.input_ids.cpu(), batch["input_ids"].cpu())
    if ad.capabilities.mrope:
        stock_pos, _ = ad.model.model.get_rope_index(
            batch["input_ids"],
            mm_token_type_ids=batch["mm_token_type_ids"],
            image_grid_thw=batch["image_grid_thw"],
            attention_mask=batch["attention_mask"],
        )
        assert torch.equal(inputs.position_ids.cpu(), stock_pos.cpu())
    n_sep = len(inputs.separator_positions)
    assert len(inputs.vision_positions) + n_sep == int(
        (inputs.input_ids == ad.image_token_id).sum()
    )
    assert (n_sep > 0) == ad.capabilities.newline_tokens


def test_attention_readout_equals_eager(
    family: str, adapters: dict[str, Any], tiny_dirs: dict[str, Path]
) -> None:
    ad = adapters[family]
    assert ad.model.config._attn_implementation == "sdpa"
    eager = from_pretrained(str(tiny_dirs[family]), device="cpu", attn_implementation="eager")
    inputs = ad.build_inputs(ad.stock_segments(IMAGE), QUESTION)
    layers = [0, 2, 3]
    before = ad.model(
        inputs_embeds=inputs.inputs_embeds, position_ids=ad.generation_position_ids(inputs)
    ).logits
    got = ad.attention(inputs, layers)
    assert got.shape == (len(layers), ad.capabilities.num_heads, len(inputs.vision_positions))
    with torch.no_grad():
        out = eager.model(
            inputs_embeds=inputs.inputs_embeds,
            attention_mask=inputs.attention_mask,
            position_ids=eager.generation_position_ids(inputs),
            output_attentions=True,
        )
    for k, layer in enumerate(layers):
        want = out.attentions[layer][0, :, -1, inputs.vision_positions]
        assert (got[k] - want).abs().max().item() <= 1e-5
    assert _no_hooks(ad.model)
    after = ad.model(
        inputs_embeds=inputs.inputs_embeds, position_ids=ad.generation_position_ids(inputs)
    ).logits
    assert torch.equal(before, after)


def test_attention_stops_after_deepest_layer(family: str, adapters: dict[str, Any]) -> None:
    ad = adapters[family]
    inputs = ad.build_inputs(ad.stock_segments(IMAGE), QUESTION)
    ran: list[int] = []
    layers = ad.language_model().layers
    handles = [
        m.register_forward_pre_hook(lambda *_, i=i: ran.append(i)) for i, m in enumerate(layers)
    ]
    ad.clear_focus_cache()  # a cold call: the vision prefix runs, then the question
    try:
        ad.attention(inputs, [1])
        cold = list(ran)
        ran.clear()
        ad.attention(inputs, [1])
    finally:
        for h in handles:
            h.remove()
    assert cold == [0, 1, 0, 1] and ran == [0, 1]  # never a layer past the deepest
    assert _no_hooks(ad.model)


def test_cached_vision_prefix_gives_the_same_attention(
    family: str, adapters: dict[str, Any]
) -> None:
    """Focus passes for several questions about the same tiles reuse the prefix's KV cache."""
    from lrsvqa.models.hooks import read_attention

    ad = adapters[family]
    lm = ad.language_model()
    ad.clear_focus_cache()
    hits = ad.prefix_hits
    for question in (QUESTION, "Is there a bright ship near the coast on the left side?"):
        inputs = ad.build_inputs(ad.stock_segments(IMAGE), question)
        got = ad.attention(inputs, [1, 3])
        positions = ad.generation_position_ids(inputs)

        def run(inputs: Any = inputs, positions: Any = positions) -> Any:
            return lm(
                inputs_embeds=inputs.inputs_embeds,
                attention_mask=inputs.attention_mask,
                position_ids=positions,
                use_cache=False,
            )

        want = read_attention(lm.layers, [1, 3], run)[:, :, inputs.vision_positions]
        assert (got - want).abs().max().item() <= 1e-5
    assert ad.prefix_hits == hits + 1  # the second question reused the first one's prefix
    # Another image's prefix (another pyramid level) does not evict the first one.
    other = ad.build_inputs(ad.stock_segments(_image(300, 448, seed=7)), QUESTION)
    ad.attention(other, [1])
    ad.attention(ad.build_inputs(ad.stock_segments(IMAGE), "A third question?"), [1])
    assert ad.prefix_hits == hits + 2
    assert _no_hooks(ad.model)


def test_kept_subset_keeps_position_ids(family: str, adapters: dict[str, Any]) -> None:
    ad = adapters[family]
    segs = ad.stock_segments(IMAGE)
    full = ad.build_inputs(segs, QUESTION)
    gen = torch.Generator().manual_seed(0)
    sub = []
    for s in segs:
        keep = torch.arange(s.tokens.n) if s.keep is None else s.keep
        keep = keep[torch.rand(len(keep), generator=gen) < 0.3]
        sub.append(VisionSegment(s.tokens, keep=keep, offset=s.offset, group=s.group, kind=s.kind))
    part = ad.build_inputs(sub, QUESTION)
    full_key = {
        (int(s), int(i)): int(p)
        for s, i, p in zip(
            full.vision_segment, full.vision_index, full.vision_positions, strict=True
        )
    }
    assert len(part.vision_positions) == sum(len(s.keep) for s in sub if s.keep is not None)
    for s, i, p in zip(part.vision_segment, part.vision_index, part.vision_positions, strict=True):
        fp = full_key[(int(s), int(i))]
        assert torch.equal(part.inputs_embeds[0, p], full.inputs_embeds[0, fp])
        if ad.capabilities.mrope:
            assert torch.equal(part.position_ids[:, 0, p], full.position_ids[:, 0, fp])
    if ad.capabilities.mrope:  # text after the image keeps its ids too
        assert torch.equal(part.position_ids[:, 0, -1], full.position_ids[:, 0, -1])
    else:
        assert torch.equal(part.position_ids[0], torch.arange(part.length))
    assert set(part.separator_positions.tolist()).isdisjoint(part.vision_positions.tolist())
    gen_out = ad.generate(part, max_new_tokens=2)
    assert len(gen_out.token_ids) >= 1


def test_encode_is_batched_and_uncached(family: str, adapters: dict[str, Any]) -> None:
    """Encoded tiles are cached once, by the pipeline's per-scene session: the adapter
    encodes what it is given, batched, each image to its own tokens."""
    ad = adapters[family]
    tile = ad.capabilities.tile_size
    a, b = _image(tile, tile, seed=5), _image(tile, tile, seed=6)
    first = ad.encode([a, b, a])
    assert [t.grid for t in first] == [ad.capabilities.tokens_per_tile] * 3
    assert first[0] is not first[2]  # no hidden second cache
    assert (first[0].embeds - first[2].embeds).abs().max().item() <= 1e-5
    assert (first[0].embeds - first[1].embeds).abs().max().item() > 1e-4
    fresh = ad.encode_images([a])[0]
    assert (fresh.embeds - first[0].embeds).abs().max().item() <= 1e-5


def test_image_smaller_than_a_patch(family: str, adapters: dict[str, Any]) -> None:
    ad = adapters[family]
    with pytest.raises(LrsvqaError, match="smaller than one"):
        ad.encode([_image(8, 8)])
    with pytest.raises(ConfigError):
        ad.encode([np.zeros((64, 64), dtype=np.uint8)])


def test_unknown_family() -> None:
    with pytest.raises(ModelError, match="supported families"):
        from_pretrained("tiny/qwen2_vl", family="nope")
    with pytest.raises(ModelError, match="tiny/qwen2_vl"):
        from_pretrained("tiny/nope")


def test_tiny_model_id_builds_into_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LRSVQA_CACHE", str(tmp_path))
    ad = from_pretrained("tiny/llava", device="cpu")
    assert ad.family == "llava" and ad.revision == f"tiny-{tiny.TINY_VERSION}"
    assert (tmp_path / "tiny" / f"llava-{tiny.TINY_VERSION}" / "model.safetensors").is_file()
    again = from_pretrained("tiny/llava", device="cpu")
    for p, q in zip(ad.model.parameters(), again.model.parameters(), strict=True):
        assert torch.equal(p, q)


def test_unknown_model_offline_is_quick() -> None:
    start = time.monotonic()
    with pytest.raises(ModelNotFoundError, match="hf download nobody-xyz/no-such-model"):
        from_pretrained("nobody-xyz/no-such-model")
    assert time.monotonic() - start < 10


def test_text_only_model(tmp_path: Path) -> None:
    from transformers import Qwen2Config, Qwen2ForCausalLM

    cfg = Qwen2Config(
        vocab_size=64,
        hidden_size=16,
        intermediate_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        num_key_value_heads=1,
    )
    Qwen2ForCausalLM(cfg).save_pretrained(tmp_path)
    with pytest.raises(ModelError, match="qwen2_vl"):
        from_pretrained(str(tmp_path))


def test_cli_models_and_bad_input(capsys: pytest.CaptureFixture[str]) -> None:
    import json

    from lrsvqa.cli.main import main

    rc = main(["models", "--json"])
    out = capsys.readouterr()
    assert rc == 0, out.err
    listed = json.loads(out.out)
    assert [row["family"] for row in listed] == FAMILIES
    assert main(["models", "--family", "nope"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("lrsvqa: error:") and "\n" not in err
