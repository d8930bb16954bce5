"""Tiny, randomly initialised models of every supported family, built locally in seconds.

Each one is an instance of the family's real transformers class (same code paths as the
released checkpoints) with a 4-layer, 64-wide LLM, a 2-layer vision tower with the real patch
geometry, and a byte-level BPE tokenizer trained here with the family's special tokens and a
chat template written in this module. Their answers are meaningless: they exist so that
tests and demos run offline. ``from_pretrained("tiny/<family>")`` builds one on first use
into ``$LRSVQA_CACHE/tiny/<family>-<version>`` (default ``~/.cache/lrsvqa``).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from lrsvqa.errors import ConfigError

TINY_VERSION = "1"
TINY_PREFIX = "tiny/"

# Enough text to give the BPE merges for ordinary English prompts.
_CORPUS = [
    "You are a helpful assistant. What is in the image? Answer the question using a single "
    "word or phrase. How many vehicles are there? Is there a bridge, a ship, an airplane, a "
    "harbor, a road, a building, a tree or water? What color is the roof? yes no one two "
    "three four five six seven eight nine ten left right top bottom red green blue white "
    "black gray the a of in on at is are system user assistant USER ASSISTANT",
]

QWEN_TEMPLATE = (
    "{% for message in messages %}"
    "{% if loop.first and message['role'] != 'system' %}"
    "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n{% endif %}"
    "<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}"
    "{% else %}{% for content in message['content'] %}"
    "{% if content['type'] == 'image' %}<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif content['type'] == 'text' %}{{ content['text'] }}{% endif %}"
    "{% endfor %}{% endif %}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)

# Qwen-style turns with LLaVA's <image> placeholder, as in llava-onevision-qwen2.
ONEVISION_TEMPLATE = (
    "{% for message in messages %}"
    "<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}"
    "{% else %}{% for content in message['content'] %}"
    "{% if content['type'] == 'image' %}<image>\n"
    "{% elif content['type'] == 'text' %}{{ content['text'] }}{% endif %}"
    "{% endfor %}{% endif %}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)

# llava-hf's LLaVA-1.5 / 1.6 "USER: <image>\n... ASSISTANT:" layout.
LLAVA_TEMPLATE = (
    "{% for message in messages %}"
    "{% if message['role'] == 'system' %}"
    "{% if message['content'] is string %}{{ message['content'] }}"
    "{% else %}{{ message['content'][0]['text'] }}{% endif %} "
    "{% else %}{{ message['role'].upper() }}: "
    "{% if message['content'] is string %}{{ message['content'] }}"
    "{% else %}{% for content in message['content'] %}"
    "{% if content['type'] == 'image' %}<image>\n"
    "{% elif content['type'] == 'text' %}{{ content['text'] }}{% endif %}"
    "{% endfor %}{% endif %} {% endif %}{% endfor %}"
    "{% if add_generation_prompt %}ASSISTANT:{% endif %}"
)

QWEN_SPECIAL = [
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<|vision_start|>",
    "<|vision_end|>",
    "<|image_pad|>",
    "<|video_pad|>",
]
LLAVA_SPECIAL = ["<unk>", "<s>", "</s>", "<image>", "<pad>"]
ONEVISION_SPECIAL = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<image>", "<video>"]

TINY_FAMILIES = ("qwen2_vl", "qwen2_5_vl", "llava", "llava_next", "llava_onevision")

# Shared small LLM shape: 4 layers so focus can read layer >= 2.
_TEXT = {
    "hidden_size": 64,
    "intermediate_size": 128,
    "num_hidden_layers": 4,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "max_position_embeddings": 8192,
    "tie_word_embeddings": False,
}


def _tokenizer(
    special: list[str],
    *,
    eos: str,
    pad: str,
    bos: str | None,
    unk: str | None,
    corpus: list[str] | None = None,
    vocab_size: int = 512,
) -> Any:
    """A byte-level BPE tokenizer trained here on ``corpus`` (default: a few English lines)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(unk_token=unk))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=special,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator((corpus or _CORPUS) * 4, trainer)
    kwargs: dict[str, Any] = {"eos_token": eos, "pad_token": pad}
    if bos is not None:
        kwargs["bos_token"] = bos
    if unk is not None:
        kwargs["unk_token"] = unk
    return PreTrainedTokenizerFast(tokenizer_object=tok, **kwargs)


