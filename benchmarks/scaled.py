"""Randomly initialised models with real layer shapes but few layers, for CPU benchmarks."""

from __future__ import annotations

from pathlib import Path


def build_scaled_qwen2_vl(
    folder: str | Path,
    *,
    layers: int = 4,
    vision_layers: int = 4,
    hidden: int = 1536,
    intermediate: int = 8960,
    heads: int = 12,
    kv_heads: int = 2,
    vision_width: int = 1280,
    seed: int = 0,
) -> Path:
    """A Qwen2-VL-2B-shaped model (LLM hidden 1536, MLP 8960, 12/2 heads; vision width
    1280) with ``layers`` decoder layers, saved with the tiny tokenizer/processor."""
    import torch

    from lrsvqa.models import tiny

    torch.manual_seed(seed)
    (model_cls, config), processor = tiny._parts("qwen2_vl")
    t = config.text_config
    t.hidden_size, t.intermediate_size = hidden, intermediate
    t.num_hidden_layers, t.num_attention_heads, t.num_key_value_heads = layers, heads, kv_heads
    t.layer_types = ["full_attention"] * layers
    t.max_position_embeddings = 32768  # as Qwen2-VL-2B: `all` at native needs ~9,500 positions
    head_dim = hidden // heads
    t.rope_parameters["mrope_section"] = [head_dim // 8, 3 * head_dim // 16, 3 * head_dim // 16]
    v = config.vision_config
    v.depth, v.embed_dim, v.num_heads, v.hidden_size = vision_layers, vision_width, 16, hidden
    model = model_cls(config)
    tiny._enlarge_init(model, seed)
    folder = Path(folder)
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    return folder
