"""Run order and sharding of a benchmark run, by image.

Questions are grouped by image (a scene's questions run one after another, so
the answerer's per-scene cache is used), images largest first, ties broken by
path: the order is the same on every machine. Shards split images, never a
scene: images are dealt, largest first, to the shard with the fewest pixels so
far (ties to the lowest rank), so every image lands in exactly one shard and
shards get similar work. ``merge_run`` joins the shards' answer files.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lrsvqa.bench.answers import read_answer_lines, write_json_atomic, write_jsonl_atomic
from lrsvqa.bench.manifest import merged_question_ids, now, read_manifest, run_manifests
from lrsvqa.bench.records import Question
from lrsvqa.errors import ConfigError, DataError

log = logging.getLogger(__name__)

#: At most this many ids are listed in a merge summary.
MAX_LISTED = 200

_SHARD = re.compile(r"^\s*(\d+)\s*/\s*(\d+)\s*$")


@dataclass(frozen=True)
class Shard:
    """One shard of a run: ``rank`` in ``0 .. world_size - 1``."""

    rank: int = 0
    world_size: int = 1

    def __post_init__(self) -> None:
        if self.world_size < 1 or not 0 <= self.rank < self.world_size:
            raise ConfigError(
                f"shard {self.rank}/{self.world_size}: need 0 <= rank < world size "
                "(e.g. --shard 0/2 and --shard 1/2)"
            )

    @property
    def sharded(self) -> bool:
        """Whether the run is split at all."""
        return self.world_size > 1

    @property
    def suffix(self) -> str:
        """File-name infix: ``""`` or ``".shard-0-of-2"``."""
        return f".shard-{self.rank}-of-{self.world_size}" if self.sharded else ""

    @property
    def answers_name(self) -> str:
        """Name of this shard's answer file inside the run folder."""
        return f"answers{self.suffix}.jsonl"

    @property
    def manifest_name(self) -> str:
        """Name of this shard's manifest inside the run folder."""
        return f"manifest{self.suffix}.json"

    @property
    def errors_name(self) -> str:
        """Name of this shard's error log inside the run folder."""
        return f"errors{self.suffix}.jsonl"

    def to_dict(self) -> dict[str, int]:
        """Plain JSON-ready dict."""
        return {"rank": self.rank, "world_size": self.world_size}


def parse_shard(text: str) -> Shard:
    """``"1/4"`` → ``Shard(1, 4)``; ConfigError otherwise."""
    match = _SHARD.match(text)
    if match is None:
        raise ConfigError(f"--shard {text!r}: write it as RANK/WORLD_SIZE, e.g. 0/2")
    return Shard(int(match.group(1)), int(match.group(2)))


def _env_int(env: Mapping[str, str], key: str) -> int | None:
    value = env.get(key)
    if value is None or value.strip() == "":
        return None
    try:
        return int(value)
    except ValueError:
        raise ConfigError(f"environment variable {key}={value!r} is not an integer") from None


def resolve_shard(option: str | None, env: Mapping[str, str] | None = None) -> Shard:
    """The shard from ``--shard i/n``, else from torchrun/accelerate's ``RANK`` and
    ``WORLD_SIZE``, else the whole run. Both given and disagreeing: ConfigError."""
    env = os.environ if env is None else env
    rank, world = _env_int(env, "RANK"), _env_int(env, "WORLD_SIZE")
    from_env = None if world is None else Shard(rank or 0, world)
    if option is not None:
        shard = parse_shard(option)
        if from_env is not None and from_env.sharded and from_env != shard:
            raise ConfigError(
                f"--shard {option} disagrees with RANK={rank} WORLD_SIZE={world} "
                "from the environment; give one of them"
            )
        return shard
    return from_env or Shard()


def resolve_device(device: str, env: Mapping[str, str] | None = None) -> str:
    """The device a (torchrun/accelerate rank's) model goes on.

    ``auto``: ``cuda:$LOCAL_RANK`` (modulo the GPUs seen) when CUDA is usable, else
    ``cpu`` with this rank's share of the cores as torch's thread pool. A named device
    that cannot be used here (``cuda`` without CUDA, ``cuda:3`` on a 2-GPU machine, an
    unknown name) is a ConfigError naming it.
    """
    import torch

    env = os.environ if env is None else env
    local_rank = _env_int(env, "LOCAL_RANK")
    if device == "auto":
        gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if gpus:
            return "cuda" if local_rank is None else f"cuda:{local_rank % gpus}"
        _size_cpu_threads(env)
        return "cpu"
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError):
        raise ConfigError(
            f"--device {device!r}: unknown device; use auto, cpu, cuda or cuda:N"
        ) from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError(
                f"--device {device}: CUDA is not available here (torch {torch.__version__}, "
                f"CUDA build {torch.version.cuda or 'none'}); use --device auto or cpu"
            )
        gpus = torch.cuda.device_count()
        if dev.index is not None and dev.index >= gpus:
            raise ConfigError(
                f"--device {device}: this machine has {gpus} CUDA device(s) (0..{gpus - 1})"
            )
    elif dev.type == "mps" and not torch.backends.mps.is_available():
        raise ConfigError(f"--device {device}: MPS is not available here; use --device auto or cpu")
    elif dev.type == "cpu":
        _size_cpu_threads(env)
    elif dev.type not in ("cuda", "mps", "cpu"):
        raise ConfigError(f"--device {device}: lrsvqa runs on cpu, cuda or mps")
    return device


