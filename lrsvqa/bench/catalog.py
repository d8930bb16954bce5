"""``ask-many`` runs: many scenes × questions → tables, resumable like ``bench``.

The run folder sits beside the output (``ships.parquet`` → ``ships.parquet.lrsvqa/``)
and holds what ``bench`` keeps: an append-only fsynced answer log per shard, an
errors log and a manifest whose identity must match on resume. Rerunning the
same command skips what is answered and retries failed scenes; when every shard
is finished the tables are (re)written from the logs: the answers table at
``--out``, ``.errors`` beside it, and ``.evidence`` with ``--evidence-table``.
"""

from __future__ import annotations

import fcntl
import logging
import os
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lrsvqa.bench.answers import AnswerLog, read_answer_lines, write_json_atomic
from lrsvqa.bench.manifest import (
    check_identity,
    environment_info,
    merged_question_ids,
    now,
    read_manifest,
    run_manifests,
)
from lrsvqa.bench.shard import Shard
from lrsvqa.errors import ConfigError, DataError
from lrsvqa.pipeline.many import ask_scene_rows
from lrsvqa.pipeline.sources import SceneRef, expand_sources
from lrsvqa.pipeline.tables import (
    answer_id,
    errors_dataframe,
    evidence_geodataframe,
    rows_to_geodataframe,
    side_table,
    table_format,
    write_table,
)

log = logging.getLogger(__name__)

MANIFEST_FORMAT = "lrsvqa-ask-many-manifest/1"
MANIFEST_EVERY_S = 30.0
FINISHED = ("complete", "incomplete")

#: One scene's results as a worker reports them: (scene, records, scene finished).
SceneResults = tuple[SceneRef, list[dict[str, Any]], bool]


def run_dir(out: Path) -> Path:
    """The run folder of an output table: ``ships.parquet`` → ``ships.parquet.lrsvqa``."""
    return out.with_name(out.name + ".lrsvqa")


@dataclass(frozen=True)
class ManyOptions:
    """Everything an ``ask-many`` run is given; ``identity()`` must match on resume."""

    sources: tuple[str, ...]
    questions: tuple[str, ...]
    out: Path
    model: dict[str, Any] = field(default_factory=dict)  # the pipeline's build options
    asset: str = "visual"
    bands: tuple[int, ...] | None = None
    evidence_table: bool = False
    shard: Shard = field(default_factory=Shard)
    progress: bool = True
    ray: str | None = None  # None: in this process; "local": a new local Ray; else an address
    ray_actors: int | None = None
    ray_num_cpus: int | None = None

    def identity(self) -> dict[str, Any]:
        """The options that change answers (the device does not)."""
        model = {k: v for k, v in sorted(self.model.items()) if k != "device"}
        return {"model": model, "asset": self.asset, "bands": self.bands}


@dataclass
class ManySummary:
    """Outcome of ``run_ask_many`` for one shard."""

    out: Path
    run_dir: Path
    shard: Shard
    status: str = "running"
    scenes: int = 0
    total: int = 0
    done: int = 0
    answered: int = 0
    failed_scenes: int = 0
    repaired_bytes: int = 0
    tables: dict[str, str] = field(default_factory=dict)
    seconds: float = 0.0

    def counts(self) -> dict[str, int]:
        return {
            "scenes": self.scenes,
            "total": self.total,
            "done": self.done,
            "answered": self.answered,
            "failed_scenes": self.failed_scenes,
        }

    def to_dict(self) -> dict[str, Any]:
        return {
            "status": self.status,
            "out": str(self.out),
            "run_dir": str(self.run_dir),
            "shard": self.shard.to_dict(),
            **self.counts(),
            "repaired_bytes": self.repaired_bytes,
            "tables": self.tables,
            "seconds": round(self.seconds, 3),
        }


def _scene_weight(ref: SceneRef) -> int:
    try:
        return os.stat(ref.location).st_size
    except OSError:
        return 0


def shard_scenes(refs: Sequence[SceneRef], shard: Shard) -> list[SceneRef]:
    """This shard's scenes: dealt largest file first to the lightest shard (ties to the
    lowest rank), the same on every rank; kept in input order."""
    if not shard.sharded:
        return list(refs)
    loads = [0] * shard.world_size
    owner: dict[int, int] = {}
    ranked = sorted(range(len(refs)), key=lambda i: (-_scene_weight(refs[i]), refs[i].location))
    for i in ranked:
        rank = min(range(shard.world_size), key=lambda r: (loads[r], r))
        owner[i] = rank
        loads[rank] += max(_scene_weight(refs[i]), 1)
    return [ref for i, ref in enumerate(refs) if owner[i] == shard.rank]