def _qwen(family: str) -> tuple[tuple[Any, Any], Any]:
    from transformers import (
        Qwen2_5_VLConfig,
        Qwen2_5_VLForConditionalGeneration,
        Qwen2VLConfig,
        Qwen2VLForConditionalGeneration,
        Qwen2VLImageProcessorPil,
    )

    from lrsvqa.models.processors import Qwen2_5_VLImageOnlyProcessor, Qwen2VLImageOnlyProcessor

    tok = _tokenizer(QWEN_SPECIAL, eos="<|im_end|>", pad="<|endoftext|>", bos=None, unk=None)
    ids = {t: tok.convert_tokens_to_ids(t) for t in QWEN_SPECIAL}
    text = dict(
        _TEXT,
        vocab_size=len(tok),
        # head_dim 16 -> 8 rotary frequencies split (t, h, w) = (2, 3, 3)
        rope_parameters={"rope_type": "default", "rope_theta": 10000.0, "mrope_section": [2, 3, 3]},
        bos_token_id=ids["<|endoftext|>"],
        eos_token_id=ids["<|im_end|>"],
        pad_token_id=ids["<|endoftext|>"],
    )
    common: dict[str, Any] = {
        "image_token_id": ids["<|image_pad|>"],
        "video_token_id": ids["<|video_pad|>"],
        "vision_start_token_id": ids["<|vision_start|>"],
        "vision_end_token_id": ids["<|vision_end|>"],
        "tie_word_embeddings": False,
    }
    model: tuple[Any, Any]
    if family == "qwen2_vl":
        vision: dict[str, Any] = {
            "depth": 2,
            "embed_dim": 32,
            "hidden_size": 64,
            "num_heads": 2,
            "mlp_ratio": 2,
            "patch_size": 14,
            "spatial_merge_size": 2,
            "temporal_patch_size": 2,
        }
        model = (
            Qwen2VLForConditionalGeneration,
            Qwen2VLConfig(text_config=text, vision_config=vision, **common),
        )
        proc_cls: Any = Qwen2VLImageOnlyProcessor
    else:
        vision = {
            "depth": 2,
            "hidden_size": 32,
            "intermediate_size": 64,
            "num_heads": 2,
            "out_hidden_size": 64,
            "patch_size": 14,
            "spatial_merge_size": 2,
            "temporal_patch_size": 2,
            "window_size": 112,
            "fullatt_block_indexes": [1],
        }
        model = (
            Qwen2_5_VLForConditionalGeneration,
            Qwen2_5_VLConfig(text_config=text, vision_config=vision, **common),
        )
        proc_cls = Qwen2_5_VLImageOnlyProcessor
    processor = proc_cls(
        image_processor=Qwen2VLImageProcessorPil(),
        tokenizer=tok,
        chat_template=QWEN_TEMPLATE,
    )
    return model, processor


def _clip_vision(image_size: int) -> dict[str, Any]:
    return {
        "model_type": "clip_vision_model",
        "hidden_size": 32,
        "intermediate_size": 64,
        "num_hidden_layers": 2,
        "num_attention_heads": 2,
        "image_size": image_size,
        "patch_size": 14,
        "projection_dim": 32,
    }


def _llava(family: str) -> tuple[tuple[Any, Any], Any]:
    from transformers import (
        CLIPImageProcessorPil,
        LlavaConfig,
        LlavaForConditionalGeneration,
        LlavaNextConfig,
        LlavaNextForConditionalGeneration,
        LlavaNextImageProcessorPil,
        LlavaNextProcessor,
        LlavaProcessor,
    )

    tok = _tokenizer(LLAVA_SPECIAL, eos="</s>", pad="<pad>", bos="<s>", unk="<unk>")
    ids = {t: tok.convert_tokens_to_ids(t) for t in LLAVA_SPECIAL}
    text = dict(
        _TEXT,
        model_type="llama",
        vocab_size=len(tok),
        bos_token_id=ids["<s>"],
        eos_token_id=ids["</s>"],
        pad_token_id=ids["<pad>"],
    )
    size = {"shortest_edge": 336}
    crop = {"height": 336, "width": 336}
    norm: dict[str, Any] = {
        "image_mean": [0.48145466, 0.4578275, 0.40821073],
        "image_std": [0.26862954, 0.26130258, 0.27577711],
    }
    model: tuple[Any, Any]
    if family == "llava":
        model = (
            LlavaForConditionalGeneration,
            LlavaConfig(
                vision_config=_clip_vision(336),
                text_config=text,
                image_token_index=ids["<image>"],
                image_seq_length=576,
            ),
        )
        processor: Any = LlavaProcessor(
            image_processor=CLIPImageProcessorPil(size=size, crop_size=crop, **norm),
            tokenizer=tok,
            patch_size=14,
            vision_feature_select_strategy="default",
            num_additional_image_tokens=1,
            chat_template=LLAVA_TEMPLATE,
        )
    else:
        pinpoints = [[336, 672], [672, 336], [672, 672], [1008, 336], [336, 1008]]
        model = (
            LlavaNextForConditionalGeneration,
            LlavaNextConfig(
                vision_config=_clip_vision(336),
                text_config=text,
                image_token_index=ids["<image>"],
                image_grid_pinpoints=pinpoints,
            ),
        )
        processor = LlavaNextProcessor(
            image_processor=LlavaNextImageProcessorPil(
                size=size, crop_size=crop, image_grid_pinpoints=pinpoints, **norm
            ),
            tokenizer=tok,
            patch_size=14,
            vision_feature_select_strategy="default",
            num_additional_image_tokens=1,
            chat_template=LLAVA_TEMPLATE,
        )
    return model, processor


