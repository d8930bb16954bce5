"""Scale-out: shards + merge, torchrun with 2 CPU ranks (bench and ask-many), Ray.

Each must give what one process gives. torchrun and Ray run a real tiny model
(``tiny/llava``, one answer token) over three small scenes; one of the scenes
kills its Ray worker the first time it is asked about, and Ray's retry must
still leave each scene × question exactly once.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import geopandas as gpd
import pandas as pd
import pytest

from lrsvqa.bench.catalog import run_dir
from lrsvqa.cli import ask_many_cmd, bench_cmd
from lrsvqa.cli import main as cli_main
from tests.ask_many_fakes import make_scenes, stub_answerer
from tests.bench_fakes import LRS_VQA, fake_answerer, subset_rows, write_jsonl, write_standins

ROOT = Path(__file__).resolve().parents[1]
RANK_VARS = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")
TINY = ["--model", "tiny/llava", "--max-new-tokens", "1", "--device", "cpu"]
QUESTION = "How many ships are there?"


@pytest.fixture(autouse=True)
def fake_models(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ask_many_cmd, "make_answerer", stub_answerer)
    monkeypatch.setattr(bench_cmd, "make_answerer", fake_answerer)
    for var in RANK_VARS:
        monkeypatch.delenv(var, raising=False)


def child_env() -> dict[str, str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "RAY_AUTH_MODE": "disabled"}
    for var in RANK_VARS:
        env.pop(var, None)
    return env


def cli(*args: str) -> int:
    return cli_main.main(list(args))


def answers_table(path: Path) -> pd.DataFrame:
    return pd.DataFrame(gpd.read_parquet(path).drop(columns=["seconds"]))


def test_shards_then_merge_equal_one_process(tmp_path, capsys) -> None:
    make_scenes(tmp_path / "scenes", 7, damaged=1, no_crs=1)
    common = ["ask-many", str(tmp_path / "scenes"), "-q", QUESTION, "-q", "Is there a ship?"]
    single = tmp_path / "single.parquet"
    assert cli(*common, "--out", str(single), "--model", "stub", "--evidence-table") == 1
    out = tmp_path / "sharded.parquet"
    shards = []
    for rank in (0, 1):
        cli(
            *common,
            "--out",
            str(out),
            "--model",
            "stub",
            "--evidence-table",
            "--shard",
            f"{rank}/2",
        )
        shards.append(capsys.readouterr())
        if rank == 0:  # the other shard is not done yet: no table
            assert not out.exists() and "the last shard to finish writes" in shards[0].err
    assert out.exists()
    pd.testing.assert_frame_equal(answers_table(out), answers_table(single))
    for name in ("errors", "evidence"):
        a = pd.read_parquet(tmp_path / f"sharded.{name}.parquet").drop(
            columns=["time"], errors="ignore"
        )
        b = pd.read_parquet(tmp_path / f"single.{name}.parquet").drop(
            columns=["time"], errors="ignore"
        )
        pd.testing.assert_frame_equal(a, b)
    logs = [run_dir(out) / f"answers.shard-{r}-of-2.jsonl" for r in (0, 1)]
    scenes = [{json.loads(x)["scene"] for x in p.read_text().splitlines()} for p in logs]
    assert scenes[0] and scenes[1] and not scenes[0] & scenes[1]  # every scene in one shard
    # a duplicate line (a shard rerun elsewhere) never duplicates a row; --merge rewrites
    logs[1].write_text(logs[1].read_text() + logs[0].read_text().splitlines()[0] + "\n")
    out.unlink()
    assert cli("ask-many", "--merge", "--out", str(out)) == 0
    pd.testing.assert_frame_equal(answers_table(out), answers_table(single))


@pytest.fixture(scope="module")
def tiny_scenes(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, pd.DataFrame]:
    """Two small scenes (one named to kill a Ray worker) and the one-process table."""
    from lrsvqa.models.tiny import ensure

    ensure("llava")  # built once here, never by two ranks at the same time
    folder = tmp_path_factory.mktemp("tiny")
    scenes = make_scenes(folder / "scenes", 2)
    scenes[1].rename(scenes[1].with_name("scene01-kill.tif"))
    out = folder / "one.parquet"
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(ask_many_cmd, "make_answerer", stub_answerer)
        rc = cli("ask-many", str(folder / "scenes"), "-q", QUESTION, "--out", str(out), *TINY)
    assert rc == 0
    return folder / "scenes", answers_table(out)


def torchrun(*args: str) -> subprocess.CompletedProcess[bytes]:
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2"]
    command += ["--standalone", "-m", *args]
    return subprocess.run(command, cwd=ROOT, env=child_env(), capture_output=True, timeout=300)


def test_torchrun_two_cpu_ranks_ask_many(tmp_path, tiny_scenes) -> None:
    scenes, one = tiny_scenes
    out = tmp_path / "ranks.parquet"
    args = ["tests.ask_many_fakes", "ask-many", str(scenes), "-q", QUESTION, "--out", str(out)]
    done = torchrun(*args, *TINY[:-2], "--device", "auto")
    assert done.returncode == 0, done.stderr.decode()[-3000:]
    assert b"Traceback" not in done.stderr
    manifests = [
        json.loads((run_dir(out) / f"manifest.shard-{r}-of-2.json").read_text()) for r in (0, 1)
    ]
    assert [m["status"] for m in manifests] == ["complete", "complete"]
    assert [m["shard"]["scenes"] for m in manifests] == [1, 1]
    pd.testing.assert_frame_equal(answers_table(out), one)


@pytest.fixture
def bench_data(tmp_path: Path) -> tuple[Path, Path]:
    assert LRS_VQA.is_file(), f"missing {LRS_VQA}"
    rows = subset_rows(12)
    write_standins(rows, tmp_path / "images")
    return write_jsonl(tmp_path / "subset.jsonl", rows), tmp_path / "images"


def test_torchrun_two_cpu_ranks_bench_with_device_auto(tmp_path, bench_data) -> None:
    """The defect: without CUDA, `--device auto` under torchrun became cuda:$LOCAL_RANK
    and every rank died with a traceback. It must be CPU, and equal one process."""
    data, images = bench_data
    common = ["--data", str(data), "--image-root", str(images), "--model", "fake/echo"]
    ranks = tmp_path / "ranks"
    done = torchrun("tests.bench_fakes", "bench", *common, "--out", str(ranks), "--device", "auto")
    assert done.returncode == 0, done.stderr.decode()[-3000:]
    assert b"Traceback" not in done.stderr
    for r in (0, 1):
        manifest = json.loads((ranks / f"manifest.shard-{r}-of-2.json").read_text())
        assert manifest["model"]["device"] == "cpu" and manifest["status"] == "complete"
    assert cli("bench", "merge", str(ranks)) == 0
    single = tmp_path / "single"
    assert cli("bench", *common, "--out", str(single)) == 0

    def lines(path: Path) -> list[dict[str, Any]]:
        return sorted(
            (json.loads(x) for x in path.read_text().splitlines()), key=lambda r: r["question_id"]
        )

    assert lines(ranks / "answers.jsonl") == lines(single / "answers.jsonl")


def test_ray_equals_one_process_and_survives_a_killed_worker(tmp_path, tiny_scenes) -> None:
    pytest.importorskip("ray")  # lrsvqa[ray] is part of lrsvqa[test]: CI runs this
    scenes, one = tiny_scenes
    out = tmp_path / "ray.parquet"
    marker = tmp_path / "killed-once"
    command = [sys.executable, "-m", "tests.ask_many_fakes", "ask-many", str(scenes)]
    command += ["-q", QUESTION, "--out", str(out), *TINY, "--json"]
    command += ["--ray-num-cpus", "2", "--ray-actors", "2", "--ray"]
    env = {**child_env(), "LRSVQA_TEST_KILL_MARKER": str(marker)}
    done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, timeout=300)
    assert done.returncode == 0, done.stderr.decode()[-3000:]
    assert marker.exists()  # a worker was killed mid-run (and Ray retried its scene)
    summary = json.loads(done.stdout)
    assert summary["done"] == 2 and summary["failed_scenes"] == 0
    log = (run_dir(out) / "answers.jsonl").read_text().splitlines()
    assert len(log) == len({json.loads(x)["question_id"] for x in log}) == 2
    pd.testing.assert_frame_equal(answers_table(out), one)


@pytest.mark.slow
def test_bench_on_ray_equals_one_process(tmp_path, bench_data) -> None:
    pytest.importorskip("ray")
    data, images = bench_data
    common = ["--data", str(data), "--image-root", str(images), "--model", "fake/echo"]
    on_ray = tmp_path / "ray"
    command = [sys.executable, "-m", "tests.bench_fakes", "bench", *common, "--out", str(on_ray)]
    command += ["--json", "--ray-num-cpus", "2", "--ray-actors", "2", "--ray"]
    done = subprocess.run(command, cwd=ROOT, env=child_env(), capture_output=True, timeout=300)
    assert done.returncode == 0, done.stderr.decode()[-3000:]
    assert json.loads(done.stdout)["answered"] == 12
    single = tmp_path / "single"
    assert cli("bench", *common, "--out", str(single)) == 0

    def lines(path: Path) -> list[dict[str, Any]]:
        return sorted(
            (json.loads(x) for x in path.read_text().splitlines()), key=lambda r: r["question_id"]
        )

    assert lines(on_ray / "answers.jsonl") == lines(single / "answers.jsonl")
