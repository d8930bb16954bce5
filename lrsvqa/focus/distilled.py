"""The distilled Region Focus Module (DESIGN §3): a few early LLM layers trained to look
where a deep layer looks.

An RFM holds ``n`` decoder layers deep-copied from the base LLM's first ``n`` layers and
the LLM's rotary embedding; inputs (embeddings, positions) come from the adapter's
``build_inputs``. Its readout is the last prompt token's attention at its last layer,
computed by the same code as the training-free scorer (``models.attention``), but
with gradients. A checkpoint is a folder with ``rfm.safetensors`` (the layers' weights)
and ``rfm.json`` (base model id, revision, family, layers, teacher layers and a
fingerprint of the base model), so an RFM never silently runs on a model it was not
distilled from.
"""

from __future__ import annotations

import copy
import hashlib
import json
import logging
import math
import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from lrsvqa.errors import ConfigError, ModelError
from lrsvqa.focus.scoring import (
    ScoreResult,
    candidate_distribution,
    newline_candidates,
    split_scores,
)

if TYPE_CHECKING:
    from lrsvqa.models.base import Adapter, PreparedInputs, VisionSegment

log = logging.getLogger(__name__)

FORMAT = "lrsvqa-rfm"
FORMAT_VERSION = 1
WEIGHTS_FILE = "rfm.safetensors"
META_FILE = "rfm.json"
ANCHOR_VALUES = 32  # sampled weights per anchor tensor
# Text-config fields that decide the shapes and maths of a decoder layer.
_ARCH_FIELDS = ("model_type", "hidden_size", "intermediate_size", "num_hidden_layers",
                "num_attention_heads", "num_key_value_heads", "head_dim", "hidden_act",
                "rms_norm_eps", "vocab_size", "rope_theta", "rope_scaling", "rope_parameters",
                "attention_bias")  # fmt: skip


# ----------------------------------------------------------------------------- identity
def _text_config(adapter: Adapter) -> Any:
    lm = _language_model(adapter)
    return lm.config


def _language_model(adapter: Adapter) -> Any:
    return adapter.language_model()


