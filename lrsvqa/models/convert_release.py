"""Turn an official LRS-VQA release checkpoint into a stock transformers LLaVA folder.

The release (VisionXLab/LRS-VQA) is a liuhaotian-style LLaVA checkpoint: a Vicuna-7B
(``LlavaLlamaForCausalLM``) or Qwen2-7B (``LlavaQwenForCausalLM``) LLM, a CLIP-336 vision
tower, and an ``mm_projector`` of type ``mlp2x_gelu_after_distillpruner`` that holds both
the 2-layer MLP projector (``mm_projector.mlp_projector.{0,2}``) and the distilled Region
Focus Module (``mm_projector.token_pruner.layers.*``: ``len(llm_layer_list) + 1`` decoder
layers of the LLM's own shape, the first initialised from LLM layer ``llm_layer_list[0] - 1``).

``convert_release`` maps every source tensor exactly once, onto
- the stock ``LlavaForConditionalGeneration`` keys (LLM, vision tower, projector), shapes
  checked against the stock model built on the meta device;
- the RFM's decoder layers (``layers.{i}.*`` of ``lrsvqa.focus.distilled``), returned for
  ``lrsvqa.focus.release.write_release_rfm``;
or reports it as unused with the reason (rotary ``inv_freq`` buffers, which are recomputed;
the RFM's final norm, which its attention readout never reads). A tensor it cannot place, or
a stock tensor nothing maps to, is a ``ModelError`` naming it.

The prompt follows the release's ``eval/model_rsvqa.py``: conversation ``vicuna_v1`` for the
Vicuna LLM, ``qwen_1_5`` for Qwen2, with the question followed by a newline.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

from lrsvqa.errors import ConfigError, ModelError

RELEASE_ARCHITECTURES = {
    "LlavaLlamaForCausalLM": "llama",
    "LlavaQwenForCausalLM": "qwen2",
    "LlavaQwen2ForCausalLM": "qwen2",
}
IMAGE_TOKEN = "<image>"
NEWLINE_FILE = "image_newline.safetensors"  # the release's learned newline (spatial_unpad)
VICUNA_SYSTEM = (
    "A chat between a curious user and an artificial intelligence assistant. "
    "The assistant gives helpful, detailed, and polite answers to the user's questions."
)
# conv_vicuna_v1: system + " " + "USER: " + "<image>\n" + question + "\n" + " " + "ASSISTANT:"
VICUNA_TEMPLATE = (
    "{% set system = namespace(text='" + VICUNA_SYSTEM.replace("'", "\\'") + "') %}"
    "{% for message in messages %}{% if message['role'] == 'system' %}"
    "{% set system.text = message['content'] if message['content'] is string "
    "else message['content'][0]['text'] %}{% endif %}{% endfor %}"
    "{{ system.text }} "
    "{% for message in messages %}{% if message['role'] == 'user' %}USER: "
    "{% for content in message['content'] %}{% if content['type'] == 'image' %}<image>\n"
    "{% endif %}{% endfor %}{% for content in message['content'] %}"
    "{% if content['type'] == 'text' %}{{ content['text'] }}\n{% endif %}{% endfor %} "
    "{% elif message['role'] == 'assistant' %}ASSISTANT: {{ message['content'][0]['text'] }}</s>"
    "{% endif %}{% endfor %}{% if add_generation_prompt %}ASSISTANT:{% endif %}"
)
# conv_qwen (qwen_1_5): ChatML with the default system prompt.
QWEN_TEMPLATE = (
    "{% if messages[0]['role'] != 'system' %}<|im_start|>system\nYou are a helpful assistant."
    "<|im_end|>\n{% endif %}{% for message in messages %}<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}{% else %}"
    "{% for content in message['content'] %}{% if content['type'] == 'image' %}{{ '<image>\\n' }}"
    "{% endif %}{% endfor %}{% for content in message['content'] %}"
    "{% if content['type'] == 'text' %}{{ content['text'] }}"
    "{% if message['role'] == 'user' %}{{ '\\n' }}{% endif %}{% endif %}{% endfor %}{% endif %}"
    "<|im_end|>\n{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
_LLAVA_ONLY = re.compile(
    r"^(mm_|image_|tune_|freeze_|use_mm|slice_|llm_|select_stu|upscale|tokenizer_)"
)


@dataclass
class ReleaseRfm:
    """The distilled RFM of a release: decoder-layer tensors and the layers it stands for."""

    state: dict[str, Any]  # lrsvqa RFM keys: layers.{i}.self_attn.q_proj.weight, ...
    n_layers: int
    teacher_layers: tuple[int, ...]
    init_layers: tuple[int, ...]  # the LLM layers the release initialised them from


@dataclass
class ConversionReport:
    """Where every source tensor went."""

    source: str
    llm: str  # llama | qwen2
    mapped: dict[str, str] = field(default_factory=dict)  # source -> stock key
    rfm: dict[str, str] = field(default_factory=dict)  # source -> RFM key
    unused: dict[str, str] = field(default_factory=dict)  # source -> why
    vision_tower_from: str = "checkpoint"
    image_token_id: int = -1

    def to_dict(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "llm": self.llm,
            "tensors": len(self.mapped) + len(self.rfm) + len(self.unused),
            "mapped": len(self.mapped),
            "rfm": len(self.rfm),
            "unused": dict(self.unused),
            "vision_tower_from": self.vision_tower_from,
            "image_token_id": self.image_token_id,
        }


# --------------------------------------------------------------------------- reading
def read_release_config(src: Path) -> dict[str, Any]:
    path = src / "config.json"
    try:
        cfg = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise ConfigError(
            f"{path} cannot be read: {exc}; give the release checkpoint folder"
        ) from None
    arch = (cfg.get("architectures") or [None])[0]
    if arch not in RELEASE_ARCHITECTURES:
        raise ConfigError(
            f"{path}: architecture {arch!r} is not an LRS-VQA release "
            f"({', '.join(RELEASE_ARCHITECTURES)}); stock transformers folders need no conversion"
        )
    select = cfg.get("mm_vision_select_layer", -2)
    if not isinstance(select, int):
        raise ConfigError(
            f"{path}: mm_vision_select_layer {select!r} (one projector per vision layer) has no "
            "stock LLaVA equivalent; only single-layer checkpoints convert"
        )
    layers = cfg.get("llm_layer_list")
    if isinstance(layers, str):
        layers = json.loads(layers)
    if not layers or not all(isinstance(v, int) for v in layers):
        raise ConfigError(f"{path}: llm_layer_list {layers!r} must be a list of LLM layer indices")
    cfg["llm_layer_list"] = list(layers)
    for key in ("mm_hidden_size", "hidden_size", "num_hidden_layers", "vocab_size"):
        if not isinstance(cfg.get(key), int):
            raise ConfigError(f"{path} has no integer {key!r}")
    return cfg


def source_tensors(folder: Path) -> dict[str, Callable[[], Any]]:
    """Name -> loader for every tensor of a checkpoint folder (safetensors or .bin shards)."""
    import torch
    from safetensors import safe_open

    out: dict[str, Callable[[], Any]] = {}
    files = sorted(folder.glob("*.safetensors")) or sorted(folder.glob("pytorch_model*.bin"))
    if not files:
        raise ConfigError(f"{folder} holds no *.safetensors or pytorch_model*.bin weights")
    for file in files:
        if file.suffix == ".safetensors":
            with safe_open(str(file), framework="pt") as f:
                for name in f.keys():  # noqa: SIM118 - safe_open has no __iter__
                    out[name] = partial(_read_safetensor, file, name)
        else:
            blob = torch.load(file, map_location="cpu", weights_only=True)
            for name, tensor in blob.items():
                out[name] = partial(_identity, tensor)
    return out


def _identity(tensor: Any) -> Any:
    return tensor


def _read_safetensor(file: Path, name: str) -> Any:
    from safetensors import safe_open

    with safe_open(str(file), framework="pt") as f:
        return f.get_tensor(name)


# --------------------------------------------------------------------------- mapping
def map_name(name: str, n_rfm: int) -> tuple[str, str]:
    """(kind, target) for one source tensor: kind is stock, rfm or unused (target = why)."""
    if name.endswith("rotary_emb.inv_freq"):
        return "unused", "rotary inv_freq buffer (recomputed from the config)"
    m = re.fullmatch(r"model\.mm_projector\.token_pruner\.layers\.(\d+)\.(.+)", name)
    if m:
        if int(m.group(1)) >= n_rfm:
            raise ModelError(f"unexpected RFM tensor {name}: the RFM has {n_rfm} layers")
        return "rfm", f"layers.{m.group(1)}.{m.group(2)}"
    if name == "model.image_newline":  # spatial_unpad's newline: the preset's row separator
        return "extra", "image_newline"
    if name == "model.mm_projector.token_pruner.norm.weight":
        return "unused", "RFM final norm (the focus readout reads attention, not hidden states)"
    m = re.fullmatch(r"model\.mm_projector\.(?:mlp_projector\.)?([02])\.(weight|bias)", name)
    if m:
        return (
            "stock",
            f"model.multi_modal_projector.linear_{1 if m.group(1) == '0' else 2}.{m.group(2)}",
        )
    m = re.fullmatch(r"model\.vision_tower\.vision_tower\.vision_model\.(.+)", name)
    if m:
        return "stock", f"model.vision_tower.{m.group(1)}"
    if name == "lm_head.weight":
        return "stock", name
    m = re.fullmatch(r"model\.(embed_tokens\.weight|norm\.weight|layers\.\d+\..+)", name)
    if m:
        return "stock", f"model.language_model.{m.group(1)}"
    raise ModelError(f"unexpected tensor {name} in the release checkpoint; lrsvqa cannot place it")


def _vision_config(
    tensors: dict[str, Callable[[], Any]], vision_tower: Path | None
) -> tuple[dict[str, Any], str]:
    if vision_tower is not None:
        cfg = json.loads((vision_tower / "config.json").read_text())
        cfg = cfg.get("vision_config", cfg)
        cfg["model_type"] = "clip_vision_model"
        return cfg, str(vision_tower)
    prefix = "model.vision_tower.vision_tower.vision_model."
    if prefix + "embeddings.patch_embedding.weight" not in tensors:
        raise ModelError(
            "the release checkpoint holds no vision tower tensors; pass --vision-tower with the "
            "CLIP folder its config names (mm_vision_tower, e.g. openai/clip-vit-large-patch14-336)"
        )
    patch = tensors[prefix + "embeddings.patch_embedding.weight"]()
    pos = tensors[prefix + "embeddings.position_embedding.weight"]()
    fc1 = tensors[prefix + "encoder.layers.0.mlp.fc1.weight"]()
    depth = 1 + max(
        int(m.group(1))
        for n in tensors
        if (m := re.match(re.escape(prefix) + r"encoder\.layers\.(\d+)\.", n))
    )
    hidden, side = int(patch.shape[0]), int(patch.shape[-1])
    grid = round((int(pos.shape[0]) - 1) ** 0.5)
    return {
        "model_type": "clip_vision_model",
        "hidden_size": hidden,
        "intermediate_size": int(fc1.shape[0]),
        "num_hidden_layers": depth,
        "num_attention_heads": max(1, hidden // 64),  # CLIP's head width is 64
        "patch_size": side,
        "image_size": grid * side,
        "hidden_act": "quick_gelu",
        "layer_norm_eps": 1e-5,
    }, "checkpoint"


def _text_config(cfg: dict[str, Any], llm: str, vocab_rows: int) -> dict[str, Any]:
    text = {k: v for k, v in cfg.items() if not _LLAVA_ONLY.match(k)}
    for key in ("architectures", "auto_map", "_name_or_path", "transformers_version"):
        text.pop(key, None)
    text["model_type"] = llm
    text["vocab_size"] = vocab_rows
    return text


# --------------------------------------------------------------------------- writing
def _tokenizer(src: Path, llm: str) -> Any:
    from transformers import AddedToken, AutoTokenizer

    from lrsvqa.models.loading import check_tokenizer_files

    check_tokenizer_files(src)
    try:
        tok = AutoTokenizer.from_pretrained(src, trust_remote_code=False)
    except (OSError, ValueError) as exc:
        raise ModelError(f"cannot load the tokenizer of {src}: {exc}") from None
    if tok.convert_tokens_to_ids(IMAGE_TOKEN) in (None, tok.unk_token_id):
        tok.add_tokens([AddedToken(IMAGE_TOKEN, special=True, normalized=False)])
    if tok.pad_token is None:
        tok.pad_token = tok.unk_token if llm == "llama" else "<|endoftext|>"
    return tok


def convert_release(
    src: str | Path, out: str | Path, *, vision_tower: str | Path | None = None
) -> tuple[ConversionReport, ReleaseRfm]:
    """Write ``out`` (a stock LLaVA folder) from release checkpoint ``src``; return the report
    and the RFM tensors (not yet written)."""
    import torch
    from safetensors.torch import save_file
    from transformers import (
        CLIPImageProcessorPil,
        LlavaConfig,
        LlavaForConditionalGeneration,
        LlavaProcessor,
    )

    src, out = Path(src), Path(out)
    cfg = read_release_config(src)
    llm = RELEASE_ARCHITECTURES[cfg["architectures"][0]]
    tensors = source_tensors(src)
    vision_dir = Path(vision_tower) if vision_tower is not None else None
    if vision_dir is not None:
        tower = source_tensors(vision_dir)
        prefixed = any(n.startswith("vision_model.") for n in tower)
        for name, load in tower.items():
            if prefixed and not name.startswith("vision_model."):
                continue  # a full CLIPModel: its text tower and projections are not ours
            short = name.removeprefix("vision_model.")
            tensors.setdefault("model.vision_tower.vision_tower.vision_model." + short, load)
    teacher = tuple(cfg["llm_layer_list"])
    n_rfm = len(teacher) + 1
    report = ConversionReport(source=str(src), llm=llm)
    plan: dict[str, str] = {}
    rfm_state: dict[str, Any] = {}
    extras: dict[str, Any] = {}
    for name in sorted(tensors):
        kind, target = map_name(name, n_rfm)
        if kind == "unused":
            report.unused[name] = target
        elif kind == "rfm":
            report.rfm[name] = target
            rfm_state[target] = tensors[name]()
        elif kind == "extra":
            extras[target] = tensors[name]().contiguous()
            report.mapped[name] = f"{NEWLINE_FILE}:{target}"
        else:
            plan[name] = target
    got_layers = {int(k.split(".")[1]) for k in rfm_state}
    if got_layers != set(range(n_rfm)):
        missing = sorted(set(range(n_rfm)) - got_layers)
        raise ModelError(
            f"{src}: the RFM (llm_layer_list {list(teacher)}) needs {n_rfm} token_pruner layers; "
            f"layer {missing[0] if missing else '?'} is missing"
        )

    layer0 = {
        n.removeprefix("model.layers.0."): tensors[n]
        for n in tensors
        if n.startswith("model.layers.0.") and not n.endswith("inv_freq")
    }
    for i in range(n_rfm):
        for suffix, load in sorted(layer0.items()):
            key = f"layers.{i}.{suffix}"
            name = f"model.mm_projector.token_pruner.{key}"
            if key not in rfm_state:
                raise ModelError(f"{src}: missing RFM tensor {name}")
            if tuple(rfm_state[key].shape) != tuple(load().shape):
                raise ModelError(
                    f"tensor {name} has shape {tuple(rfm_state[key].shape)}; an LLM layer's "
                    f"{suffix} is {tuple(load().shape)}"
                )

    tok = _tokenizer(src, llm)
    image_id = int(tok.convert_tokens_to_ids(IMAGE_TOKEN))
    report.image_token_id = image_id
    embed = (
        tensors["model.embed_tokens.weight"]() if "model.embed_tokens.weight" in tensors else None
    )
    if embed is None:
        raise ModelError(f"{src}: missing tensor model.embed_tokens.weight")
    rows = max(int(embed.shape[0]), image_id + 1)
    vision_cfg, report.vision_tower_from = _vision_config(tensors, vision_dir)
    config = LlavaConfig(
        text_config=_text_config(cfg, llm, rows),
        vision_config=vision_cfg,
        image_token_index=image_id,
        vision_feature_layer=int(cfg.get("mm_vision_select_layer", -2)),
        vision_feature_select_strategy="default"
        if cfg.get("mm_vision_select_feature", "patch") == "patch"
        else "full",
        projector_hidden_act="gelu",
        image_seq_length=(vision_cfg["image_size"] // vision_cfg["patch_size"]) ** 2,
        tie_word_embeddings=bool(cfg.get("tie_word_embeddings", False)),
    )
    with torch.device("meta"):
        stock = LlavaForConditionalGeneration(config)
    want = {k: tuple(v.shape) for k, v in stock.state_dict().items()}
    if config.tie_word_embeddings:
        want.pop("lm_head.weight", None)
    state: dict[str, Any] = {}
    for name, target in plan.items():
        if target not in want:
            raise ModelError(f"unexpected tensor {name}: the stock model has no {target}")
        if target in state:
            raise ModelError(f"{name} maps onto {target} twice")
        tensor = tensors[name]()
        if target in ("model.language_model.embed_tokens.weight", "lm_head.weight"):
            tensor = _pad_rows(tensor, rows)
        if tuple(tensor.shape) != want[target]:
            raise ModelError(
                f"tensor {name} has shape {tuple(tensor.shape)}; the stock {target} needs "
                f"{want[target]} (check the config's sizes)"
            )
        state[target] = tensor.contiguous()
        report.mapped[name] = target
    unmapped = sorted(set(want) - set(state))
    if unmapped:
        raise ModelError(
            f"{src}: missing tensor for {unmapped[0]} ({len(unmapped)} stock tensors unmapped)"
        )

    out.mkdir(parents=True, exist_ok=True)
    save_file(state, str(out / "model.safetensors"), metadata={"format": "pt"})
    if extras:  # stock LLaVA-1.5 has no image_newline; --preset lrsvqa-release reads it here
        save_file(extras, str(out / NEWLINE_FILE), metadata={"format": "pt"})
    config.save_pretrained(out)
    processor = LlavaProcessor(
        image_processor=CLIPImageProcessorPil(
            size={"shortest_edge": vision_cfg["image_size"]},
            crop_size={"height": vision_cfg["image_size"], "width": vision_cfg["image_size"]},
            image_mean=[0.48145466, 0.4578275, 0.40821073],
            image_std=[0.26862954, 0.26130258, 0.27577711],
        ),
        tokenizer=tok,
        patch_size=vision_cfg["patch_size"],
        vision_feature_select_strategy=config.vision_feature_select_strategy,
        num_additional_image_tokens=1,
        chat_template=VICUNA_TEMPLATE if llm == "llama" else QWEN_TEMPLATE,
        image_token=IMAGE_TOKEN,
    )
    processor.save_pretrained(out)
    _write_generation_config(src, out, tok, image_id, llm)
    (out / "lrsvqa_release.json").write_text(json.dumps(report.to_dict(), indent=1) + "\n")
    rfm = ReleaseRfm(
        state=rfm_state,
        n_layers=n_rfm,
        teacher_layers=teacher,
        init_layers=(teacher[0] - 1, *teacher),
    )
    return report, rfm


def _pad_rows(tensor: Any, rows: int) -> Any:
    """Rows for tokens the release never had (``<image>``): the mean row, as llava-hf did."""
    import torch

    extra = rows - int(tensor.shape[0])
    if extra <= 0:
        return tensor
    mean = tensor.float().mean(0, keepdim=True).to(tensor.dtype)
    return torch.cat([tensor, mean.expand(extra, -1)], dim=0)


def _write_generation_config(src: Path, out: Path, tok: Any, image_id: int, llm: str) -> None:
    from transformers import GenerationConfig

    if (src / "generation_config.json").is_file():
        gen = GenerationConfig.from_pretrained(src)
    else:
        gen = GenerationConfig()
    eos = (
        [tok.eos_token_id]
        if llm == "llama"
        else [
            tok.convert_tokens_to_ids("<|im_end|>"),
            tok.convert_tokens_to_ids("<|endoftext|>"),
        ]
    )
    gen.eos_token_id = [int(e) for e in eos if e is not None] or gen.eos_token_id
    gen.pad_token_id = tok.pad_token_id
    gen.bos_token_id = tok.bos_token_id
    # The image placeholder is never an answer (its output row is a padding mean).
    suppress = {int(t) for t in gen.suppress_tokens or []} | {image_id}
    gen.suppress_tokens = sorted(suppress)
    gen.save_pretrained(out)
