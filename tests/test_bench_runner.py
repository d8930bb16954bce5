"""The benchmark runner: resumable after kill -9, sharded by image, refuses mixed configs.

Stand-in images are written at the recorded paths of 40 questions of the real
annotation file; a fake answerer (tests/bench_fakes.py) replaces the model.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from lrsvqa.bench.answers import ANSWER_KEYS, AnswerLog, read_answer_lines
from lrsvqa.bench.manifest import git_state
from lrsvqa.bench.records import Question
from lrsvqa.bench.shard import (
    Shard,
    assign_images,
    parse_shard,
    resolve_shard,
    run_order,
    shard_questions,
)
from lrsvqa.cli import bench_cmd
from lrsvqa.cli import main as cli_main
from lrsvqa.errors import ConfigError, ModelNotFoundError
from tests.bench_fakes import (
    LRS_VQA,
    answers_right,
    fake_answerer,
    subset_rows,
    write_jsonl,
    write_standins,
)

ROOT = Path(__file__).resolve().parents[1]
N = 40


def _data(folder: Path) -> tuple[Path, Path, list[dict[str, Any]]]:
    assert LRS_VQA.is_file(), f"missing {LRS_VQA}"  # CI has shared/data: fail, never skip
    rows = subset_rows(N)
    root = folder / "images"
    write_standins(rows, root)
    return write_jsonl(folder / "subset.jsonl", rows), root, rows


@pytest.fixture
def data(tmp_path: Path) -> tuple[Path, Path, list[dict[str, Any]]]:
    return _data(tmp_path)


@pytest.fixture(autouse=True)
def fake_cli(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(bench_cmd, "make_answerer", fake_answerer)
    for var in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        monkeypatch.delenv(var, raising=False)


def bench_args(data: tuple[Path, Path, Any], out: Path, *extra: str) -> list[str]:
    return [
        "bench",
        "--data",
        str(data[0]),
        "--image-root",
        str(data[1]),
        "--model",
        "fake/echo",
        "--out",
        str(out),
        *extra,
    ]


def run(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    rc = cli_main.main(args)
    captured = capsys.readouterr()
    return rc, captured.out, captured.err


def answers(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def test_run_writes_a_line_per_question_grouped_largest_first(
    data, tmp_path, capsys, monkeypatch
) -> None:
    out = tmp_path / "run"
    args = [*bench_args(data, out), "--json"]
    monkeypatch.setattr(sys, "argv", ["lrsvqa", *args])  # what the manifest records
    rc, stdout, _ = run(args, capsys)
    assert rc == 0
    summary = json.loads(stdout)
    assert summary["status"] == "complete" and summary["done"] == summary["answered"] == N
    rows = answers(out / "answers.jsonl")
    assert sorted(r["question_id"] for r in rows) == sorted(r["question_id"] for r in data[2])
    assert all(tuple(r) == ANSWER_KEYS for r in rows)
    # each scene once, its questions together; scenes largest first
    images = [r["image"] for r in rows]
    blocks = [im for i, im in enumerate(images) if i == 0 or images[i - 1] != im]
    assert len(blocks) == len(set(images))
    pixels = [r["image_size"][0] * r["image_size"][1] for r in rows]
    assert pixels == sorted(pixels, reverse=True)
    truth = {r["question_id"]: r for r in data[2]}
    for r in rows:
        q = truth[r["question_id"]]
        assert r["ground_truth"] == q["ground_truth"] and r["category"] == q["category"]
        assert r["text"] == (q["ground_truth"] if answers_right(r["question_id"]) else "zebra")
        if q.get("hbox"):
            x1, y1, x2, y2 = q["hbox"]
            assert r["boxes"] == [[x1, y1, (x1 + x2) / 2, y2]] and r["finest_level"] == 1
        assert r["cost"]["llm_vision_tokens"] == 300
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["status"] == "complete"
    assert {"lrsvqa", "torch", "transformers", "rasterio", "GDAL"} <= set(manifest["versions"])
    assert manifest["model"]["id"] == "fake/echo" and manifest["model"]["revision"] == "fake-rev"
    assert manifest["config"]["answerer"]["focus"]["selector"] == "rfm"
    assert manifest["command"] == ["lrsvqa", *args]
    assert manifest["host"]["hostname"] and manifest["started"] and manifest["ended"]
    assert manifest["counts"] == {"total": N, "done": N, "answered": N, "skipped": 0, "failed": 0}
    assert len(manifest["question_ids"]) == N
    assert "git" in manifest


def test_git_state_never_fails_outside_a_checkout(tmp_path: Path) -> None:
    assert git_state(tmp_path) is None
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True)
    state = git_state(ROOT)
    if head.returncode != 0:  # a source tree without git (e.g. an sdist): nothing to record
        assert state is None
        return
    assert state is not None and state["commit"] == head.stdout.strip()
    status = subprocess.run(["git", "status", "--porcelain"], cwd=ROOT, capture_output=True)
    assert state["dirty"] is bool(status.stdout.strip())


def test_rerun_skips_done_questions(data, tmp_path, capsys, monkeypatch) -> None:
    out = tmp_path / "run"
    assert run(bench_args(data, out, "--limit", "10"), capsys)[0] == 0
    asked: list[str] = []

    def counting(options: Any) -> Any:
        fake = fake_answerer(options)
        ask = fake.ask
        fake.ask = lambda scene, q: asked.append(q) or ask(scene, q)  # type: ignore[method-assign]
        return fake

    monkeypatch.setattr(bench_cmd, "make_answerer", counting)
    before = (out / "answers.jsonl").read_bytes()
    rc, stdout, _ = run([*bench_args(data, out), "--json"], capsys)
    assert rc == 0 and json.loads(stdout)["answered"] == N - 10
    assert len(asked) == N - 10
    assert (out / "answers.jsonl").read_bytes().startswith(before)
    # everything done: the model is not even built
    monkeypatch.setattr(bench_cmd, "make_answerer", lambda o: pytest.fail("model built"))
    rc, stdout, _ = run([*bench_args(data, out), "--json"], capsys)
    assert rc == 0 and json.loads(stdout)["answered"] == 0
    assert json.loads((out / "manifest.json").read_text())["runs"] == 3


@pytest.mark.parametrize("damage", ["mid-line", "garbled-terminated"])
def test_torn_last_line_is_repaired(data, tmp_path, capsys, caplog, damage) -> None:
    out = tmp_path / "run"
    assert run(bench_args(data, out, "--limit", "12"), capsys)[0] == 0
    path = out / "answers.jsonl"
    raw = path.read_bytes()
    if damage == "mid-line":  # a crash inside the write of line 12
        last_start = raw.rstrip(b"\n").rfind(b"\n") + 1
        path.write_bytes(raw[: last_start + (len(raw) - last_start) // 2])
    else:  # a terminated line of junk (e.g. zero-filled after power loss)
        path.write_bytes(raw + b"\x00\x00\x00\n")
    caplog.set_level("WARNING", logger="lrsvqa")
    rc, stdout, _ = run([*bench_args(data, out), "--json"], capsys)
    assert rc == 0
    assert json.loads(stdout)["repaired_bytes"] > 0
    assert "torn last line" in caplog.text
    ids = [r["question_id"] for r in answers(path)]
    assert len(ids) == N and len(set(ids)) == N


# Where the SIGKILL lands: while the model loads, inside an answer (mid-scene), or right
# after an answer was written and before the next begins. Seeded: the same moments each run.
KILL_MOMENTS = ["loading", "during", "between"]


def _fake_bench(data: tuple[Path, Path, Any], out: Path, model: str) -> list[str]:
    args = [sys.executable, "-m", "tests.bench_fakes", *bench_args(data, out, "--json")]
    args[args.index("fake/echo")] = model
    return args


def _fake_env() -> dict[str, str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    for var in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        env.pop(var, None)
    return env


@pytest.fixture(scope="module")
def kill_data(tmp_path_factory) -> tuple[Path, Path, list[dict[str, Any]]]:
    return _data(tmp_path_factory.mktemp("kill"))


@pytest.fixture(scope="module")
def uninterrupted(kill_data, tmp_path_factory) -> list[dict[str, Any]]:
    """The answers of one run that nobody killed (the same for every kill moment)."""
    clean = tmp_path_factory.mktemp("clean") / "run"
    ok = subprocess.run(
        _fake_bench(kill_data, clean, "fake/echo"),
        cwd=ROOT,
        env=_fake_env(),
        capture_output=True,
        timeout=120,
    )
    assert ok.returncode == 0, ok.stderr.decode()
    return sorted(answers(clean / "answers.jsonl"), key=lambda r: r["question_id"])


@pytest.mark.parametrize("moment", KILL_MOMENTS)
def test_sigkill_at_a_seeded_moment_then_resume(
    kill_data, uninterrupted, tmp_path: Path, moment: str
) -> None:
    out = tmp_path / "run"
    args = _fake_bench(kill_data, out, "fake/slow")
    env = _fake_env()
    rng = random.Random(f"sigkill-{moment}")
    k = rng.randint(2, N - 5)  # answers written before the kill ("during": the k+1-th ask)
    env["LRSVQA_FAKE_KILL"] = "loading" if moment == "loading" else f"{moment}:{k}"
    proc = subprocess.run(args, cwd=ROOT, env=env, capture_output=True, timeout=120)
    assert proc.returncode == -signal.SIGKILL, proc.stderr.decode()
    path = out / "answers.jsonl"
    partial = path.read_bytes().count(b"\n") if path.exists() else 0
    assert partial == (0 if moment == "loading" else k), f"killed after {partial} lines"
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["status"] == "running"  # killed: no chance to write anything else
    env.pop("LRSVQA_FAKE_KILL")

    done = subprocess.run(args, cwd=ROOT, env=env, capture_output=True, timeout=120)
    assert done.returncode == 0, done.stderr.decode()
    assert json.loads(done.stdout)["status"] == "complete"
    rows = answers(path)
    ids = Counter(r["question_id"] for r in rows)
    assert len(ids) == N and set(ids.values()) == {1}
    assert sorted(rows, key=lambda r: r["question_id"]) == uninterrupted


def test_shards_then_merge_equal_an_unsharded_run(data, tmp_path, capsys) -> None:
    whole, sharded = tmp_path / "whole", tmp_path / "sharded"
    assert run(bench_args(data, whole), capsys)[0] == 0
    assert run(bench_args(data, sharded, "--shard", "0/2"), capsys)[0] == 0
    assert run(bench_args(data, sharded, "--shard", "1/2"), capsys)[0] == 0
    parts = [answers(sharded / f"answers.shard-{i}-of-2.jsonl") for i in range(2)]
    images = [{r["image"] for r in p} for p in parts]
    assert images[0] and images[1] and not images[0] & images[1]
    assert (sharded / "manifest.shard-0-of-2.json").is_file()
    rc, stdout, _ = run(["bench", "merge", str(sharded), "--json"], capsys)
    assert rc == 0
    merged = json.loads(stdout)
    assert merged["answers"] == N and merged["missing"] == 0 and merged["duplicates_dropped"] == 0
    lines = lambda p: sorted(p.read_text().splitlines(), key=lambda s: json.loads(s)["question_id"])  # noqa: E731
    assert lines(sharded / "answers.jsonl") == lines(whole / "answers.jsonl")
    # merging again keeps the first of each duplicate and changes nothing
    assert run(["bench", "merge", str(sharded), "--json"], capsys)[0] == 0
    assert lines(sharded / "answers.jsonl") == lines(whole / "answers.jsonl")


def test_merge_reports_questions_no_shard_answered(data, tmp_path, capsys) -> None:
    out = tmp_path / "run"
    assert run(bench_args(data, out, "--shard", "1/2"), capsys)[0] == 0
    n1 = len(answers(out / "answers.shard-1-of-2.jsonl"))
    rc, _, err = run(["bench", "merge", str(out)], capsys)
    assert rc == 0 and f"{N - n1} of {N} questions have no answer" in err
    assert json.loads((out / "manifest.json").read_text())["merge"]["missing"] == N - n1


def test_rank_and_world_size_from_the_environment(data, tmp_path, capsys, monkeypatch) -> None:
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("LOCAL_RANK", "1")
    out = tmp_path / "run"
    rc, stdout, _ = run([*bench_args(data, out), "--json"], capsys)
    assert rc == 0 and json.loads(stdout)["shard"] == {"rank": 1, "world_size": 2}
    manifest = json.loads((out / "manifest.shard-1-of-2.json").read_text())
    assert manifest["model"]["device"] == "cpu"  # auto without CUDA (test_ask_many pins the rule)
    assert not (out / "answers.jsonl").exists()
    ordered = run_order(_questions(data[2]))
    expected = {q.question_id for q in shard_questions(ordered, Shard(1, 2))}
    assert {r["question_id"] for r in answers(out / "answers.shard-1-of-2.jsonl")} == expected
    # --shard must agree with the environment
    rc, _, err = run(bench_args(data, out, "--shard", "0/2"), capsys)
    assert rc == 2 and "disagrees" in err


def _questions(rows: list[dict[str, Any]]) -> list[Question]:
    return [
        Question(
            r["question_id"],
            r["question_id"].split("_")[0],
            r["image"],
            None,
            r["category"],
            r["text"],
            r["ground_truth"],
            tuple(r["image_size"]),
        )  # type: ignore[arg-type]
        for r in rows
    ]


def test_every_image_lands_in_exactly_one_balanced_shard() -> None:
    from lrsvqa.bench import load_lrsvqa

    ordered = run_order(load_lrsvqa(LRS_VQA))
    images = lambda qs: list(dict.fromkeys(q.image for q in qs))  # noqa: E731
    assert images(run_order(reversed(ordered))) == images(ordered)  # scene order: input-free
    for world in (2, 3, 8):
        shards = [shard_questions(ordered, Shard(r, world)) for r in range(world)]
        ids = [q.question_id for s in shards for q in s]
        assert sorted(ids) == sorted(q.question_id for q in ordered)
        images = [{q.image for q in s} for s in shards]
        assert sum(len(i) for i in images) == len({q.image for q in ordered})
        load = [
            sum(q.image_size[0] * q.image_size[1] for q in {q.image: q for q in s}.values())
            for s in shards
        ]
        assert max(load) < 1.2 * min(load)
        assert assign_images(ordered, world) == assign_images(ordered, world)


def test_shard_and_device_parsing() -> None:
    assert parse_shard(" 1 / 4 ") == Shard(1, 4)
    for bad in ("2/2", "1", "a/b", "-1/2"):
        with pytest.raises(ConfigError):
            parse_shard(bad)
    assert resolve_shard(None, {}) == Shard()
    assert resolve_shard(None, {"RANK": "2", "WORLD_SIZE": "4"}) == Shard(2, 4)
    assert resolve_shard("0/2", {"RANK": "0", "WORLD_SIZE": "1"}) == Shard(0, 2)
    with pytest.raises(ConfigError, match="not an integer"):
        resolve_shard(None, {"WORLD_SIZE": "two"})
    assert Shard(0, 2).answers_name == "answers.shard-0-of-2.jsonl"
    assert Shard().manifest_name == "manifest.json"


def test_missing_images_are_listed_and_stop_the_run(data, tmp_path, capsys) -> None:
    rows = data[2]
    gone = data[1] / rows[0]["image"]
    gone.unlink()
    out = tmp_path / "run"
    rc, _, err = run(bench_args(data, out), capsys)
    assert rc == 2 and "1 image(s) missing" in err and str(gone) in err and "--skip-missing" in err
    assert not (out / "answers.jsonl").exists()
    rc, stdout, _ = run([*bench_args(data, out), "--skip-missing", "--json"], capsys)
    n_gone = sum(r["image"] == rows[0]["image"] for r in rows)
    summary = json.loads(stdout)
    assert rc == 0 and summary["skipped"] == n_gone and summary["done"] == N - n_gone
    assert summary["missing_images"] == [str(gone)]


def test_a_damaged_scene_is_recorded_then_retried(data, tmp_path, capsys, caplog) -> None:
    rows = data[2]
    damaged = data[1] / rows[-1]["image"]
    damaged.write_bytes(b"")
    n_bad = sum(r["image"] == rows[-1]["image"] for r in rows)
    out = tmp_path / "run"
    rc, stdout, _ = run([*bench_args(data, out), "--json"], capsys)
    summary = json.loads(stdout)
    assert rc == 1 and summary["failed"] == n_bad and summary["done"] == N - n_bad
    assert summary["status"] == "incomplete" and "RasterReadError" in caplog.text
    errors = answers(out / "errors.jsonl")
    assert len(errors) == n_bad and errors[0]["error"] == "RasterReadError"
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["counts"]["failed"] == n_bad and len(manifest["failed_ids"]) == n_bad
    write_standins(rows, data[1])  # repaired
    rc, stdout, _ = run([*bench_args(data, out), "--json"], capsys)
    assert rc == 0 and json.loads(stdout)["answered"] == n_bad
    assert len({r["question_id"] for r in answers(out / "answers.jsonl")}) == N


@pytest.mark.parametrize(
    "change", [["--selector", "all"], ["--keep-ratio", "0.5"], ["--model", "fake/other"]]
)
def test_other_settings_in_the_same_run_folder_are_refused(data, tmp_path, capsys, change) -> None:
    out = tmp_path / "run"
    assert run(bench_args(data, out, "--limit", "5"), capsys)[0] == 0
    args = bench_args(data, out)
    if change[0] == "--model":
        args[args.index("fake/echo")] = change[1]
    else:
        args += change
    rc, _, err = run(args, capsys)
    assert rc == 2 and "use a new --out" in err
    assert len(answers(out / "answers.jsonl")) == 5


def test_a_run_that_wrote_nothing_does_not_bind_its_folder(
    data, tmp_path, capsys, monkeypatch
) -> None:
    """A mistyped --model fails before the first question: rerunning in the same folder
    with the right model must work, not be refused as "other settings"."""
    out = tmp_path / "run"

    def typo(options: Any) -> Any:
        if options.model == "fake/typo":
            raise ModelNotFoundError("unknown model 'fake/typo'")
        return fake_answerer(options)

    monkeypatch.setattr(bench_cmd, "make_answerer", typo)
    args = bench_args(data, out, "--limit", "5")
    wrong = list(args)
    wrong[wrong.index("fake/echo")] = "fake/typo"
    rc, _, err = run(wrong, capsys)
    assert rc == 2 and "fake/typo" in err and (out / "manifest.json").exists()
    rc, _, err = run(args, capsys)
    assert rc == 0, err
    assert len(answers(out / "answers.jsonl")) == 5
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["identity"]["model"] == "fake/echo"
    again = list(args)
    again[again.index("fake/echo")] = "fake/typo"
    rc, _, err = run(again, capsys)  # now that answers exist, the folder is bound
    assert rc == 2 and "use a new --out" in err


def test_changed_answerer_config_is_refused(data, tmp_path, capsys, monkeypatch) -> None:
    out = tmp_path / "run"
    assert run(bench_args(data, out, "--limit", "5"), capsys)[0] == 0

    def changed(options: Any) -> Any:
        fake = fake_answerer(options)
        fake.config_dict = lambda: {"fake": True, "focus": {"selector": "rfm", "seed": 1}}  # type: ignore[method-assign]
        return fake

    monkeypatch.setattr(bench_cmd, "make_answerer", changed)
    rc, _, err = run(bench_args(data, out), capsys)
    assert rc == 2 and "use a new --out" in err and "seed" in err


def test_one_writer_per_answer_file(tmp_path: Path) -> None:
    path = tmp_path / "answers.jsonl"
    with AnswerLog(path) as log, pytest.raises(ConfigError, match="another process"):
        log.append({"question_id": "FAIR_1", "text": "yes"})
        AnswerLog(path).__enter__()
    with AnswerLog(path) as log:  # released on close
        log.append({"question_id": "FAIR_2", "text": "no"})
    assert [line.question_id for line in read_answer_lines(path)] == ["FAIR_1", "FAIR_2"]


def test_bad_command_lines_exit_2(data, tmp_path, capsys) -> None:
    rc, _, err = run(["bench", "--model", "fake/echo"], capsys)
    assert rc == 2 and "--data" in err
    rc, _, err = run(bench_args(data, tmp_path / "r", "--shard", "3/2"), capsys)
    assert rc == 2 and "shard" in err
    rc, _, err = run(bench_args(data, tmp_path / "r", "--category", "colour"), capsys)
    assert rc == 2 and "unknown category" in err


def test_malformed_resume_file_names_the_line(data, tmp_path, capsys) -> None:
    out = tmp_path / "run"
    assert run(bench_args(data, out, "--limit", "3"), capsys)[0] == 0
    path = out / "answers.jsonl"
    lines = path.read_text().splitlines(keepends=True)
    path.write_text(lines[0] + "{not json\n" + "".join(lines[1:]))
    rc, _, err = run(bench_args(data, out), capsys)
    assert rc == 2 and "line 2: not valid JSON" in err


@pytest.mark.slow
def test_the_real_pipeline_with_a_tiny_model(data, tmp_path, capsys, monkeypatch) -> None:
    monkeypatch.undo()  # the real make_answerer (lrsvqa.pipeline.Pipeline)
    out = tmp_path / "run"
    args = bench_args(data, out, "--limit", "3", "--device", "cpu", "--json")
    args[args.index("fake/echo")] = "tiny/qwen2_vl"
    rc, stdout, _ = run(args, capsys)
    assert rc == 0 and json.loads(stdout)["done"] == 3
    rows = answers(out / "answers.jsonl")
    assert all(r["boxes"] and r["cost"]["llm_vision_tokens"] > 0 for r in rows)
    assert json.loads((out / "manifest.json").read_text())["config"]["answerer"]["focus"]
