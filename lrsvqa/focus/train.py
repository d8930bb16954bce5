"""Distil the Region Focus Module: data, teacher targets, training loop, evaluation.

Teacher: the full LVLM's attention from the last prompt token to the candidate vision
tokens at a deep layer (or the mean over several), on the thumbnail + level-0 tiles of the
question's scene, cut with the adapter's tile size as the pipeline does. Student: the
RFM's attention (``distilled.RegionFocusModule``). Loss: ``T² · KL(teacher_T ‖ student_T)``
on the distributions sharpened/flattened at temperature ``T`` (default 2), plus the MSE of
the two distributions scaled by the number of candidates (so 1 = uniform; DESIGN §3).
Teacher targets and inputs are computed once and cached under ``OUT/cache``; a checkpoint
is written each epoch and a rerun of the same command resumes after the last one.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from lrsvqa.errors import ConfigError
from lrsvqa.focus.distilled import (
    RegionFocusModule,
    RfmMeta,
    _atomic_write_bytes,
    load_rfm,
    save_rfm,
    top_fraction,
)
from lrsvqa.focus.teacher import (
    Prepared,
    RfmItem,
    load_prepared,
    prepare_cached,
    resolve_teacher_layers,
)

if TYPE_CHECKING:
    from lrsvqa.models.base import Adapter

log = logging.getLogger(__name__)

STATE_FILE = "train_state.json"
LOG_FILE = "log.jsonl"
KEEP_CHECKPOINTS = 2


# --------------------------------------------------------------------------- loss, metrics
def distill_loss(
    teacher: torch.Tensor,
    student: torch.Tensor,
    *,
    temperature: float = 2.0,
    kl_weight: float = 1.0,
    mse_weight: float = 1.0,
) -> torch.Tensor:
    """``w_kl · T² · KL(p_T ‖ q_T) + w_mse · mean((n·q − n·p)²)`` on attention distributions."""
    eps = 1e-12
    log_p = torch.log(teacher.clamp_min(eps)) / temperature
    log_q = torch.log(student.clamp_min(eps)) / temperature
    p_t = torch.softmax(log_p, dim=-1)
    kl = (p_t * (torch.log_softmax(log_p, dim=-1) - torch.log_softmax(log_q, dim=-1))).sum()
    n = teacher.numel()
    mse = torch.mean((n * (student - teacher)) ** 2)
    return kl_weight * temperature**2 * kl + mse_weight * mse


def _ranks(x: np.ndarray) -> np.ndarray:
    order = np.argsort(x, kind="stable")
    ranks = np.empty(len(x), dtype=np.float64)
    ranks[order] = np.arange(len(x), dtype=np.float64)
    # Ties share their mean rank (as scipy's spearmanr does).
    _, inverse, counts = np.unique(x, return_inverse=True, return_counts=True)
    sums = np.bincount(inverse, weights=ranks)
    return (sums / counts)[inverse]


def agreement(
    student: np.ndarray, teacher: np.ndarray, fraction: float = 0.25
) -> tuple[float, float]:
    """(top-``fraction`` overlap, Spearman rank correlation) of two score vectors."""
    k = top_fraction(len(teacher), fraction)
    top_s = set(np.argsort(-student, kind="stable")[:k].tolist())
    top_t = set(np.argsort(-teacher, kind="stable")[:k].tolist())
    overlap = len(top_s & top_t) / k
    rs, rt = _ranks(np.asarray(student, np.float64)), _ranks(np.asarray(teacher, np.float64))
    rs, rt = rs - rs.mean(), rt - rt.mean()
    denom = math.sqrt(float((rs**2).sum() * (rt**2).sum()))
    return overlap, float((rs * rt).sum() / denom) if denom > 0 else 0.0


def evaluate(
    prepared: Iterable[Prepared],
    modules: dict[str, RegionFocusModule],
    *,
    seed: int = 0,
    config: TrainConfig | None = None,
    progress: bool = False,
    total: int | None = None,
) -> dict[str, dict[str, float]]:
    """Mean agreement with the teacher of each module and of a seeded random ranking
    (and each module's mean loss, given ``config``)."""
    from tqdm import tqdm

    rng = np.random.default_rng(seed)
    rows: dict[str, list[tuple[float, ...]]] = {name: [] for name in [*modules, "random"]}
    for prep in tqdm(prepared, total=total, desc="evaluating", unit="item", disable=not progress):
        teacher = prep.teacher.double().numpy()
        for name, module in modules.items():
            with torch.inference_mode():
                q = module.distribution(prep.embeds[None], prep.positions, prep.candidates)
                loss = float(_loss(prep, q, config)) if config is not None else 0.0
            rows[name].append((*agreement(q.double().cpu().numpy(), teacher), loss))
        rows["random"].append((*agreement(rng.random(len(teacher)), teacher), 0.0))
    out: dict[str, dict[str, float]] = {}
    for name, values in rows.items():
        mean = np.mean(values, axis=0) if values else np.zeros(3)
        out[name] = {
            "top25_overlap": float(mean[0]),
            "spearman": float(mean[1]),
            "items": len(values),
        }
        if config is not None and name != "random":
            out[name]["loss"] = float(mean[2])
    return out


# ------------------------------------------------------------------------------ training
@dataclass(frozen=True)
class TrainConfig:
    """How an RFM is distilled; ``teacher_layers`` None means the model's last layer."""

    n_layers: int = 3
    teacher_layers: tuple[int, ...] | None = None
    epochs: int = 3
    lr: float = 1e-4
    batch: int = 4  # items per optimiser step (gradients accumulated)
    val_fraction: float = 0.1  # share of scenes held out
    temperature: float = 2.0
    kl_weight: float = 1.0
    mse_weight: float = 1.0
    weight_decay: float = 0.0
    grad_clip: float = 1.0
    seed: int = 0

    def __post_init__(self) -> None:
        if self.n_layers < 1:
            raise ConfigError(f"--layers must be at least 1, got {self.n_layers}")
        if self.epochs < 1:
            raise ConfigError(f"--epochs must be at least 1, got {self.epochs}")
        if not self.lr > 0:
            raise ConfigError(f"--lr must be positive, got {self.lr}")
        if self.batch < 1:
            raise ConfigError(f"--batch must be at least 1, got {self.batch}")
        if not 0.0 <= self.val_fraction < 1.0:
            raise ConfigError(f"--val-fraction must be in [0, 1), got {self.val_fraction}")
        if not self.temperature > 0:
            raise ConfigError(f"--temperature must be positive, got {self.temperature}")
        if self.kl_weight < 0 or self.mse_weight < 0 or self.kl_weight + self.mse_weight == 0:
            raise ConfigError("loss weights must be >= 0 and not both 0")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# Fields that change what is learned: a resumed run must match them (epochs, lr may change).
_RESUME_FIELDS = ("n_layers", "teacher_layers", "batch", "val_fraction", "temperature",
                  "kl_weight", "mse_weight", "weight_decay", "grad_clip", "seed")  # fmt: skip


def split_items(
    items: Sequence[RfmItem], val_fraction: float, seed: int
) -> tuple[list[int], list[int]]:
    """(train, val) item indices; whole scenes are held out, so validation sees new scenes."""
    scenes = sorted({str(i.scene) for i in items})
    rng = np.random.default_rng(seed)
    order = [scenes[j] for j in rng.permutation(len(scenes))]
    want = round(val_fraction * len(items))
    val_scenes: set[str] = set()
    count = 0
    for scene in order:
        if count >= want or len(val_scenes) + 1 >= len(scenes):
            break
        val_scenes.add(scene)
        count += sum(1 for i in items if str(i.scene) == scene)
    val = [k for k, i in enumerate(items) if str(i.scene) in val_scenes]
    train = [k for k, i in enumerate(items) if str(i.scene) not in val_scenes]
    return train, val


@dataclass
class TrainResult:
    out: Path
    epochs_run: int
    log: list[dict[str, Any]]
    baseline: dict[str, Any]
    resumed_from: int


def _write_json(path: Path, data: Any) -> None:
    _atomic_write_bytes(path, (json.dumps(data, indent=1, default=str) + "\n").encode())


def _loss(prep: Prepared, q: torch.Tensor, config: TrainConfig) -> torch.Tensor:
    return distill_loss(
        prep.teacher.to(q.device),
        q,
        temperature=config.temperature,
        kl_weight=config.kl_weight,
        mse_weight=config.mse_weight,
    )


def train_rfm(
    adapter: Adapter,
    items: Sequence[RfmItem],
    out: str | os.PathLike[str],
    config: TrainConfig | None = None,
    *,
    progress: bool = False,
    cache_dir: str | os.PathLike[str] | None = None,
    on_step: Callable[[int, int, float], None] | None = None,
) -> TrainResult:
    """Distil an RFM for ``adapter`` into ``out``; resume there if a run was interrupted.

    Teacher targets are cached in ``cache_dir`` (default ``out/cache``; runs may share
    one). ``on_step(epoch, step, loss)`` is called after every optimiser step.
    """
    from tqdm import tqdm

    config = config or TrainConfig()
    folder = Path(out)
    depth = adapter.capabilities.num_layers or len(adapter.language_model().layers)
    teacher = resolve_teacher_layers(config.teacher_layers, depth)
    if config.n_layers > depth:
        raise ConfigError(f"--layers {config.n_layers}: the model has only {depth} layers")
    if config.n_layers - 1 >= max(teacher):
        raise ConfigError(
            f"an RFM of {config.n_layers} layers already reaches teacher layer {max(teacher)}; "
            "use fewer --layers or a deeper --teacher-layer"
        )
    if not items:
        raise ConfigError("no training items")
    train_idx, val_idx = split_items(items, config.val_fraction, config.seed)
    if not train_idx:
        raise ConfigError("no training items left after the validation split; lower --val-fraction")
    folder.mkdir(parents=True, exist_ok=True)
    resume_key = {k: v for k, v in config.to_dict().items() if k in _RESUME_FIELDS}
    resume_key["teacher_layers"] = list(teacher)
    resume_key["base_model_id"] = adapter.model_id
    ids = "\n".join(i.item_id for i in items)
    resume_key["items"] = hashlib.sha1(ids.encode()).hexdigest()[:16]

    torch.manual_seed(config.seed)
    state_path = folder / STATE_FILE
    state: dict[str, Any] = {}
    if state_path.is_file():
        state = json.loads(state_path.read_text())
        if state.get("resume_key") != resume_key:
            raise ConfigError(
                f"{folder} holds a run with other settings ({state_path}); resume it with the "
                "same options (only --epochs and --lr may change) or choose a new --out"
            )
    start_epoch = int(state.get("epoch", 0))
    if start_epoch:
        module, _ = load_rfm(folder / state["checkpoint"], adapter, dtype=torch.float32)
        log.info("resuming %s after epoch %d", folder, start_epoch)
    else:
        module = RegionFocusModule.from_adapter(adapter, config.n_layers, dtype=torch.float32)
    module.train()
    params = [p for p in module.parameters() if p.requires_grad]
    optim = torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay)
    if start_epoch:
        opt_state = torch.load(folder / state["checkpoint"] / "optimizer.pt", weights_only=True)
        optim.load_state_dict(opt_state)
        for group in optim.param_groups:
            group["lr"] = config.lr

    cache = Path(cache_dir) if cache_dir is not None else folder / "cache"
    paths = prepare_cached(adapter, items, teacher, cache, progress=progress)
    train_paths = [paths[i] for i in train_idx]
    val_paths = [paths[i] for i in val_idx]
    history: list[dict[str, Any]] = list(state.get("log", []))
    baseline = state.get("baseline")
    if baseline is None:
        baseline = {"val_items": len(val_idx), "train_items": len(train_idx)}
        if val_paths:
            baseline.update(
                evaluate(
                    map(load_prepared, val_paths),
                    {"untrained": module.eval()},
                    seed=config.seed,
                    config=config,
                )
            )

    steps_per_epoch = math.ceil(len(train_paths) / config.batch)
    for epoch in range(start_epoch, config.epochs):
        started = time.perf_counter()
        rng = np.random.default_rng([config.seed, epoch])
        order = [train_paths[j] for j in rng.permutation(len(train_paths))]
        total, seen = 0.0, 0
        desc = f"epoch {epoch + 1}/{config.epochs}"
        bar = tqdm(total=steps_per_epoch, desc=desc, unit="step", disable=not progress)
        try:
            for step in range(steps_per_epoch):
                chunk = order[step * config.batch : (step + 1) * config.batch]
                optim.zero_grad(set_to_none=True)
                step_loss = 0.0
                for path in chunk:
                    prep = load_prepared(path)
                    q = module.distribution(prep.embeds[None], prep.positions, prep.candidates)
                    loss = _loss(prep, q, config)
                    (loss / len(chunk)).backward()
                    step_loss += float(loss.detach())
                if config.grad_clip > 0:
                    torch.nn.utils.clip_grad_norm_(params, config.grad_clip)
                optim.step()
                total += step_loss
                seen += len(chunk)
                bar.update(1)
                bar.set_postfix(loss=f"{step_loss / len(chunk):.4f}")
                if on_step is not None:
                    on_step(epoch + 1, step + 1, step_loss / len(chunk))
        finally:
            bar.close()
        entry: dict[str, Any] = {"epoch": epoch + 1, "train_loss": total / max(1, seen)}
        if val_paths:
            val = evaluate(
                map(load_prepared, val_paths),
                {"val": module.eval()},
                seed=config.seed,
                config=config,
            )["val"]
            entry.update(val_loss=val.pop("loss"), **val)
        module.train()
        entry.update(seconds=round(time.perf_counter() - started, 3), lr=config.lr)
        history.append(entry)
        log.info("epoch %d: %s", epoch + 1, entry)
        meta = RfmMeta.for_adapter(
            adapter,
            module.n_layers,
            teacher,
            epochs=epoch + 1,
            training={**config.to_dict(), "teacher_layers": list(teacher)},
        )
        state = {
            "epoch": epoch + 1,
            "resume_key": resume_key,
            "log": history,
            "baseline": baseline,
            "val_ids": [items[i].item_id for i in val_idx],
        }
        _checkpoint(folder, module, optim, meta, state)
    return TrainResult(folder, max(0, config.epochs - start_epoch), history, baseline, start_epoch)