def architecture_fingerprint(adapter: Adapter) -> str:
    """A short digest of the family and the LLM's layer-shaping config values."""
    cfg = _text_config(adapter)
    values: dict[str, Any] = {"family": adapter.capabilities.family}
    for name in _ARCH_FIELDS:
        value = getattr(cfg, name, None)
        values[name] = value if isinstance(value, str | int | float | bool | None) else repr(value)
    blob = json.dumps(values, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def weight_anchor(adapter: Adapter) -> list[float]:
    """Evenly spaced samples of a few base weights: tells two models of one architecture
    apart (another seed, another fine-tune) while tolerating a different load dtype."""
    lm = _language_model(adapter)
    tensors = [
        adapter.model.get_input_embeddings().weight,
        lm.layers[0].self_attn.q_proj.weight,
        lm.layers[-1].self_attn.k_proj.weight,
    ]
    out: list[float] = []
    with torch.no_grad():
        for t in tensors:
            flat = t.detach().reshape(-1)
            idx = torch.linspace(0, flat.numel() - 1, ANCHOR_VALUES).round().long()
            out.extend(float(v) for v in flat[idx.to(flat.device)].float().cpu())
    return out


def _anchor_matches(saved: Sequence[float], now: Sequence[float]) -> bool:
    a, b = np.asarray(saved, dtype=np.float64), np.asarray(now, dtype=np.float64)
    if a.shape != b.shape:
        return False
    scale = float(np.abs(a).max()) if a.size else 1.0
    # bf16 keeps ~3 significant digits: allow that much, nothing like another model.
    return bool(np.allclose(a, b, rtol=1e-2, atol=1e-3 * scale))


# ------------------------------------------------------------------------------ module
def split_positions(position_ids: torch.Tensor) -> tuple[torch.Tensor | None, torch.Tensor]:
    """(text positions for the mask, rotary positions) from the adapter's generation form."""
    if position_ids.ndim == 3 and position_ids.shape[0] == 4:  # Qwen: [text; t; h; w]
        return position_ids[0], position_ids[1:]
    if position_ids.ndim == 3:  # bare M-RoPE (3, batch, L)
        return None, position_ids
    return position_ids, position_ids


class RegionFocusModule(torch.nn.Module):
    """``n`` decoder layers + the rotary embedding; reads its last layer's attention."""

    def __init__(self, layers: Sequence[torch.nn.Module], rotary_emb: torch.nn.Module, config: Any):
        super().__init__()
        self.layers = torch.nn.ModuleList(layers)
        self.rotary_emb = rotary_emb
        self.text_config = config  # for the causal mask only; not a module

    @classmethod
    def from_adapter(
        cls, adapter: Adapter, n_layers: int, *, dtype: torch.dtype | None = None
    ) -> RegionFocusModule:
        """A fresh RFM: deep copies of the base LLM's first ``n_layers`` layers."""
        lm = _language_model(adapter)
        depth = len(lm.layers)
        if not 1 <= n_layers <= depth:
            raise ConfigError(f"an RFM needs 1..{depth} layers of this model, got {n_layers}")
        layers = [copy.deepcopy(lm.layers[i]) for i in range(n_layers)]
        module = cls(layers, copy.deepcopy(lm.rotary_emb), lm.config)
        for m in module.modules():  # hooks copied from the stock model are not ours to run
            m._forward_hooks.clear()
            m._forward_pre_hooks.clear()
        ref = next(lm.parameters())
        module.to(device=ref.device, dtype=dtype or ref.dtype)
        return module

    @property
    def n_layers(self) -> int:
        return len(self.layers)

    @property
    def dtype(self) -> torch.dtype:
        return next(self.parameters()).dtype

    def forward(self, inputs_embeds: torch.Tensor, position_ids: torch.Tensor) -> torch.Tensor:
        """Softmax attention of the last position over all keys at the last layer: (heads, L)."""
        from transformers.masking_utils import create_causal_mask

        from lrsvqa.models.attention import layer_attention

        ref = next(self.parameters())
        x = inputs_embeds.to(device=ref.device, dtype=ref.dtype)
        text_pos, rope_pos = split_positions(position_ids.to(ref.device))
        mask = create_causal_mask(
            config=self.text_config,
            inputs_embeds=x,
            attention_mask=torch.ones(x.shape[:2], dtype=torch.long, device=x.device),
            cache=None,
            position_ids=text_pos,
        )
        embeddings = self.rotary_emb(x, rope_pos)
        for layer in self.layers[:-1]:
            out = layer(
                x, attention_mask=mask, position_embeddings=embeddings, position_ids=text_pos
            )
            x = out[0] if isinstance(out, tuple) else out
        kwargs = {"position_embeddings": embeddings, "attention_mask": mask}
        return layer_attention(self.layers[-1], x, kwargs)[0]

    def distribution(
        self, inputs_embeds: torch.Tensor, position_ids: torch.Tensor, candidates: torch.Tensor
    ) -> torch.Tensor:
        """The score distribution over the sequence positions ``candidates`` (differentiable)."""
        att = self(inputs_embeds, position_ids)
        return candidate_distribution(att.unsqueeze(0), candidates.to(att.device))


def candidate_positions(inputs: PreparedInputs) -> torch.Tensor:
    """Sequence positions of the candidate tiles' vision tokens (segment >= 1)."""
    mask = inputs.vision_segment >= 1
    return inputs.vision_positions[mask.to(inputs.vision_positions.device)].cpu()


# --------------------------------------------------------------------------- metadata
@dataclass(frozen=True)
class RfmMeta:
    """What ``rfm.json`` records: where the RFM came from and how it was trained."""

    base_model_id: str
    revision: str | None
    family: str
    n_layers: int
    teacher_layers: tuple[int, ...]
    fingerprint: str
    anchor: tuple[float, ...] = ()
    epochs: int = 0
    training: dict[str, Any] = field(default_factory=dict)
    format: str = FORMAT
    format_version: int = FORMAT_VERSION

    @classmethod
    def for_adapter(
        cls, adapter: Adapter, n_layers: int, teacher_layers: Sequence[int], **kwargs: Any
    ) -> RfmMeta:
        return cls(
            base_model_id=adapter.model_id,
            revision=adapter.revision,
            family=adapter.capabilities.family,
            n_layers=n_layers,
            teacher_layers=tuple(teacher_layers),
            fingerprint=architecture_fingerprint(adapter),
            anchor=tuple(weight_anchor(adapter)),
            **kwargs,
        )

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["teacher_layers"] = list(self.teacher_layers)
        data["anchor"] = list(self.anchor)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any], source: Path) -> RfmMeta:
        if data.get("format") != FORMAT:
            raise ConfigError(f"{source} is not an lrsvqa RFM description (format != {FORMAT})")
        if int(data.get("format_version", 0)) > FORMAT_VERSION:
            raise ConfigError(
                f"{source} has RFM format version {data['format_version']}; this lrsvqa reads "
                f"up to {FORMAT_VERSION} (upgrade lrsvqa)"
            )
        try:
            return cls(
                base_model_id=str(data["base_model_id"]),
                revision=data.get("revision"),
                family=str(data["family"]),
                n_layers=int(data["n_layers"]),
                teacher_layers=tuple(int(v) for v in data["teacher_layers"]),
                fingerprint=str(data["fingerprint"]),
                anchor=tuple(float(v) for v in data.get("anchor", ())),
                epochs=int(data.get("epochs", 0)),
                training=dict(data.get("training", {})),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise ConfigError(f"{source} is missing or has a bad field: {exc}") from None

    def check(self, adapter: Adapter, source: Path) -> None:
        """ModelError unless ``adapter`` is the base model this RFM was distilled from."""
        family = adapter.capabilities.family
        here = f"the loaded model {adapter.model_id!r} ({family})"
        there = f"{self.base_model_id!r} ({self.family})"
        fix = f"train one for it with `lrsvqa train-rfm --model {adapter.model_id} ...`"
        if family != self.family or architecture_fingerprint(adapter) != self.fingerprint:
            raise ModelError(
                f"RFM {source} was distilled from {there}, a different architecture from {here}; {fix}"
            )
        if self.anchor and not _anchor_matches(self.anchor, weight_anchor(adapter)):
            raise ModelError(
                f"RFM {source} was distilled from {there}, whose weights differ from {here}; {fix}"
            )
        if adapter.model_id != self.base_model_id:
            log.info(
                "RFM %s: base %s loaded as %s (same architecture and weights)",
                source,
                self.base_model_id,
                adapter.model_id,
            )


# ------------------------------------------------------------------------ save / load
def _atomic_write_bytes(path: Path, data: bytes) -> None:
    tmp = path.with_name(path.name + f".tmp{os.getpid()}")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def save_rfm(module: RegionFocusModule, folder: str | os.PathLike[str], meta: RfmMeta) -> Path:
    """Write ``rfm.safetensors`` + ``rfm.json`` into ``folder`` (each replaced atomically)."""
    from safetensors.torch import save

    out = Path(folder)
    out.mkdir(parents=True, exist_ok=True)
    state = {
        k: v.detach().contiguous().cpu()
        for k, v in module.state_dict().items()
        if k.startswith("layers.")
    }
    blob = save(state, metadata={"format": FORMAT, "base_model_id": meta.base_model_id})
    _atomic_write_bytes(out / WEIGHTS_FILE, blob)
    text = json.dumps(meta.to_dict(), indent=1) + "\n"
    _atomic_write_bytes(out / META_FILE, text.encode())
    return out


def read_meta(folder: str | os.PathLike[str]) -> tuple[Path, RfmMeta]:
    """The checkpoint folder (a path to its safetensors file is accepted) and its metadata."""
    path = Path(folder).expanduser()
    if path.is_file() and path.name == WEIGHTS_FILE:
        path = path.parent
    meta_path = path / META_FILE
    if not path.is_dir():
        raise ConfigError(
            f"RFM checkpoint {path} does not exist; give the --out folder of train-rfm"
        )
    if not meta_path.is_file() or not (path / WEIGHTS_FILE).is_file():
        raise ConfigError(
            f"{path} is not an RFM checkpoint: it needs {META_FILE} and {WEIGHTS_FILE} "
            "(written by `lrsvqa train-rfm`)"
        )
    try:
        data = json.loads(meta_path.read_text())
    except (OSError, ValueError) as exc:
        raise ConfigError(f"{meta_path} cannot be read: {exc}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{meta_path} must hold a JSON object")
    return path, RfmMeta.from_dict(data, meta_path)


def load_rfm(
    folder: str | os.PathLike[str], adapter: Adapter, *, dtype: torch.dtype | None = None
) -> tuple[RegionFocusModule, RfmMeta]:
    """Load an RFM onto ``adapter``'s model (refusing any other base model)."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    path, meta = read_meta(folder)
    meta.check(adapter, path)
    module = RegionFocusModule.from_adapter(adapter, meta.n_layers, dtype=dtype)
    try:
        state = load_file(str(path / WEIGHTS_FILE))
    except (OSError, SafetensorError) as exc:
        raise ConfigError(f"{path / WEIGHTS_FILE} cannot be read: {exc}") from None
    ref = next(module.parameters())
    state = {k: v.to(ref.device, ref.dtype) for k, v in state.items()}
    try:
        module.load_state_dict(state, strict=False)
    except RuntimeError as exc:
        raise ModelError(
            f"{path / WEIGHTS_FILE} does not fit {meta.base_model_id}: {exc}"
        ) from None
    expected = {k for k in module.state_dict() if k.startswith("layers.")}
    missing = sorted(expected - set(state))
    if missing:
        raise ModelError(f"{path / WEIGHTS_FILE} lacks {len(missing)} tensors, e.g. {missing[0]}")
    module.eval()
    return module, meta


# ----------------------------------------------------------------------------- scorer
class DistilledScorer:
    """A ``TokenScorer`` backed by a distilled RFM (cost: ``n_layers`` layers per pass)."""

    name = "distilled"

    def __init__(self, module: RegionFocusModule, meta: RfmMeta, source: Path | None = None):
        self.module = module
        self.meta = meta
        self.source = source
        self._checked: set[int] = set()
        self.newlines = False  # newline tokens inside the softmax (the release preset)

    @property
    def layers(self) -> tuple[int, ...]:
        """The base-model layer index whose position the readout stands in for."""
        return (self.meta.n_layers - 1,)

    def resolve_layers(self, adapter: Adapter) -> tuple[int, ...]:
        """As ``AttentionScorer.resolve_layers``: ``max + 1`` layers are run per pass."""
        return self.layers

    def _check(self, adapter: Adapter) -> None:
        if id(adapter) not in self._checked:
            self.meta.check(adapter, self.source or Path(self.meta.base_model_id))
            self._checked.add(id(adapter))

    def score(
        self, adapter: Adapter, segments: Sequence[VisionSegment], question: str
    ) -> ScoreResult:
        self._check(adapter)
        inputs = adapter.build_inputs(segments, question)
        candidates = candidate_positions(inputs)
        seps = newline_candidates(inputs) if self.newlines else None
        if seps is not None:  # the release's RFM softmax holds the newline tokens too
            candidates = torch.cat([candidates, inputs.separator_positions.cpu()[seps]])
        positions = _generation_positions(adapter, inputs)
        with torch.inference_mode():
            dist = self.module.distribution(inputs.inputs_embeds, positions, candidates)
        n = inputs.length
        return split_scores(dist.double().cpu().numpy(), inputs, segments, seps, n, n)

    def describe(self) -> dict[str, Any] | None:
        return self.meta.to_dict()


def _generation_positions(adapter: Adapter, inputs: PreparedInputs) -> torch.Tensor:
    return adapter.generation_position_ids(inputs)


def load_scorer(path: str | os.PathLike[str], adapter: Adapter) -> DistilledScorer:
    """The scorer for ``FocusConfig.focus = "distilled:PATH"``: load and check the RFM."""
    folder, _ = read_meta(path)
    module, meta = load_rfm(folder, adapter)
    log.info(
        "distilled RFM %s: %d layers standing in for layer(s) %s of %s",
        folder,
        meta.n_layers,
        ",".join(map(str, meta.teacher_layers)),
        meta.base_model_id,
    )
    return DistilledScorer(module, meta, folder)


def top_fraction(n: int, fraction: float = 0.25) -> int:
    """How many tokens make the top ``fraction`` of ``n`` (at least one)."""
    return max(1, math.ceil(fraction * n))
