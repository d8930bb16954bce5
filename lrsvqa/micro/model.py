"""The micro model's architecture: a stock Qwen2-VL, small enough to train on 2 CPU cores.

LLM 128 wide x 4 layers (4 heads, 2 KV heads), vision tower 96 wide x 3 layers with the real
patch geometry (14 px patches merged 2x2: one LLM token per 28 px), 224 px tiles (8 x 8 LLM
tokens). Its byte-level BPE tokenizer is trained here on the synthetic world's questions and
answers, with Qwen's special tokens and chat template. The folder's config.json declares, for
lrsvqa, the tile size and the layer the focus reads (``"lrsvqa"`` dict).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

TILE = 224
FOCUS_LAYER = 1  # layer 0's query cannot depend on the question (see default_focus_layer)

TEXT = {
    "hidden_size": 128,
    "intermediate_size": 384,
    "num_hidden_layers": 4,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "max_position_embeddings": 8192,
    "tie_word_embeddings": False,
    # head_dim 32 -> 16 rotary frequencies split (t, h, w)
    "rope_parameters": {"rope_type": "default", "rope_theta": 10000.0, "mrope_section": [4, 6, 6]},
}
VISION = {
    "depth": 3,
    "embed_dim": 96,
    "hidden_size": 128,
    "num_heads": 4,
    "mlp_ratio": 2,
    "patch_size": 14,
    "spatial_merge_size": 2,
    "temporal_patch_size": 2,
}


def corpus() -> list[str]:
    """Text the tokenizer is trained on: every question template and answer word."""
    from lrsvqa.models.tiny import _CORPUS
    from lrsvqa.testing.world import CLASSES, PLURALS
    from lrsvqa.testing.world_questions import SUFFIX, answer_vocabulary

    lines = list(_CORPUS)
    refs = [
        "the largest",
        "the top-most",
        "the bottom-most",
        "the left-most",
        "the right-most",
        "the",
    ]
    for c in CLASSES:
        lines.append(
            f"Is there a {c} in this image? How many {PLURALS[c]} are there in this image?"
        )
        for ref in refs:
            lines.append(
                f"What color is {ref} {c}? What is the shape of {ref} {c}? Is {ref} {c} moving "
                f"or docked? What is the background of {ref} {c}?"
            )
        for d in CLASSES:
            lines.append(f"Are there more {PLURALS[c]} than {PLURALS[d]} in this image?")
    lines.append("What is the largest object in this image? Is this a rural or an urban area?")
    lines.append(SUFFIX)
    lines.append(" ".join(answer_vocabulary()))
    return lines


def text_config(width: int = 0) -> dict[str, Any]:
    """The LLM's config: ``TEXT``, or with ``width`` (> 0) that hidden size instead of 128,
    scaled as ``TEXT`` is (MLP 3x wide, 32-wide heads, half as many KV heads), so that the
    heads' M-RoPE sections stay those of ``TEXT``."""
    if not width:
        return dict(TEXT)
    if width % 64:
        from lrsvqa.errors import ConfigError

        raise ConfigError(f"--llm-width is {width}; give a multiple of 64 (e.g. 256)")
    heads = width // 32
    return dict(
        TEXT,
        hidden_size=width,
        intermediate_size=3 * width,
        num_attention_heads=heads,
        num_key_value_heads=heads // 2,
    )


def build(path: str | os.PathLike[str], seed: int = 0, llm_width: int = 0) -> Path:
    """Write an untrained micro model folder (random weights, trained tokenizer); with
    ``llm_width`` an LLM of that hidden size (``text_config``) and a vision merger that
    projects to it."""
    import torch
    from transformers import (
        Qwen2VLConfig,
        Qwen2VLForConditionalGeneration,
        Qwen2VLImageProcessorPil,
    )

    from lrsvqa.models.processors import Qwen2VLImageOnlyProcessor
    from lrsvqa.models.tiny import QWEN_SPECIAL, QWEN_TEMPLATE, _tokenizer

    tokenizer = _tokenizer(
        QWEN_SPECIAL, eos="<|im_end|>", pad="<|endoftext|>", bos=None, unk=None,
        corpus=corpus(), vocab_size=640,
    )  # fmt: skip
    ids: dict[str, int] = {t: tokenizer.convert_tokens_to_ids(t) for t in QWEN_SPECIAL}
    text = dict(
        text_config(llm_width),
        vocab_size=len(tokenizer),
        bos_token_id=ids["<|endoftext|>"],
        eos_token_id=ids["<|im_end|>"],
        pad_token_id=ids["<|endoftext|>"],
    )
    config = Qwen2VLConfig(
        text_config=text,
        vision_config=dict(VISION, hidden_size=text["hidden_size"]),
        image_token_id=ids["<|image_pad|>"],
        video_token_id=ids["<|video_pad|>"],
        vision_start_token_id=ids["<|vision_start|>"],
        vision_end_token_id=ids["<|vision_end|>"],
        tie_word_embeddings=False,
    )
    config.lrsvqa = {"tile_size": TILE, "focus_layers": [FOCUS_LAYER]}
    torch.manual_seed(seed)
    model = Qwen2VLForConditionalGeneration(config)
    model.generation_config.do_sample = False
    processor = Qwen2VLImageOnlyProcessor(
        image_processor=Qwen2VLImageProcessorPil(),
        tokenizer=tokenizer,
        chat_template=QWEN_TEMPLATE,
    )
    out = Path(path)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out, safe_serialization=True)
    processor.save_pretrained(out)
    return out


def parameter_count(model: Any) -> int:
    return sum(p.numel() for p in model.parameters())