def _onevision() -> tuple[tuple[Any, Any], Any]:
    from transformers import (
        LlavaOnevisionConfig,
        LlavaOnevisionForConditionalGeneration,
        LlavaOnevisionImageProcessorPil,
    )

    from lrsvqa.models.processors import LlavaOnevisionImageOnlyProcessor

    tok = _tokenizer(ONEVISION_SPECIAL, eos="<|im_end|>", pad="<|endoftext|>", bos=None, unk=None)
    ids = {t: tok.convert_tokens_to_ids(t) for t in ONEVISION_SPECIAL}
    text = dict(
        _TEXT,
        model_type="qwen2",
        vocab_size=len(tok),
        bos_token_id=ids["<|endoftext|>"],
        eos_token_id=ids["<|im_end|>"],
        pad_token_id=ids["<|endoftext|>"],
    )
    vision = {
        "model_type": "siglip_vision_model",
        "hidden_size": 32,
        "intermediate_size": 64,
        "num_hidden_layers": 2,
        "num_attention_heads": 2,
        "image_size": 384,
        "patch_size": 14,
        "vision_use_head": False,
    }
    pinpoints = [[384, 384], [384, 768], [768, 384], [768, 768], [384, 1152], [1152, 384]]
    model = (
        LlavaOnevisionForConditionalGeneration,
        LlavaOnevisionConfig(
            vision_config=vision,
            text_config=text,
            image_token_index=ids["<image>"],
            video_token_index=ids["<video>"],
            image_grid_pinpoints=pinpoints,
            vision_feature_layer=-1,
            vision_feature_select_strategy="full",
        ),
    )
    processor = LlavaOnevisionImageOnlyProcessor(
        image_processor=LlavaOnevisionImageProcessorPil(
            size={"height": 384, "width": 384},
            crop_size={"height": 384, "width": 384},
            image_grid_pinpoints=pinpoints,
            image_mean=[0.5, 0.5, 0.5],
            image_std=[0.5, 0.5, 0.5],
        ),
        tokenizer=tok,
        num_image_tokens=729,
        vision_feature_select_strategy="full",
        chat_template=ONEVISION_TEMPLATE,
    )
    return model, processor


def _parts(family: str) -> tuple[tuple[Any, Any], Any]:
    if family in ("qwen2_vl", "qwen2_5_vl"):
        return _qwen(family)
    if family in ("llava", "llava_next"):
        return _llava(family)
    return _onevision()


def config(family: str) -> Any:
    """The tiny model's config, without building weights."""
    if family not in TINY_FAMILIES:
        raise ConfigError(
            f"no tiny model for family {family!r}; choose one of {', '.join(TINY_FAMILIES)}"
        )
    return _parts(family)[0][1]


def build(family: str, path: str | os.PathLike[str], seed: int = 0) -> Path:
    """Build the tiny model of ``family`` into ``path`` (model, processor, tokenizer)."""
    import torch

    if family not in TINY_FAMILIES:
        raise ConfigError(
            f"no tiny model for family {family!r}; choose one of {', '.join(TINY_FAMILIES)}"
        )
    torch.manual_seed(seed)
    (model_cls, config), processor = _parts(family)
    model = model_cls(config)
    _enlarge_init(model, seed)
    model.generation_config.do_sample = False
    out = Path(path)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out, safe_serialization=True)
    processor.save_pretrained(out)
    (out / "lrsvqa_tiny.json").write_text(
        json.dumps({"family": family, "version": TINY_VERSION, "seed": seed}) + "\n"
    )
    return out


def _enlarge_init(model: Any, seed: int) -> None:
    """Re-draw weights with a larger spread so logits differ between tokens.

    The default init (std 0.02) gives near-uniform logits, where greedy ties would make
    the equality tests meaningless.
    """
    import torch

    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.ndim >= 2:
                p.copy_(torch.randn(p.shape, generator=gen) * (p.shape[-1] ** -0.5))
            elif "norm" in name and name.endswith("weight"):
                p.fill_(1.0)
            else:
                p.copy_(torch.randn(p.shape, generator=gen) * 0.02)


def cache_root() -> Path:
    root = os.environ.get("LRSVQA_CACHE")
    base = Path(root) if root else Path.home() / ".cache" / "lrsvqa"
    return base / "tiny"


def ensure(family: str) -> Path:
    """The folder of ``tiny/<family>``, built on first use."""
    folder = cache_root() / f"{family}-{TINY_VERSION}"
    if not (folder / "lrsvqa_tiny.json").is_file():
        tmp = folder.with_name(folder.name + f".tmp{os.getpid()}")
        build(family, tmp)
        try:
            tmp.rename(folder)
        except OSError:
            # Another process built it first; theirs is as good as ours.
            import shutil

            shutil.rmtree(tmp, ignore_errors=True)
    return folder
