"""Write the distilled RFM of a converted LRS-VQA release as an lrsvqa RFM folder.

The release's RFM (``mm_projector.token_pruner``) is ``len(llm_layer_list) + 1`` decoder
layers fed the LLM's input embeddings; it reads the last prompt token's attention at its
last layer, restricted to the image tokens — the readout of ``RegionFocusModule``. Its
``rfm.json`` names the converted folder as the base model, the release's ``llm_layer_list``
as the teacher layers, and the converted model's fingerprint and weight anchor, so
``--focus distilled:OUT/rfm`` loads it on that model and refuses any other.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from lrsvqa.focus.distilled import (
    FORMAT,
    META_FILE,
    WEIGHTS_FILE,
    RfmMeta,
    architecture_fingerprint,
    weight_anchor,
)


def _weights_view(model_dir: Path, family: str) -> Any:
    """What ``architecture_fingerprint`` / ``weight_anchor`` read, without building the model."""
    from safetensors import safe_open
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(model_dir)
    text = config.get_text_config()
    with safe_open(str(model_dir / "model.safetensors"), framework="pt") as f:

        def weight(name: str) -> Any:
            return SimpleNamespace(weight=f.get_tensor(name))

        last = int(text.num_hidden_layers) - 1
        prefix = "model.language_model.layers"
        layers = [
            SimpleNamespace(
                self_attn=SimpleNamespace(q_proj=weight(f"{prefix}.0.self_attn.q_proj.weight"))
            ),
            SimpleNamespace(
                self_attn=SimpleNamespace(k_proj=weight(f"{prefix}.{last}.self_attn.k_proj.weight"))
            ),
        ]
        embed = weight("model.language_model.embed_tokens.weight")
    lm = SimpleNamespace(config=text, layers=layers)
    return SimpleNamespace(
        capabilities=SimpleNamespace(family=family),
        language_model=lambda: lm,
        model=SimpleNamespace(get_input_embeddings=lambda: embed),
    )


def write_release_rfm(
    rfm: Any,
    model_dir: str | os.PathLike[str],
    out: str | os.PathLike[str],
    *,
    family: str = "llava",
) -> Path:
    """Save ``rfm`` (a ``ReleaseRfm``) into ``out`` for the converted model in ``model_dir``."""
    from safetensors.torch import save_file

    model_dir, folder = Path(model_dir), Path(out)
    view = _weights_view(model_dir, family)
    meta = RfmMeta(
        base_model_id=str(model_dir),
        revision=None,
        family=family,
        n_layers=rfm.n_layers,
        teacher_layers=tuple(rfm.teacher_layers),
        fingerprint=architecture_fingerprint(view),
        anchor=tuple(weight_anchor(view)),
        training={"source": "LRS-VQA release token_pruner", "init_layers": list(rfm.init_layers)},
    )
    folder.mkdir(parents=True, exist_ok=True)
    state = {k: v.contiguous() for k, v in rfm.state.items()}
    save_file(
        state,
        str(folder / WEIGHTS_FILE),
        metadata={"format": FORMAT, "base_model_id": str(model_dir)},
    )
    (folder / META_FILE).write_text(json.dumps(meta.to_dict(), indent=1) + "\n")
    return folder
