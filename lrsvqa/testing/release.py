"""A small synthetic checkpoint in the official LRS-VQA release layout, for converter tests.

Same state-dict keys and config fields as the release (``LlavaLlamaForCausalLM`` /
``LlavaQwenForCausalLM`` with ``mm_projector_type = mlp2x_gelu_after_distillpruner``): the
LLM's own keys (``model.layers.*``, ``model.embed_tokens``, ``model.norm``, ``lm_head``), the
CLIP tower under ``model.vision_tower.vision_tower.vision_model.*``, the MLP projector under
``model.mm_projector.mlp_projector.{0,2}`` and the RFM under
``model.mm_projector.token_pruner.{layers.*, norm}``; random weights of small size.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from lrsvqa.errors import ConfigError

LLM_LAYERS = 4
LLM_LAYER_LIST = [2, 3]  # the RFM stands in for these; its layers start from layer 1


def write_release_checkpoint(
    path: str | os.PathLike[str], llm: str = "llama", *, seed: int = 0, shards: int = 2
) -> Path:
    """Write a release-format checkpoint (weights, config, tokenizer) into ``path``."""
    import torch
    from safetensors.torch import save_file
    from transformers import (
        CLIPVisionConfig,
        CLIPVisionModel,
        LlamaConfig,
        LlamaForCausalLM,
        Qwen2Config,
        Qwen2ForCausalLM,
    )

    from lrsvqa.models import tiny

    if llm not in ("llama", "qwen2"):
        raise ConfigError(f"llm must be llama or qwen2, got {llm!r}")
    out = Path(path)
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    if llm == "llama":
        special = [t for t in tiny.LLAVA_SPECIAL if t not in ("<image>", "<pad>")]
        tok = tiny._tokenizer(special, eos="</s>", pad="<unk>", bos="<s>", unk="<unk>")
    else:
        special = [t for t in tiny.QWEN_SPECIAL if t not in ("<|image_pad|>", "<|video_pad|>")]
        tok = tiny._tokenizer(special, eos="<|im_end|>", pad="<|endoftext|>", bos=None, unk=None)
    tok.save_pretrained(out)
    text: dict[str, Any] = dict(
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=LLM_LAYERS,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=4096,
        vocab_size=len(tok) + 8,  # rows past the tokenizer, as released vocabularies have
        tie_word_embeddings=False,
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id,
    )
    lm_cls: Any = LlamaForCausalLM if llm == "llama" else Qwen2ForCausalLM
    lm_cfg: Any = LlamaConfig(**text) if llm == "llama" else Qwen2Config(**text)
    lm = lm_cls(lm_cfg)
    tiny._enlarge_init(lm, seed)
    vision_cfg = CLIPVisionConfig(
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=3,
        num_attention_heads=1,
        image_size=336,
        patch_size=14,
        hidden_act="quick_gelu",
    )
    vision = CLIPVisionModel(vision_cfg)
    tiny._enlarge_init(vision, seed + 1)
    gen = torch.Generator().manual_seed(seed + 2)

    def rand(*shape: int) -> torch.Tensor:
        return torch.randn(*shape, generator=gen) * shape[-1] ** -0.5

    state: dict[str, torch.Tensor] = {k: v.clone() for k, v in lm.state_dict().items()}
    for k, v in vision.state_dict().items():
        # The release saved CLIPVisionModel as transformers 4 named it: vision_model.*
        k = k if k.startswith("vision_model.") else f"vision_model.{k}"
        state[f"model.vision_tower.vision_tower.{k}"] = v.clone()
    hidden, mm_hidden = text["hidden_size"], vision_cfg.hidden_size
    proj = "model.mm_projector.mlp_projector"
    state[f"{proj}.0.weight"], state[f"{proj}.0.bias"] = rand(hidden, mm_hidden), rand(hidden)
    state[f"{proj}.2.weight"], state[f"{proj}.2.bias"] = rand(hidden, hidden), rand(hidden)
    # The RFM: copies of LLM layers [first - 1] + llm_layer_list, then "distilled" (moved).
    for i, src in enumerate([LLM_LAYER_LIST[0] - 1, *LLM_LAYER_LIST]):
        for k, v in lm.model.layers[src].state_dict().items():
            moved = v + 0.01 * torch.randn(v.shape, generator=gen) if v.ndim > 1 else v.clone()
            state[f"model.mm_projector.token_pruner.layers.{i}.{k}"] = moved
    state["model.mm_projector.token_pruner.norm.weight"] = torch.ones(hidden)
    # Old LLaVA checkpoints carry the rotary buffers; the converter must report them unused.
    state["model.layers.0.self_attn.rotary_emb.inv_freq"] = lm.model.rotary_emb.inv_freq.clone()
    _save_shards(state, out, shards, save_file)
    arch = "LlavaLlamaForCausalLM" if llm == "llama" else "LlavaQwenForCausalLM"
    config = lm_cfg.to_dict()
    config.update(
        {
            "architectures": [arch],
            "model_type": "llava_llama" if llm == "llama" else "llava_qwen",
            "mm_vision_tower": "openai/clip-vit-large-patch14-336",
            "mm_hidden_size": mm_hidden,
            "mm_projector_type": "mlp2x_gelu_after_distillpruner",
            "mm_vision_select_layer": -2,
            "mm_vision_select_feature": "patch",
            "mm_patch_merge_type": "flat",
            "mm_use_im_start_end": False,
            "mm_use_im_patch_token": False,
            "image_aspect_ratio": "slice",
            "slice_block_size": 336,
            "vision_patch_size": 14,
            "llm_layer_list": LLM_LAYER_LIST,
            "select_stu_state_layer": 1,
            "llm_use_last_text": True,
            "tokenizer_model_max_length": 4096,
            "tokenizer_padding_side": "right",
            "use_mm_proj": True,
        }
    )
    (out / "config.json").write_text(json.dumps(config, indent=1) + "\n")
    return out


def _save_shards(state: dict[str, Any], out: Path, shards: int, save_file: Any) -> None:
    names = sorted(state)
    per = -(-len(names) // shards)
    weight_map: dict[str, str] = {}
    for s in range(shards):
        file = f"model-{s + 1:05d}-of-{shards:05d}.safetensors"
        part = {n: state[n].contiguous() for n in names[s * per : (s + 1) * per]}
        save_file(part, str(out / file), metadata={"format": "pt"})
        weight_map.update(dict.fromkeys(part, file))
    index = {"metadata": {}, "weight_map": weight_map}
    (out / "model.safetensors.index.json").write_text(json.dumps(index, indent=1) + "\n")