def _checkpoint(
    folder: Path,
    module: RegionFocusModule,
    optim: torch.optim.Optimizer,
    meta: RfmMeta,
    state: dict[str, Any],
) -> None:
    """Epoch folder first, then the usable RFM at the top, then the state that points to it."""
    import shutil

    state["checkpoint"] = name = f"checkpoints/epoch-{meta.epochs:04d}"
    save_rfm(module, folder / name, meta)
    torch.save(optim.state_dict(), folder / name / "optimizer.pt.tmp")
    os.replace(folder / name / "optimizer.pt.tmp", folder / name / "optimizer.pt")
    save_rfm(module, folder, meta)
    _write_json(folder / STATE_FILE, state)
    lines = "".join(json.dumps(e) + "\n" for e in state["log"])
    _atomic_write_bytes(folder / LOG_FILE, lines.encode())
    for old in sorted((folder / "checkpoints").glob("epoch-*"))[:-KEEP_CHECKPOINTS]:
        shutil.rmtree(old, ignore_errors=True)


def held_out_ids(folder: str | os.PathLike[str]) -> list[str]:
    """The item ids a training run in ``folder`` held out for validation."""
    path = Path(folder) / STATE_FILE
    if not path.is_file():
        raise ConfigError(
            f"{folder} has no {STATE_FILE}; --held-out needs the train-rfm --out folder"
        )
    return list(json.loads(path.read_text()).get("val_ids", []))