def local_results(
    answerer: Any, todo: Sequence[tuple[SceneRef, list[str]]], bands: tuple[int, ...] | None
) -> Iterator[SceneResults]:
    """Answers in this process, each yielded (and so logged) as soon as it exists."""
    for ref, questions in todo:
        for record in ask_scene_rows(answerer, ref, questions, bands=bands):
            yield ref, [record], False
        yield ref, [], True


def _progress_bar(total: int, enabled: bool) -> Any:
    from tqdm.auto import tqdm

    return tqdm(
        total=total,
        unit="scene",
        desc="lrsvqa ask-many",
        file=sys.stderr,
        disable=not enabled or not sys.stderr.isatty(),
        dynamic_ncols=True,
    )


def run_ask_many(options: ManyOptions, make_answerer: Callable[[ManyOptions], Any]) -> ManySummary:
    """Answer every scene × question of this shard not yet logged; write the tables
    when every shard is finished. ``make_answerer`` is called only if there is work."""
    t0, started = time.monotonic(), now()
    out, shard = options.out, options.shard
    table_format(out)
    if not options.questions:
        raise ConfigError("no questions: give at least one -q QUESTION")
    refs = expand_sources(options.sources, asset=options.asset)
    jobs = [answer_id(r.location, r.item_id, q) for r in refs for q in options.questions]
    mine = shard_scenes(refs, shard)
    side = run_dir(out)
    side.mkdir(parents=True, exist_ok=True)
    check_identity(side, "identity", options.identity())
    summary = ManySummary(out, side, shard, scenes=len(mine))
    manifest_file = side / shard.manifest_name
    previous = read_manifest(manifest_file) if manifest_file.exists() else {}
    manifest: dict[str, Any] = {
        "format": MANIFEST_FORMAT,
        "status": "running",
        "identity": options.identity(),
        "config": previous.get("config"),
        "model": {"id": options.model.get("model_id"), "device": options.model.get("device")},
        "sources": list(options.sources),
        "questions": list(options.questions),
        "out": str(out),
        "evidence_table": options.evidence_table,
        "shard": {**shard.to_dict(), "scenes": len(mine)},
        "answers_file": shard.answers_name,
        "errors_file": shard.errors_name,
        "executor": "ray" if options.ray is not None else "process",
        **environment_info(),
        "first_started": previous.get("first_started", started),
        "started": started,
        "ended": None,
        "runs": int(previous.get("runs", 0)) + 1,
        "counts": {},
        "question_ids": jobs,
    }

    def save(status: str | None = None) -> None:
        if status is not None:
            summary.status = manifest["status"] = status
            manifest["ended"] = now()
        summary.seconds = time.monotonic() - t0
        manifest["counts"] = summary.counts()
        write_json_atomic(manifest_file, manifest)

    with AnswerLog(side / shard.answers_name) as answers:
        summary.repaired_bytes = answers.repaired_bytes
        done = {
            line.question_id
            for line in read_answer_lines(
                answers.path, tolerate_torn_tail=False, allow_duplicates=True
            )
        }
        todo: list[tuple[SceneRef, list[str]]] = []
        for ref in mine:
            left = [
                q for q in options.questions if answer_id(ref.location, ref.item_id, q) not in done
            ]
            summary.total += len(options.questions)
            summary.done += len(options.questions) - len(left)
            if left:
                todo.append((ref, left))
        log.info("%s: %d scenes in shard, %d with questions to ask", out, len(mine), len(todo))
        save()
        if todo:
            try:
                _answer_all(todo, options, make_answerer, answers, summary, manifest, save)
            except KeyboardInterrupt:
                save("interrupted")
                raise
            except BaseException:
                save("crashed")
                raise
    complete = summary.done == summary.total
    save("complete" if complete else "incomplete")
    if _all_shards_finished(side, shard):
        summary.tables = {k: str(v) for k, v in write_results(out).items()}
    summary.seconds = time.monotonic() - t0
    return summary


