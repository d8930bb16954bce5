"""Train the micro model: ``python -m lrsvqa.micro.train --out runs/micro``.

Seeded and reproducible (a fixed number of steps over a deterministic stream of synthetic
worlds), resumable (rerun the same command: it continues from the last checkpoint), with a
progress bar, ``log.jsonl`` (losses, attention share on the targets against chance) and a
held-out evaluation at the end (``eval.json``). The result folder is a model folder that
``lrsvqa`` loads like any other (``--model runs/micro/model``). The worlds are built in a
spawned worker process: a script that calls ``train()`` needs the usual
``if __name__ == "__main__":`` guard.

Loss = ``answer_weight`` x answer cross-entropy + ``grounding_weight`` x grounding +
``token_weight`` x token probe. Grounding is minus the log of the share of the focus layer's
attention (last prompt token, mean over heads, restricted to the candidate tiles' tokens and
renormalised, exactly as the Region Focus Module reads it) that falls on the tokens of the
objects the question is about. The token probe is a training-only linear head that names the
object class and colour under every vision token (dense supervision for the vision tower);
it is not part of the shipped model.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch

log = logging.getLogger(__name__)

CHUNK = 8  # worlds mixed in one shuffle buffer


class _Chunks(torch.utils.data.IterableDataset):
    """Deterministic stream of shuffled example chunks (one worker process builds them);
    ``stream`` holds ``data.shard``'s keyword arguments (seed and world mix)."""

    def __init__(self, start: int, stream: dict[str, Any]):
        self.start = start
        self.stream = stream

    def __iter__(self) -> Iterator[tuple[int, list[Any]]]:
        from lrsvqa.micro.data import shard

        c = self.start
        while True:
            examples = []
            for i in range(c * CHUNK, (c + 1) * CHUNK):
                examples.extend(shard(i, **self.stream))
            rng = np.random.default_rng(self.stream["base_seed"] * 7919 + c)
            order = rng.permutation(len(examples))
            yield c, [examples[int(i)] for i in order]
            c += 1


def _iterable(start: int, stream: dict[str, Any]) -> Any:
    # The worker is spawned, not forked: a fork copies whatever the calling process holds
    # (thread pools without their threads, locks held by other threads, GDAL and torch
    # state), and the trainer's test hung in CI on a worker forked from a pytest worker.
    return torch.utils.data.DataLoader(
        _Chunks(start, stream),
        batch_size=None,
        num_workers=1,
        prefetch_factor=2,
        persistent_workers=False,
        multiprocessing_context="spawn",
    )


#: The settings every run's settings.json records, with the trainer's option for each.
RECORDED = {
    "steps": "--steps",
    "batch": "--batch",
    "lr": "--lr",
    "answer_weight": "--answer-weight",
    "grounding_weight": "--grounding-weight",
    "token_weight": "--token-weight",
    "seed": "--seed",
}
#: Settings recorded only when not 0, so that a run from before the option resumes as it
#: was (a run's settings without one of these had it at 0), with the trainer's option.
OPTIONAL = {
    "single_tile_worlds": "--single-tile-worlds",
    "readout_weight": "--readout-weight",
    "centre_weight": "--centre-weight",
    "count_weight": "--count-weight",
    "single_tile_share": "--single-tile-share",
    "big_world_share": "--big-worlds",
    "size_jitter": "--size-jitter",
    "focus_fill": "--focus-fill",
    "llm_width": "--llm-width",
    "null_weight": "--null-weight",
    "count_mass_weight": "--count-mass-weight",
    "present_weight": "--present-weight",
}
#: The optional settings that are shares, in (0, 1).
SHARES = ("single_tile_share", "big_world_share", "size_jitter")


