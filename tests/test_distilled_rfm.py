"""The distilled Region Focus Module: learning, checkpoints, refusal, resume, CLI."""

from __future__ import annotations

import os

os.environ["HF_HUB_OFFLINE"] = "1"

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from lrsvqa.bench.rfm_items import items_from_lrsvqa
from lrsvqa.errors import ConfigError, ModelError
from lrsvqa.focus import AttentionScorer
from lrsvqa.focus.distilled import (
    DistilledScorer,
    RegionFocusModule,
    RfmMeta,
    load_scorer,
    read_meta,
)
from lrsvqa.focus.teacher import load_prepared, resolve_teacher_layers
from lrsvqa.focus.train import TrainConfig, agreement, distill_loss, train_rfm
from lrsvqa.models import from_pretrained, tiny

TEACHER = 3  # the tiny models' last layer
CONFIG = TrainConfig(
    n_layers=1, teacher_layers=(TEACHER,), epochs=5, lr=1e-2, batch=2, val_fraction=0.25, seed=0
)


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    root = tmp_path_factory.mktemp("rfm_models")
    return {
        "qwen": from_pretrained(str(tiny.build("qwen2_vl", root / "qwen")), device="cpu"),
        "qwen_seed1": from_pretrained(
            str(tiny.build("qwen2_vl", root / "q1", seed=1)), device="cpu"
        ),
        "llava": from_pretrained(str(tiny.build("llava", root / "llava")), device="cpu"),
        "qwen_dir": root / "qwen",
    }


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 40-question stand-in set in LRS-VQA format: 8 small ship scenes, 5 questions each."""
    from lrsvqa.testing.questions import write_synthetic

    return write_synthetic(tmp_path_factory.mktemp("rfm_data"), 40, sizes=(448, 700), seed=0)


@pytest.fixture(scope="module")
def trained(models: dict[str, Any], data: Path, tmp_path_factory: pytest.TempPathFactory) -> Any:
    out = tmp_path_factory.mktemp("rfm_run")
    items = items_from_lrsvqa(data, None)
    result = train_rfm(models["qwen"], items, out / "rfm", CONFIG, cache_dir=out / "cache")
    return result, items, out


def _segments(adapter: Any, data: Path) -> list[Any]:
    from lrsvqa.prune.tokens import thumbnail_segment, tile_segment
    from lrsvqa.pyramid import DynamicImagePyramid, PyramidConfig

    caps = adapter.capabilities
    config = PyramidConfig(tile_size=caps.tile_size, thumbnail_size=caps.thumbnail_size)
    with DynamicImagePyramid(data.parent / "scene_0000.tif", config=config) as pyramid:
        thumb = adapter.encode([pyramid.thumbnail(caps.thumbnail_size, square=True)])[0]
        tiles = pyramid.tiles(0)
        tokens = adapter.encode(pyramid.read_tiles(tiles))
    return [thumbnail_segment(thumb)] + [
        tile_segment(t, ti) for t, ti in zip(tokens, tiles, strict=True)
    ]


def test_untrained_rfm_is_the_training_free_scorer(models: dict[str, Any], data: Path) -> None:
    adapter = models["qwen"]
    segments = _segments(adapter, data)
    question = "How many ships are there?"
    expected = AttentionScorer([1]).score(adapter, segments, question).grids
    module = RegionFocusModule.from_adapter(adapter, 2)
    scorer = DistilledScorer(module, RfmMeta.for_adapter(adapter, 2, [3]))
    result = scorer.score(adapter, segments, question)
    got = result.grids
    assert [g.shape for g in got] == [e.shape for e in expected]
    for g, e in zip(got, expected, strict=True):
        np.testing.assert_allclose(g, e, rtol=1e-5, atol=1e-9)
    assert result.tokens_run == result.sequence_length > sum(g.size for g in got)
    assert scorer.resolve_layers(adapter) == (1,)
    assert abs(sum(g.sum() for g in got) - 1.0) < 1e-5


def test_loss_and_metrics() -> None:
    p = torch.softmax(torch.randn(50, generator=torch.Generator().manual_seed(0)), 0)
    assert float(distill_loss(p, p)) == pytest.approx(0.0, abs=1e-6)
    assert float(distill_loss(p, torch.full_like(p, 1 / 50))) > 0
    x = np.arange(20.0)
    assert agreement(x, x) == (1.0, pytest.approx(1.0))
    assert agreement(-x, x)[0] == 0.0 and agreement(-x, x)[1] == pytest.approx(-1.0)
    assert resolve_teacher_layers(None, 28) == (27,)
    assert resolve_teacher_layers([-1, 20], 28) == (20, 27)
    with pytest.raises(ConfigError):
        resolve_teacher_layers([28], 28)


def test_training_lowers_loss_and_beats_baselines(trained: Any) -> None:
    result, _, _ = trained
    log, base = result.log, result.baseline
    assert [e["epoch"] for e in log] == list(range(1, CONFIG.epochs + 1))
    assert log[-1]["train_loss"] < 0.5 * log[0]["train_loss"]
    assert log[-1]["val_loss"] < 0.5 * base["untrained"]["loss"]
    final = log[-1]["top25_overlap"]
    assert base["val_items"] >= 5
    assert final > base["untrained"]["top25_overlap"] + 0.2
    assert final > base["random"]["top25_overlap"] + 0.2
    lines = (result.out / "log.jsonl").read_text().splitlines()
    assert [json.loads(line)["epoch"] for line in lines] == [e["epoch"] for e in log]


def test_checkpoint_round_trip_gives_identical_scores(
    trained: Any, models: dict[str, Any], data: Path
) -> None:
    result, _, _ = trained
    adapter = models["qwen"]
    folder, meta = read_meta(result.out)
    assert (folder / "rfm.safetensors").is_file()
    assert meta.base_model_id == adapter.model_id and meta.n_layers == 1
    assert meta.teacher_layers == (TEACHER,) and meta.epochs == CONFIG.epochs
    first = load_scorer(result.out, adapter)
    second = load_scorer(result.out / "rfm.safetensors", adapter)
    segments = _segments(adapter, data)
    a = first.score(adapter, segments, "Is there a ship?").grids
    b = second.score(adapter, segments, "Is there a ship?").grids
    for x, y in zip(a, b, strict=True):
        np.testing.assert_array_equal(x, y)
    untrained = AttentionScorer([0]).score(adapter, segments, "Is there a ship?").grids
    assert not np.allclose(a[0], untrained[0])


@pytest.mark.parametrize("other", ["qwen_seed1", "llava"])
def test_other_base_model_is_refused(trained: Any, models: dict[str, Any], other: str) -> None:
    result, _, _ = trained
    with pytest.raises(ModelError) as info:
        load_scorer(result.out, models[other])
    message = str(info.value)
    assert "\n" not in message and "train-rfm" in message and "distilled from" in message


def test_interrupted_run_resumes_from_last_epoch(
    trained: Any, models: dict[str, Any], tmp_path: Path
) -> None:
    _, items, out = trained
    config = TrainConfig(**{**CONFIG.to_dict(), "epochs": 2, "val_fraction": 0.0})
    adapter, items = models["qwen"], items[:10]
    straight = train_rfm(adapter, items, tmp_path / "a", config, cache_dir=out / "cache")

    def stop(epoch: int, step: int, loss: float) -> None:
        if epoch == 2 and step == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train_rfm(adapter, items, tmp_path / "b", config, cache_dir=out / "cache", on_step=stop)
    state = json.loads((tmp_path / "b" / "train_state.json").read_text())
    assert state["epoch"] == 1
    resumed = train_rfm(adapter, items, tmp_path / "b", config, cache_dir=out / "cache")
    assert resumed.resumed_from == 1 and resumed.epochs_run == 1
    assert [e["train_loss"] for e in resumed.log] == pytest.approx(
        [e["train_loss"] for e in straight.log]
    )
    from safetensors.torch import load_file

    a = load_file(str(tmp_path / "a" / "rfm.safetensors"))
    b = load_file(str(tmp_path / "b" / "rfm.safetensors"))
    assert a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(a[key], b[key])
    again = train_rfm(adapter, items, tmp_path / "b", config, cache_dir=out / "cache")
    assert again.epochs_run == 0
    with pytest.raises(ConfigError, match="other settings"):
        train_rfm(
            adapter, items, tmp_path / "b", TrainConfig(**{**config.to_dict(), "n_layers": 2})
        )


def test_cached_teacher_targets(trained: Any) -> None:
    _, _, out = trained
    files = sorted((out / "cache").glob("*.safetensors"))
    assert len(files) == 40
    prep = load_prepared(files[0])
    assert prep.teacher.sum().item() == pytest.approx(1.0, abs=1e-4)
    assert prep.candidates.numel() == prep.teacher.numel()


@pytest.fixture
def cli() -> Any:
    from lrsvqa.cli import main as cli_main

    return cli_main.main


def test_cli_train_then_eval(
    cli: Any,
    trained: Any,
    models: dict[str, Any],
    data: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    model, out = str(models["qwen_dir"]), tmp_path / "rfm"
    args = ["train-rfm", "--model", model, "--data", str(data), "--out", str(out), "--layers", "1"]
    args += ["--epochs", "1", "--lr", "0.01", "--val-fraction", "0.25", "--device", "cpu"]
    args += ["--cache-dir", str(trained[2] / "cache")]  # the teacher targets of ``trained``
    assert cli([*args, "--no-progress", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["log"][0]["epoch"] == 1 and (out / "rfm.safetensors").is_file()
    rc = cli(["eval-rfm", "--model", model, "--rfm", str(out), "--data", str(data), "--held-out",
              "--no-progress", "--json", "--device", "cpu"])  # fmt: skip
    assert rc == 0
    evaluation = json.loads(capsys.readouterr().out)
    assert set(evaluation["results"]) == {"trained", "untrained", "random"}
    assert evaluation["items"] == report["baseline"]["val_items"]


def test_cli_synthetic_mode(cli: Any, models: dict[str, Any], tmp_path: Path) -> None:
    out = tmp_path / "syn"
    args = ["train-rfm", "--model", str(models["qwen_dir"]), "--synthetic", "2", "--out", str(out)]
    assert (
        cli([*args, "--layers", "1", "--epochs", "1", "--val-fraction", "0", "--no-progress"]) == 0
    )
    assert (out / "synthetic" / "questions.jsonl").is_file() and (out / "rfm.json").is_file()


@pytest.mark.parametrize(
    "args",
    [
        ["train-rfm", "--out", "{tmp}/x"],
        ["train-rfm", "--out", "{tmp}/x", "--data", "{tmp}/missing.jsonl"],
        ["train-rfm", "--out", "{tmp}/x", "--synthetic", "2", "--teacher-layers", "a,b"],
        [
            "train-rfm",
            "--out",
            "{tmp}/x",
            "--data",
            "{data}",
            "--model",
            "{model}",
            "--teacher-layer",
            "9",
        ],
        [
            "train-rfm",
            "--out",
            "{tmp}/x",
            "--data",
            "{data}",
            "--model",
            "{model}",
            "--layers",
            "4",
        ],
        ["train-rfm", "--out", "{tmp}/x", "--data", "{data}", "--epochs", "0"],
        ["eval-rfm", "--rfm", "{tmp}/nothing", "--data", "{data}"],
    ],
)
def test_cli_bad_input_exits_2(
    cli: Any, models: dict[str, Any], data: Path, tmp_path: Path, args: list[str],
    capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    filled = [a.format(tmp=tmp_path, data=data, model=models["qwen_dir"]) for a in args]
    assert cli([*filled, "--device", "cpu", "--no-progress"]) == 2
    last = capsys.readouterr().err.strip().splitlines()[-1]  # after any "Loading weights" bar
    assert last.startswith("lrsvqa: error:") and len(last) > len("lrsvqa: error: ")
