"""``--preset lrsvqa-release``: the LRS-VQA release's operating point, resolved per model.

The release (VisionXLab/LRS-VQA, ``LRS-VQA-Code``) runs LLaVA models (a Vicuna-7B or a
Qwen2-7B LLM, CLIP-336) through ``eval/model_rsvqa.py --pyramid_crop True``
(``eval_lrs_vqa.sh``). Point by point, the preset takes:

- the pyramid: ``PyramidConfig.release`` (its level sizes; 336 px tiles; a 336 px global
  image; LLaVA tiles pooled 2 x 2 to 144 tokens);
- the focus: ``FocusConfig.release`` (every hit tile, one zoom step, ``int()`` of 25 %,
  newline tokens inside the RFM softmax);
- in-LLM pruning, when asked for (``--llm-prune pdrop``): ``LLMPruneConfig.release``
  (positions re-compacted after a drop, ``int(N * λ^s)`` kept at stage s);
- the LLM input (``lrsvqa.models.release_format``): the ``vicuna_v1`` / ``qwen_1_5`` prompt
  and its tokenization, the ``:`` separator and one newline per tile row (LLaVA families);
- decoding: greedy, one beam (``temperature 0``), ``max_new_tokens`` 1024 (Vicuna) or
  4096 (Qwen2 LLM) as ``model_rsvqa.py``.

The release has no LRS-VQA path for Qwen2-VL / Qwen2.5-VL (its Qwen2-VL scripts are
MME-RealWorld baselines: stock chat template, ``max_new_tokens`` 128). For them the preset
carries the release's pyramid and focus over 336 px tiles (12 x 12 merged tokens, the
same 144 per tile) and keeps the stock prompt.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from lrsvqa.errors import ConfigError
from lrsvqa.focus import FocusConfig
from lrsvqa.models.base import InputFormat
from lrsvqa.models.release_format import prompt_format_for
from lrsvqa.prune import LLMPruneConfig, PruneConfig
from lrsvqa.pyramid import PyramidConfig

if TYPE_CHECKING:
    from lrsvqa.models.base import Adapter

RELEASE = "lrsvqa-release"
PRESETS = (RELEASE,)
RELEASE_TILE = 336  # the release's block_size (LS_Image_Patch, slice_block_size)
# model_rsvqa.py: max_new_tokens 1024 (LLaVA/Vicuna), 4096 (llava_qwen);
# qwen2vl_vqa_mme_realworld.py: 128 (its default)
RELEASE_MAX_NEW_TOKENS = {"vicuna_v1": 1024, "qwen_1_5": 4096, None: 128}


def check_preset(name: str | None) -> str | None:
    if name is not None and name not in PRESETS:
        raise ConfigError(f"unknown preset {name!r}; the presets are: {', '.join(PRESETS)}")
    return name


@dataclass(frozen=True)
class Preset:
    """Every setting a preset resolves to for one model."""

    name: str
    pyramid: PyramidConfig
    focus: FocusConfig
    prune: PruneConfig
    input_format: InputFormat
    max_new_tokens: int

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "pyramid": self.pyramid.to_dict(),
            "focus": self.focus.to_dict(),
            "prune": self.prune.to_dict(),
            "input_format": self.input_format.to_dict(),
            "max_new_tokens": self.max_new_tokens,
        }


def text_model_type(adapter: Adapter) -> str:
    config = getattr(getattr(adapter, "model", None), "config", None)
    text = getattr(config, "text_config", None) if config is not None else None
    return str(getattr(text, "model_type", "") or "")


def resolve(name: str, adapter: Adapter) -> Preset:
    """The settings of preset ``name`` for ``adapter``'s model."""
    check_preset(name)
    caps = adapter.capabilities
    llava = not caps.mrope  # the LLaVA families (1-D positions, CLIP tiles)
    # The release's LLaVA tiles are 336 px CLIP inputs. A LLaVA model with another tower
    # (OneVision: 384 px SigLIP, 27 x 27 tokens) keeps its own tile size, with the release's
    # rules on top: levels down to 3 of its tiles, tiles pooled 2 x 2 bilinearly to
    # ceil(27 / 2) = 14 a side as ``get_2dPool_bilinear`` would.
    tile = caps.tile_size if llava else RELEASE_TILE
    pool = 2 if llava else 1
    fmt = (
        InputFormat(
            prompt_format=prompt_format_for(text_model_type(adapter)),
            global_separator=True,
            newline_rows=True,
        )
        if llava
        else InputFormat()
    )
    return Preset(
        name=name,
        pyramid=PyramidConfig.release(tile_size=tile, tile_pool=pool),
        focus=FocusConfig.release(),
        prune=PruneConfig(llm=LLMPruneConfig.release()),
        input_format=fmt,
        max_new_tokens=RELEASE_MAX_NEW_TOKENS[fmt.prompt_format],
    )


def option_values(name: str) -> dict[str, Any]:
    """The preset's value of every ``ask``/``bench`` option it sets (model-independent;
    ``max_new_tokens`` None: the preset's per model), by click parameter name."""
    check_preset(name)
    focus, llm = FocusConfig.release(), LLMPruneConfig.release()
    out: dict[str, Any] = {
        name: getattr(focus, name)
        for name in ("selector", "keep_ratio", "max_depth", "tile_rule", "rounding", "newlines")
    }
    for name in ("pdrop_positions", "pdrop_rounding"):
        out[name] = getattr(llm, name)
    out["max_new_tokens"] = None
    return out