def train(
    out: str | os.PathLike[str],
    *,
    steps: int = 3000,
    batch: int = 8,
    lr: float = 2e-3,
    answer_weight: float = 4.0,
    grounding_weight: float = 1.0,
    token_weight: float = 1.0,
    readout_weight: float = 1.0,
    centre_weight: float = 0.0,
    count_weight: float = 0.0,
    seed: int = 0,
    single_tile_worlds: int = 600,
    single_tile_share: float = 0.0,
    big_world_share: float = 0.3,
    size_jitter: float = 0.15,
    focus_fill: float = 0.0,
    llm_width: int = 0,
    null_weight: float = 0.0,
    count_mass_weight: float = 0.0,
    present_weight: float = 0.0,
    threads: int = 2,
    checkpoint_every: int = 100,
    eval_questions: int = 400,
    stop_after: int | None = None,
) -> Path:
    """Train (or resume) the run in ``out``; ``stop_after`` ends this process at that step
    of the ``steps``-step schedule (saved model, checkpoint and evaluation as at the end):
    the same command without it continues the same run."""
    from tqdm import tqdm

    from lrsvqa.micro.forward import (
        encode_with_grad,
        example_losses,
        focus_filled,
        focus_scores,
        probe_head,
        readout_head,
        token_losses,
    )
    from lrsvqa.micro.model import FOCUS_LAYER, build, text_config
    from lrsvqa.models import from_pretrained

    torch.set_num_threads(threads)
    folder = Path(out)
    model_dir = folder / "model"
    state_path = folder / "state.pt"
    given = {
        "steps": steps,
        "batch": batch,
        "lr": lr,
        "answer_weight": answer_weight,
        "grounding_weight": grounding_weight,
        "token_weight": token_weight,
        "seed": seed,
        "single_tile_worlds": single_tile_worlds,
        "readout_weight": readout_weight,
        "centre_weight": centre_weight,
        "count_weight": count_weight,
        "single_tile_share": single_tile_share,
        "big_world_share": big_world_share,
        "size_jitter": size_jitter,
        "focus_fill": focus_fill,
        "llm_width": llm_width,
        "null_weight": null_weight,
        "count_mass_weight": count_mass_weight,
        "present_weight": present_weight,
    }
    settings = {k: given[k] for k in RECORDED}
    for key, option in OPTIONAL.items():
        value = given[key]
        if value and key in SHARES and not 0 < value < 1:
            from lrsvqa.errors import ConfigError

            raise ConfigError(f"{option} is {value}; give a share in (0, 1)")
        if value and key == "focus_fill" and not 0 < value <= 1:
            from lrsvqa.errors import ConfigError

            raise ConfigError(f"{option} is {value}; give a share in (0, 1]")
        if value:
            settings[key] = value
    text_config(llm_width)  # raises on a width the heads cannot split
    folder.mkdir(parents=True, exist_ok=True)  # settings are valid: nothing made for a typo
    settings_path = folder / "settings.json"
    if settings_path.exists() and json.loads(settings_path.read_text()) != settings:
        from lrsvqa.errors import ConfigError

        raise ConfigError(
            f"{folder} was trained with other settings ({settings_path}); use another --out"
        )
    settings_path.write_text(json.dumps(settings, indent=1) + "\n")
    if not (model_dir / "model.safetensors").exists():
        build(model_dir, seed=seed, llm_width=llm_width)
    adapter = from_pretrained(str(model_dir), device="cpu", dtype="float32")
    model = adapter.model
    model.train()
    torch.manual_seed(seed)
    hidden_size = adapter.capabilities.hidden_size
    head = probe_head(hidden_size, centres=centre_weight > 0)
    readout = (
        readout_head(hidden_size, counts=count_weight > 0)
        if readout_weight or count_weight
        else None
    )
    params = [*model.parameters(), *head.parameters()]
    if readout is not None:
        params += list(readout.parameters())
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=0.01, betas=(0.9, 0.98))
    warmup = max(1, steps // 30)

    def lr_at(step: int) -> float:
        if step < warmup:
            return lr * (step + 1) / warmup
        t = (step - warmup) / max(1, steps - warmup)
        return lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * t)))

    last = steps if stop_after is None else min(steps, stop_after)
    step, chunk, offset = 0, 0, 0
    if state_path.exists():
        state = torch.load(state_path, weights_only=False)
        model.load_state_dict(state["model"])
        head.load_state_dict(state["head"])
        if readout is not None:
            readout.load_state_dict(state["readout"])
        opt.load_state_dict(state["opt"])
        step, chunk, offset = state["step"], state["chunk"], state["offset"]
        torch.set_rng_state(state["torch_rng"])
        log.info("resuming at step %d (chunk %d, offset %d)", step, chunk, offset)
    log_path = folder / "log.jsonl"
    trained_seconds = 0.0  # training time up to the checkpoint resumed from
    if log_path.exists():  # rows after the checkpoint resumed from are written again below
        rows = [r for r in log_path.read_text().splitlines() if r.strip()]
        kept = [r for r in rows if json.loads(r)["step"] <= step]
        if len(kept) < len(rows):
            log_path.write_text("".join(r + "\n" for r in kept))
        if kept:
            trained_seconds = float(json.loads(kept[-1])["seconds"])
    log_file = log_path.open("a")
    bar = tqdm(total=steps, initial=step, desc="train micro", unit="step", dynamic_ncols=True)
    loader = (
        _iterable(
            chunk,
            {
                "base_seed": seed,
                "single_tile_worlds": single_tile_worlds,
                "single_tile_share": single_tile_share,
                "big_world_share": big_world_share,
                "size_jitter": size_jitter,
            },
        )
        if step < last
        else []  # nothing left to train: no world is built
    )
    # A resumed run's seconds continue from its checkpoint: the log (and the model card)
    # give the training time of the whole run, not of its last process.
    started = time.perf_counter() - trained_seconds
    try:
        for c, examples in loader:
            while offset + batch <= len(examples) and step < last:
                group = examples[offset : offset + batch]
                for g in opt.param_groups:
                    g["lr"] = lr_at(step)
                images = [im for e in group for im in e.images]
                feats = encode_with_grad(adapter, images)
                total = torch.zeros(())
                stats: dict[str, list[float]] = {
                    "answer": [],
                    "grounding": [],
                    "share": [],
                    "chance": [],
                    "correct": [],
                    "tokens": [],
                    "readout": [],
                    "count": [],
                    "centre": [],
                    "null": [],
                    "null_mass": [],
                    "present": [],
                    "present_mass": [],
                    "count_mass": [],
                    "centre_mass": [],
                    "centre_goal": [],
                }
                aux = token_losses(head, feats, group) if token_weight or centre_weight else None
                if aux is not None:
                    total = total + token_weight * aux.probe
                    stats["tokens"].append(float(aux.probe.detach()))
                    if aux.centre is not None:
                        total = total + centre_weight * aux.centre
                        stats["centre"].append(float(aux.centre.detach()))
                i = 0
                for j, e in enumerate(group):
                    n = len(e.images)
                    if (
                        focus_fill
                        and e.answer is not None
                        and e.inside is not None
                        and np.random.default_rng([seed, step, j]).random() < focus_fill
                    ):  # keep what ask would keep besides the targets
                        e = focus_filled(e, focus_scores(adapter, e, feats[i : i + n], FOCUS_LAYER))
                    losses = example_losses(adapter, e, feats[i : i + n], FOCUS_LAYER, readout)
                    i += n
                    if losses.answer is not None:
                        total = total + answer_weight * losses.answer / batch
                        stats["answer"].append(float(losses.answer.detach()))
                        stats["correct"].append(float(bool(losses.answer_correct)))
                    if losses.readout is not None:
                        total = total + readout_weight * losses.readout / batch
                        stats["readout"].append(float(losses.readout.detach()))
                    if losses.count is not None:
                        total = total + count_weight * losses.count / batch
                        stats["count"].append(float(losses.count.detach()))
                    if losses.null is not None:
                        if null_weight:
                            total = total + null_weight * losses.null / batch
                        stats["null"].append(float(losses.null.detach()))
                        stats["null_mass"].append(float(losses.vision_mass or 0.0))
                    if losses.present is not None:
                        if present_weight:
                            total = total + present_weight * losses.present / batch
                        stats["present"].append(float(losses.present.detach()))
                        stats["present_mass"].append(float(losses.present_mass or 0.0))
                    if losses.count_mass is not None:
                        if count_mass_weight:
                            total = total + count_mass_weight * losses.count_mass / batch
                        stats["count_mass"].append(float(losses.count_mass.detach()))
                        stats["centre_mass"].append(float(losses.centre_mass or 0.0))
                        stats["centre_goal"].append(float(losses.centre_goal or 0.0))
                    if losses.grounding is not None:
                        total = total + grounding_weight * losses.grounding / batch
                        stats["grounding"].append(float(losses.grounding.detach()))
                        stats["share"].append(float(losses.target_share or 0.0))
                        stats["chance"].append(float(losses.chance_share or 0.0))
                opt.zero_grad(set_to_none=True)
                if total.requires_grad:
                    total.backward()
                    torch.nn.utils.clip_grad_norm_(params, 1.0)
                    opt.step()
                step += 1
                offset += batch
                row = {
                    "step": step,
                    "lr": lr_at(step - 1),
                    "seconds": round(time.perf_counter() - started, 1),
                }
                row.update({k: round(float(np.mean(v)), 4) for k, v in stats.items() if v})
                log_file.write(json.dumps(row) + "\n")
                bar.update(1)
                bar.set_postfix(
                    ans=row.get("answer", float("nan")),
                    grd=row.get("grounding", float("nan")),
                    share=row.get("share", float("nan")),
                )
                if step % checkpoint_every == 0 or step == last:
                    log_file.flush()
                    _checkpoint(state_path, model, head, opt, step, c, offset, readout)
            if step >= last:
                break
            offset = 0
            chunk = c + 1
    finally:
        bar.close()
        log_file.close()
    model.eval()
    model.save_pretrained(model_dir, safe_serialization=True)
    _checkpoint(state_path, model, head, opt, step, chunk, offset, readout)
    from lrsvqa.micro.evaluate import evaluate_single_tile

    report = evaluate_single_tile(str(model_dir), n_questions=eval_questions)
    (folder / "eval.json").write_text(json.dumps(report, indent=1) + "\n")
    return model_dir