def _answer_all(
    todo: list[tuple[SceneRef, list[str]]],
    options: ManyOptions,
    make_answerer: Callable[[ManyOptions], Any],
    answers: AnswerLog,
    summary: ManySummary,
    manifest: dict[str, Any],
    save: Callable[..., None],
) -> None:
    def use_config(config: Mapping[str, Any]) -> None:
        check_identity(summary.run_dir, "config", dict(config))
        manifest["config"] = dict(config)
        manifest["model"].update(id=config.get("model_id"), revision=config.get("revision"))
        save()

    if options.ray is not None:
        from functools import partial

        from lrsvqa.bench.ray_pool import ray_results

        results: Iterator[SceneResults] = ray_results(
            todo,
            partial(make_answerer, options),
            bands=options.bands,
            address=options.ray,
            actors=options.ray_actors,
            num_cpus=options.ray_num_cpus,
            on_config=use_config,
        )
    else:
        answerer = make_answerer(options)
        use_config(answerer_config(answerer))
        results = local_results(answerer, todo, options.bands)
    last_save = time.monotonic()
    with (
        AnswerLog(summary.run_dir / options.shard.errors_name) as errors,
        _progress_bar(len(todo), options.progress) as bar,
    ):
        for _ref, records, finished in results:
            for record in records:
                kind = record.pop("kind")
                if kind == "answer":
                    answers.append(
                        {"question_id": record["answer_id"], "text": record["answer"], **record}
                    )
                    summary.answered += 1
                    summary.done += 1
                else:
                    errors.append({**record, "time": now()})
                    summary.failed_scenes += 1
            if finished:
                bar.update(1)
            if time.monotonic() - last_save > MANIFEST_EVERY_S:
                save()
                last_save = time.monotonic()


def answerer_config(answerer: Any) -> dict[str, Any]:
    """What a run records of its answerer (and refuses to change on resume)."""
    return {
        "model_id": answerer.model_id,
        "revision": answerer.revision,
        "answerer": answerer.config_dict(),
    }


def _all_shards_finished(side: Path, shard: Shard) -> bool:
    if not shard.sharded:
        return True
    with open(side / "merge.lock", "a+") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        statuses = []
        for rank in range(shard.world_size):
            path = side / Shard(rank, shard.world_size).manifest_name
            statuses.append(read_manifest(path).get("status") if path.exists() else None)
    return all(s in FINISHED for s in statuses)


def _records(files: Sequence[Path]) -> list[dict[str, Any]]:
    records: dict[str, dict[str, Any]] = {}
    for file in files:
        for line in read_answer_lines(file, tolerate_torn_tail=True, allow_duplicates=True):
            records.setdefault(line.question_id, line.record)
    return list(records.values())


def _errors(files: Sequence[Path]) -> list[dict[str, Any]]:
    import json

    rows: list[dict[str, Any]] = []
    for file in files:
        for raw in file.read_bytes().split(b"\n"):
            if raw.strip():
                try:
                    rows.append(json.loads(raw))
                except ValueError:
                    log.warning("%s: skipping a torn error line", file)
    return rows


def write_results(out: str | os.PathLike[str]) -> dict[str, Path]:
    """(Re)write the tables of a run from its logs (every shard's), answers in run
    order without duplicates; the errors table lists the scenes still failing."""
    out = Path(out)
    side = run_dir(out)
    manifests = run_manifests(side)
    if not manifests:
        raise DataError(f"{side}: no ask-many run here (no manifest); run ask-many first")
    order = merged_question_ids(manifests)
    position = {aid: i for i, aid in enumerate(order)}
    records = [
        r for r in _records(sorted(side.glob("answers*.jsonl"))) if r["question_id"] in position
    ]
    records.sort(key=lambda r: position[r["question_id"]])
    answered = {r["question_id"] for r in records}
    latest: dict[tuple[str, str | None], dict[str, Any]] = {}
    for error in _errors(sorted(side.glob("errors*.jsonl"))):
        open_ids = [
            answer_id(error["scene"], error.get("item_id"), q) for q in error.get("questions") or []
        ]
        if any(aid in position and aid not in answered for aid in open_ids):
            latest[(error["scene"], error.get("item_id"))] = error
    evidence = any(m.get("evidence_table") for _, m in manifests)
    tables = {"answers": write_table(rows_to_geodataframe(records), out)}
    tables["errors"] = write_table(errors_dataframe(latest.values()), side_table(out, "errors"))
    if evidence:
        tables["evidence"] = write_table(
            evidence_geodataframe(records), side_table(out, "evidence")
        )
    log.info("%s: %d answers of %d, %d failed scenes", out, len(records), len(order), len(latest))
    return tables
