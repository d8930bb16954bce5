"""Run a model over LRS-VQA: resumable, crash-safe, shardable by image.

``run_benchmark`` answers every question of its shard that the run folder's
answer file lacks, one fsynced line per answer, scenes largest first with each
scene's questions together. A killed run is resumed by running the same
command again; a different model or configuration in the same folder is
refused. ``lrsvqa.bench.shard.merge_run`` joins the shard files of a sharded run.
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from lrsvqa.bench.answers import (
    AnswerLog,
    answer_record,
    mme_answer_record,
    read_answer_lines,
    write_json_atomic,
)
from lrsvqa.bench.loader import load_lrsvqa, missing_images
from lrsvqa.bench.manifest import (
    MANIFEST_FORMAT,
    check_identity,
    environment_info,
    now,
    read_manifest,
)
from lrsvqa.bench.mme import load_mme_rs
from lrsvqa.bench.prefetch import ScenePrefetcher
from lrsvqa.bench.records import MMEQuestion, Question, question_text
from lrsvqa.bench.shard import Shard, run_order, shard_questions
from lrsvqa.errors import ConfigError, DataError, LrsvqaError

log = logging.getLogger(__name__)

#: Seconds between manifest rewrites while a run goes (it is always written at the end).
MANIFEST_EVERY_S = 30.0
#: At most this many paths or ids are listed in a message or a manifest list.
MAX_LISTED = 200


class AnswerLike(Protocol):
    """What the runner needs of an answer."""

    text: str

    def to_dict(self) -> dict[str, Any]: ...


class Answerer(Protocol):
    """What the runner needs of a model pipeline (``lrsvqa.pipeline.Pipeline``)."""

    @property
    def model_id(self) -> str: ...

    @property
    def revision(self) -> str | None: ...

    def config_dict(self) -> dict[str, Any]: ...

    def ask(self, scene: str, question: str) -> AnswerLike: ...


@dataclass(frozen=True)
class RunOptions:
    """Everything a benchmark run is given; ``identity()`` must match on resume."""

    data: Path
    image_root: Path
    out: Path
    model: str
    revision: str | None = None
    selector: str = "rfm"
    keep_ratio: float | None = None
    max_tiles: int | None = None
    budget: int | None = None
    device: str = "auto"
    limit: int | None = None
    sources: tuple[str, ...] | None = None
    categories: tuple[str, ...] | None = None
    size_bins: tuple[str, ...] | None = None
    shard: Shard = field(default_factory=Shard)
    skip_missing: bool = False
    progress: bool = True
    focus: str = "attention"  # token scorer: attention or distilled:PATH
    max_new_tokens: int | None = 32  # None: the preset's (per model)
    llm_prune: dict[str, Any] = field(default_factory=dict)  # LLMPruneConfig fields
    # Other FocusConfig fields set away from their default (max_depth, layers, seed, …).
    focus_extra: dict[str, Any] = field(default_factory=dict)
    ray: str | None = None  # None: this process; "local": a new local Ray; else its address
    ray_actors: int | None = None
    ray_num_cpus: int | None = None
    benchmark: str = "lrsvqa"  # or "mme-rs" (MME-RealWorld, remote-sensing subset)
    mrope_positions: str = "scene"  # or "compact" (PruneConfig.mrope_positions)
    preset: str | None = None  # e.g. "lrsvqa-release" (lrsvqa.pipeline.preset)

    def identity(self) -> dict[str, Any]:
        """The options that change answers (``None``: the pipeline's default)."""
        extra: dict[str, Any] = {"focus_extra": self.focus_extra} if self.focus_extra else {}
        if self.benchmark != "lrsvqa":
            extra["benchmark"] = self.benchmark
        if self.mrope_positions != "scene":  # runs from before the option resume unchanged
            extra["mrope_positions"] = self.mrope_positions
        if self.preset is not None:
            extra["preset"] = self.preset
        return {
            **extra,
            "model": self.model,
            "revision": self.revision,
            "selector": self.selector,
            "keep_ratio": self.keep_ratio,
            "max_tiles": self.max_tiles,
            "budget": self.budget,
            "focus": self.focus,
            "llm_prune": self.llm_prune,
            "max_new_tokens": self.max_new_tokens,
        }

    def data_dict(self) -> dict[str, Any]:
        """Where the questions come from and which were chosen."""
        return {
            "file": str(self.data),
            "image_root": str(self.image_root),
            "sources": None if self.sources is None else list(self.sources),
            "categories": None if self.categories is None else list(self.categories),
            "size_bins": None if self.size_bins is None else list(self.size_bins),
            "limit": self.limit,
        }


@dataclass
class RunSummary:
    """Outcome of ``run_benchmark`` for one shard."""

    run_dir: Path
    answers_file: Path
    manifest_file: Path
    shard: Shard
    status: str = "running"
    total: int = 0
    done: int = 0
    answered: int = 0
    skipped: int = 0
    failed: int = 0
    repaired_bytes: int = 0
    failed_ids: list[str] = field(default_factory=list)
    missing_images: list[str] = field(default_factory=list)
    seconds: float = 0.0

    def counts(self) -> dict[str, int]:
        """``total``, ``done``, ``answered`` (this run), ``skipped``, ``failed``."""
        return {
            "total": self.total,
            "done": self.done,
            "answered": self.answered,
            "skipped": self.skipped,
            "failed": self.failed,
        }

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready dict."""
        return {
            "status": self.status,
            "run_dir": str(self.run_dir),
            "answers_file": str(self.answers_file),
            "manifest_file": str(self.manifest_file),
            "shard": self.shard.to_dict(),
            **self.counts(),
            "repaired_bytes": self.repaired_bytes,
            "failed_ids": self.failed_ids[:MAX_LISTED],
            "missing_images": self.missing_images[:MAX_LISTED],
            "seconds": round(self.seconds, 3),
        }


def _listed(items: list[str]) -> str:
    more = f" … and {len(items) - 10} more" if len(items) > 10 else ""
    return ", ".join(items[:10]) + more


def _progress_bar(total: int, enabled: bool) -> Any:
    from tqdm.auto import tqdm

    return tqdm(
        total=total,
        unit="q",
        desc="lrsvqa bench",
        file=sys.stderr,
        disable=not enabled or not sys.stderr.isatty(),
        dynamic_ncols=True,
    )


def run_benchmark(
    options: RunOptions, make_answerer: Callable[[RunOptions], Answerer]
) -> RunSummary:
    """Answer the shard's questions not yet in ``options.out``; return what happened.

    Missing images raise DataError (listing them) unless ``skip_missing``. A
    question whose scene fails with an LrsvqaError is logged to the errors
    file and retried by the next run; other exceptions stop the run, and what
    was answered stays. ``make_answerer`` is called only if there is work.
    """
    started, t0 = now(), time.monotonic()
    shard, out = options.shard, options.out
    questions = load_questions(options)
    ordered = run_order(questions)
    mine = shard_questions(ordered, shard)
    missing = [str(p) for p in missing_images(mine)]
    if missing and not options.skip_missing:
        raise DataError(
            f"{len(missing)} image(s) missing under {options.image_root}: {_listed(missing)}; "
            "fix --image-root or pass --skip-missing to answer the others"
        )
    for path in missing:
        log.warning("image missing, its questions are skipped: %s", path)
    missing_set = set(missing)

    out.mkdir(parents=True, exist_ok=True)
    check_identity(out, "identity", options.identity())
    summary = RunSummary(
        out, out / shard.answers_name, out / shard.manifest_name, shard, missing_images=missing
    )
    previous = read_manifest(summary.manifest_file) if summary.manifest_file.exists() else {}
    manifest: dict[str, Any] = {
        "format": MANIFEST_FORMAT,
        "status": "running",
        "identity": options.identity(),
        "config": previous.get("config"),
        "model": {"id": options.model, "revision": options.revision, "device": options.device},
        "data": options.data_dict(),
        "shard": {**shard.to_dict(), "images": len({q.image for q in mine})},
        "answers_file": shard.answers_name,
        "errors_file": shard.errors_name,
        **environment_info(),
        "first_started": previous.get("first_started", previous.get("started", started)),
        "started": started,
        "ended": None,
        "runs": int(previous.get("runs", 0)) + 1,
        "counts": {},
        "failed_ids": [],
        "missing_images": missing[:MAX_LISTED],
        "question_ids": [q.question_id for q in ordered],
    }

    def save(status: str | None = None) -> None:
        if status is not None:
            summary.status = manifest["status"] = status
            manifest["ended"] = now()
        summary.seconds = time.monotonic() - t0
        manifest["counts"] = summary.counts()
        manifest["failed_ids"] = summary.failed_ids[:MAX_LISTED]
        write_json_atomic(summary.manifest_file, manifest)

    with AnswerLog(summary.answers_file) as answers:
        summary.repaired_bytes = answers.repaired_bytes
        done_ids = {line.question_id for line in _resume_lines(summary.answers_file)}
        todo = [
            q
            for q in mine
            if q.question_id not in done_ids and str(q.image_path) not in missing_set
        ]
        summary.total = len(mine)
        summary.skipped = sum(1 for q in mine if str(q.image_path) in missing_set)
        summary.done = sum(1 for q in mine if q.question_id in done_ids)
        log.info(
            "%s: %d questions in shard %d/%d, %d already answered, %d to do",
            out,
            summary.total,
            shard.rank,
            shard.world_size,
            summary.done,
            len(todo),
        )
        save()
        if not todo:
            save(_final_status(summary))
            return summary
        try:
            _answer_all(todo, options, make_answerer, answers, summary, manifest, save)
        except KeyboardInterrupt:
            save("interrupted")
            raise
        except BaseException:
            save("crashed")
            raise
    save(_final_status(summary))
    return summary


BENCHMARKS = ("lrsvqa", "mme-rs")


def load_questions(options: RunOptions) -> list[Any]:
    """The run's questions: LRS-VQA ``Question``s, or MME-RealWorld-RS ``MMEQuestion``s."""
    if options.benchmark == "lrsvqa":
        return load_lrsvqa(
            options.data,
            options.image_root,
            sources=options.sources,
            categories=options.categories,
            size_bins=options.size_bins,
            limit=options.limit,
        )
    if options.benchmark != "mme-rs":
        raise ConfigError(
            f"unknown benchmark {options.benchmark!r}; valid: {', '.join(BENCHMARKS)}"
        )
    if options.sources or options.size_bins:
        raise ConfigError("--source and --size-bin are LRS-VQA filters; mme-rs has neither")
    questions = load_mme_rs(options.data, options.image_root)
    if options.categories:
        wanted = {c.lower() for c in options.categories}
        questions = [q for q in questions if q.category.lower() in wanted]
    return questions[: options.limit] if options.limit is not None else questions


def question_record(q: Question | MMEQuestion, answer: dict[str, Any]) -> dict[str, Any]:
    """The answer line of either benchmark."""
    return mme_answer_record(q, answer) if isinstance(q, MMEQuestion) else answer_record(q, answer)


def _resume_lines(path: Path) -> list[Any]:
    lines = read_answer_lines(path, tolerate_torn_tail=False, allow_duplicates=True)
    ids = [line.question_id for line in lines]
    if len(ids) != len(set(ids)):
        log.warning("%s repeats some question ids; merge and report keep the first", path)
    return lines


def _final_status(summary: RunSummary) -> str:
    complete = summary.done + summary.skipped == summary.total and not summary.failed
    return "complete" if complete else "incomplete"


#: One question's outcome: the answer's ``to_dict()``, or (error class name, message).
Outcome = tuple[Question, dict[str, Any] | None, tuple[str, str] | None]


def _local_answers(
    todo: list[Question], answerer: Answerer, use_config: Callable[[dict[str, Any]], None]
) -> Iterator[Outcome]:
    use_config(
        {
            "model_id": answerer.model_id,
            "revision": answerer.revision,
            "answerer": answerer.config_dict(),
        }
    )
    with ScenePrefetcher(answerer, [str(q.image_path) for q in todo]) as prefetcher:
        for q in todo:
            prefetcher.before(str(q.image_path))  # next scene read while this one runs
            try:
                yield q, answerer.ask(str(q.image_path), question_text(q)).to_dict(), None
            except LrsvqaError as exc:
                yield q, None, (type(exc).__name__, str(exc))


def _answer_all(
    todo: list[Question],
    options: RunOptions,
    make_answerer: Callable[[RunOptions], Answerer],
    answers: AnswerLog,
    summary: RunSummary,
    manifest: dict[str, Any],
    save: Callable[..., None],
) -> None:
    def use_config(config: dict[str, Any]) -> None:
        check_identity(options.out, "config", config)
        manifest["config"] = config
        manifest["model"].update(id=config["model_id"], revision=config["revision"])
        save()

    if options.ray is not None:
        from lrsvqa.bench.ray_pool import ray_question_answers

        results = ray_question_answers(todo, options, make_answerer, use_config)
    else:
        results = _local_answers(todo, make_answerer(options), use_config)
    last_save = time.monotonic()
    errors: AnswerLog | None = None
    try:
        with _progress_bar(len(todo), options.progress) as bar:
            for q, answer, exc in results:
                if answer is None:
                    assert exc is not None
                    log.error("%s (%s): %s: %s", q.question_id, q.image, exc[0], exc[1])
                    if errors is None:
                        errors = AnswerLog(options.out / options.shard.errors_name).__enter__()
                    errors.append(
                        {
                            "question_id": q.question_id,
                            "image": q.image,
                            "error": exc[0],
                            "message": exc[1],
                            "time": now(),
                        }
                    )
                    summary.failed += 1
                    summary.failed_ids.append(q.question_id)
                else:
                    answers.append(question_record(q, answer))
                    summary.answered += 1
                    summary.done += 1
                bar.update(1)
                if time.monotonic() - last_save > MANIFEST_EVERY_S:
                    save()
                    last_save = time.monotonic()
    finally:
        if errors is not None:
            errors.close()