def cpu_threads(env: Mapping[str, str] | None = None) -> int:
    """This rank's share of the cores: all of them, divided among ``LOCAL_WORLD_SIZE``
    ranks under torchrun/accelerate."""
    env = os.environ if env is None else env
    try:
        cores = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cores = os.cpu_count() or 1
    ranks = _env_int(env, "LOCAL_WORLD_SIZE") or 1
    return max(1, cores // max(ranks, 1))


def _size_cpu_threads(env: Mapping[str, str]) -> None:
    # torchrun sets OMP_NUM_THREADS=1 in every rank; a CPU rank should use its cores.
    if _env_int(env, "LOCAL_RANK") is None:
        return
    import torch

    threads = cpu_threads(env)
    if torch.get_num_threads() != threads:
        torch.set_num_threads(threads)
    log.info("CPU rank %s: %d torch threads", env.get("LOCAL_RANK"), threads)


def _pixels(q: Question) -> int:
    size = getattr(q, "image_size", None)  # MME questions carry no size: ordered by path
    return size[0] * size[1] if size else 0


def run_order(questions: Iterable[Question]) -> list[Question]:
    """Questions grouped by image, images largest first (then by path), each
    image's questions in file order."""
    by_image: dict[str, list[Question]] = {}
    for q in questions:
        by_image.setdefault(q.image, []).append(q)
    images = sorted(by_image, key=lambda im: (-_pixels(by_image[im][0]), im))
    return [q for im in images for q in by_image[im]]


def assign_images(ordered: Sequence[Question], world_size: int) -> dict[str, int]:
    """Image → shard rank, balanced greedily by pixels over ``run_order``."""
    loads = [0] * world_size
    assignment: dict[str, int] = {}
    for q in ordered:
        if q.image in assignment:
            continue
        rank = min(range(world_size), key=lambda r: (loads[r], r))
        assignment[q.image] = rank
        loads[rank] += _pixels(q)
    return assignment


def shard_questions(ordered: Sequence[Question], shard: Shard) -> list[Question]:
    """The questions of ``shard``, in run order."""
    if not shard.sharded:
        return list(ordered)
    assignment = assign_images(ordered, shard.world_size)
    return [q for q in ordered if assignment[q.image] == shard.rank]


@dataclass
class MergeSummary:
    """Outcome of ``merge_run``."""

    answers_file: Path
    files: list[Path]
    answers: int
    duplicates: int
    expected: int
    missing: list[str]

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready dict."""
        return {
            "answers_file": str(self.answers_file),
            "files": [str(f) for f in self.files],
            "answers": self.answers,
            "duplicates_dropped": self.duplicates,
            "expected": self.expected,
            "missing": len(self.missing),
            "missing_ids": self.missing[:MAX_LISTED],
        }


def _shard_key(path: Path) -> tuple[int, int, str]:
    parts = path.name.split(".")[1].split("-")  # answers.shard-R-of-N.jsonl
    try:
        return int(parts[3]), int(parts[1]), path.name
    except (IndexError, ValueError):
        return (1 << 30, 0, path.name)


def merge_run(run_dir: str | Path) -> MergeSummary:
    """Merge ``answers.shard-*.jsonl`` (after an existing ``answers.jsonl``) into
    ``answers.jsonl``: first answer of each id kept, run order, written atomically.
    Questions the manifests list but nobody answered are reported as missing."""
    run_dir = Path(run_dir)
    shard_files = sorted(run_dir.glob("answers.shard-*.jsonl"), key=_shard_key)
    if not shard_files:
        raise DataError(f"{run_dir}: no answers.shard-*.jsonl files to merge")
    target = run_dir / "answers.jsonl"
    files = ([target] if target.exists() else []) + shard_files
    records: dict[str, dict[str, Any]] = {}
    duplicates = 0
    for file in files:
        for line in read_answer_lines(file, tolerate_torn_tail=True, allow_duplicates=True):
            if line.question_id in records:
                duplicates += 1
            else:
                records[line.question_id] = line.record
    manifests = run_manifests(run_dir)
    order = merged_question_ids(manifests)
    position = {qid: i for i, qid in enumerate(order)}
    merged = sorted(
        records.values(),
        key=lambda r: (position.get(r["question_id"], len(order)), r["question_id"]),
    )
    write_jsonl_atomic(target, merged)
    missing = [qid for qid in order if qid not in records]
    summary = MergeSummary(target, files, len(merged), duplicates, len(order), missing)
    _write_merge_manifest(run_dir, manifests, summary, order)
    if missing:
        log.warning(
            "%d of %d questions have no answer: %s",
            len(missing),
            len(order),
            ", ".join(missing[:10]),
        )
    return summary


def _write_merge_manifest(
    run_dir: Path,
    manifests: list[tuple[Path, dict[str, Any]]],
    summary: MergeSummary,
    order: list[str],
) -> None:
    path = run_dir / "manifest.json"
    shards = [(p, m) for p, m in manifests if p.name != "manifest.json"]
    base = read_manifest(path) if path.exists() else {}
    if not base and shards:
        first = shards[0][1]
        keep = ("format", "identity", "config", "model", "data", "versions", "git", "command")
        base = {k: first.get(k) for k in keep}
        base.update(status="merged", shard=None, question_ids=order)
    base["merge"] = {
        "time": now(),
        "shards": {
            p.name: {"status": m.get("status"), **(m.get("counts") or {})} for p, m in shards
        },
        **summary.to_dict(),
    }
    write_json_atomic(path, base)