def _checkpoint(
    path: Path,
    model: Any,
    head: Any,
    opt: Any,
    step: int,
    chunk: int,
    offset: int,
    readout: Any = None,
) -> None:
    tmp = path.with_suffix(".tmp")
    torch.save(
        {
            "model": model.state_dict(),
            "head": head.state_dict(),
            **({"readout": readout.state_dict()} if readout is not None else {}),
            "opt": opt.state_dict(),
            "step": step,
            "chunk": chunk,
            "offset": offset,
            "torch_rng": torch.get_rng_state(),
        },
        tmp,
    )
    os.replace(tmp, path)


def main(argv: list[str] | None = None) -> None:
    import inspect

    from lrsvqa.micro.data import BIG_SIZES, SIZES

    # The defaults are train()'s (the shipped recipe), written once.
    d = {k: p.default for k, p in inspect.signature(train).parameters.items()}
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True)
    parser.add_argument("--steps", type=int, default=d["steps"])
    parser.add_argument("--batch", type=int, default=d["batch"])
    parser.add_argument("--lr", type=float, default=d["lr"])
    parser.add_argument("--answer-weight", type=float, default=d["answer_weight"])
    parser.add_argument("--grounding-weight", type=float, default=d["grounding_weight"])
    parser.add_argument("--token-weight", type=float, default=d["token_weight"])
    parser.add_argument(
        "--readout-weight",
        type=float,
        default=d["readout_weight"],
        help="Training-only probe at the last prompt token: the asked-about object's class "
        "and colour (0: off).",
    )
    parser.add_argument(
        "--centre-weight",
        type=float,
        default=d["centre_weight"],
        help="Token probe: also name how many objects are centred in each token's cell, "
        "one mark per object for counting (0: off).",
    )
    parser.add_argument(
        "--count-weight",
        type=float,
        default=d["count_weight"],
        help="Readout probe: also name how many objects a count or presence question is "
        "about (0: off).",
    )
    parser.add_argument("--seed", type=int, default=d["seed"])
    parser.add_argument(
        "--single-tile-worlds",
        type=int,
        default=d["single_tile_worlds"],
        help="Curriculum: the first N training worlds are single 224 px tiles.",
    )
    parser.add_argument(
        "--single-tile-share",
        type=float,
        default=d["single_tile_share"],
        help="Mix single 224 px tiles into the whole stream: this share of the worlds.",
    )
    parser.add_argument(
        "--big-worlds",
        type=float,
        default=d["big_world_share"],
        help=f"This share of the worlds after the single-tile phase is {min(BIG_SIZES):,}-"
        f"{max(BIG_SIZES):,} px instead of at most {max(SIZES):,} px (0: none).",
    )
    parser.add_argument(
        "--size-jitter",
        type=float,
        default=d["size_jitter"],
        help="World sides (but the single tile's) are scaled by a factor in [1 - J, 1 + J], "
        "off the multiples of 224 px, so edge tiles reach past the image as in users' scenes "
        "(0: none).",
    )
    parser.add_argument(
        "--focus-fill",
        type=float,
        default=d["focus_fill"],
        help="This share of the answer passes keeps, after the asked-about objects' tokens, "
        "the tokens the model's own focus ranks highest (as ask keeps them) instead of "
        "random ones (0: none).",
    )
    parser.add_argument(
        "--null-weight",
        type=float,
        default=d["null_weight"],
        help="Count and presence questions about no object (an absent class, a count of 0): "
        "minus the log of the focus layer's attention share off the vision tokens, so that "
        "finding nothing shows in the attention (0: off; the share is logged either way).",
    )
    parser.add_argument(
        "--count-mass-weight",
        type=float,
        default=d["count_mass_weight"],
        help="Count questions: the focus layer's attention share on the kept cells of the "
        "n asked-about objects' centres is trained towards n / (n + 1) (binary cross-"
        "entropy), one share per object against one left off them, so the attention "
        "itself carries the count (0: off; the share is logged either way).",
    )
    parser.add_argument(
        "--present-weight",
        type=float,
        default=d["present_weight"],
        help="Presence questions about a class in the tiles: minus the log of the focus "
        "layer's attention share (over the whole sequence, not renormalised) on its "
        "tokens; with --null-weight the attention then says present or absent by itself "
        "(0: off; the share is logged either way).",
    )
    parser.add_argument(
        "--llm-width",
        type=int,
        default=d["llm_width"],
        help="The LLM's hidden size (a multiple of 64; MLP and heads scale with it) instead "
        "of 128 (0: 128).",
    )
    parser.add_argument("--threads", type=int, default=d["threads"])
    parser.add_argument("--eval-questions", type=int, default=d["eval_questions"])
    parser.add_argument(
        "--stop-after",
        type=int,
        default=None,
        help="End this process at step N of the --steps schedule (model saved and evaluated "
        "there); the same command without it continues the run.",
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from lrsvqa.errors import LrsvqaError

    try:
        _train_from(args)
    except LrsvqaError as exc:  # a user's mistake: one line, exit 2
        print(f"lrsvqa.micro.train: error: {exc}", file=sys.stderr)
        raise SystemExit(2) from None


def _train_from(args: argparse.Namespace) -> None:
    train(
        args.out,
        steps=args.steps,
        batch=args.batch,
        lr=args.lr,
        answer_weight=args.answer_weight,
        grounding_weight=args.grounding_weight,
        token_weight=args.token_weight,
        readout_weight=args.readout_weight,
        centre_weight=args.centre_weight,
        count_weight=args.count_weight,
        seed=args.seed,
        single_tile_worlds=args.single_tile_worlds,
        single_tile_share=args.single_tile_share,
        big_world_share=args.big_worlds,
        size_jitter=args.size_jitter,
        focus_fill=args.focus_fill,
        llm_width=args.llm_width,
        null_weight=args.null_weight,
        count_mass_weight=args.count_mass_weight,
        present_weight=args.present_weight,
        threads=args.threads,
        eval_questions=args.eval_questions,
        stop_after=args.stop_after,
    )


if __name__ == "__main__":
    main()
