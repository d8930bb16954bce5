"""The pruners and the distilled focus wired through `ask` and `bench`, as a user runs them."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from lrsvqa.cli.main import main
from lrsvqa.testing import make_ship_scene

QUESTION = "How many ships are there?"


@pytest.fixture(scope="module")
def scene(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("prune") / "scene.tif"
    make_ship_scene(path, 1500, ships=4)
    return path


def ask_json(capsys, *args: str) -> dict:
    code = main(["ask", *args, "--device", "cpu", "--json"])
    out, err = capsys.readouterr()
    assert code == 0, err
    return json.loads(out)


@pytest.mark.parametrize("family", ["qwen2_vl", "llava_next"])
def test_ratio_one_answers_exactly_as_no_pruning(family: str, scene: Path, capsys) -> None:
    base = ask_json(capsys, str(scene), QUESTION, "--model", f"tiny/{family}")
    same_pdrop = ask_json(
        capsys,
        str(scene),
        QUESTION,
        "--model",
        f"tiny/{family}",
        "--llm-prune",
        "pdrop",
        "--pdrop-ratio",
        "1.0",
    )
    same_fastv = ask_json(
        capsys,
        str(scene),
        QUESTION,
        "--model",
        f"tiny/{family}",
        "--llm-prune",
        "fastv",
        "--fastv-ratio",
        "0",
    )
    assert same_pdrop["text"] == base["text"] == same_fastv["text"]
    assert same_pdrop["cost"]["llm_flops"] == base["cost"]["llm_flops"]
    pdrop = ask_json(
        capsys, str(scene), QUESTION, "--model", f"tiny/{family}", "--llm-prune", "pdrop"
    )
    fastv = ask_json(
        capsys, str(scene), QUESTION, "--model", f"tiny/{family}", "--llm-prune", "fastv"
    )
    for pruned in (pdrop, fastv):
        assert pruned["cost"]["llm_flops"] < base["cost"]["llm_flops"]
        per_layer = pruned["cost"]["llm_tokens_per_layer"]
        assert per_layer[0] == base["cost"]["llm_prompt_tokens"] and per_layer[-1] < per_layer[0]
    assert pdrop["config"]["prune"]["llm"]["method"] == "pdrop"
    assert pdrop["config"]["pdrop_boundaries"] == [1, 2, 3]


@pytest.mark.parametrize(
    "args",
    [
        ["--llm-prune", "pdrop", "--pdrop-ratio", "0"],
        ["--llm-prune", "pdrop", "--pdrop-ratio", "1.5"],
        ["--llm-prune", "pdrop", "--pdrop-layers", "2,40"],
        ["--llm-prune", "pdrop", "--pdrop-layers", "two"],
        ["--llm-prune", "fastv", "--fastv-k", "9"],
        ["--llm-prune", "fastv", "--fastv-ratio", "1.0"],
        ["--focus", "distilled:"],
        ["--focus", "magic"],
    ],
)
def test_bad_pruning_options(args: list[str], scene: Path, capsys) -> None:
    code = main(["ask", str(scene), QUESTION, "--model", "tiny/qwen2_vl", "--device", "cpu", *args])
    _, err = capsys.readouterr()
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2 and len(lines) == 1 and lines[0].startswith("lrsvqa: error:"), err


def test_distilled_focus_from_train_rfm(scene: Path, tmp_path: Path, capsys) -> None:
    rfm = tmp_path / "rfm"
    code = main(
        [
            "train-rfm",
            "--model",
            "tiny/qwen2_vl",
            "--synthetic",
            "6",
            "--out",
            str(rfm),
            "--layers",
            "1",
            "--epochs",
            "1",
            "--device",
            "cpu",
            "--no-progress",
        ]
    )
    _, err = capsys.readouterr()
    assert code == 0, err
    assert (rfm / "rfm.safetensors").is_file()
    data = ask_json(
        capsys, str(scene), QUESTION, "--model", "tiny/qwen2_vl", "--focus", f"distilled:{rfm}"
    )
    assert data["config"]["focus_scorer"] == "distilled"
    assert data["config"]["distilled_rfm"]["base_model_id"] == "tiny/qwen2_vl"
    assert data["cost"]["focus_passes"]
    code = main(
        [
            "ask",
            str(scene),
            QUESTION,
            "--model",
            "tiny/llava",
            "--device",
            "cpu",
            "--focus",
            f"distilled:{rfm}",
        ]
    )
    _, err = capsys.readouterr()
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2 and len(lines) == 1 and "tiny/qwen2_vl" in lines[0], err


@pytest.mark.parametrize("pruner", [["--llm-prune", "pdrop"], ["--llm-prune", "fastv"]])
def test_bench_runs_with_each_pruner(pruner: list[str], tmp_path: Path, capsys) -> None:
    from tests.bench_fakes import subset_rows, write_jsonl, write_standins

    rows = subset_rows(4, per_image=2)
    write_standins(rows, tmp_path / "images")
    data = write_jsonl(tmp_path / "q.jsonl", rows)
    out = tmp_path / "run"
    args = [
        "bench",
        "--data",
        str(data),
        "--image-root",
        str(tmp_path / "images"),
        "--model",
        "tiny/llava_next",
        "--out",
        str(out),
        "--device",
        "cpu",
        "--json",
        *pruner,
    ]
    code = main(args)
    stdout, err = capsys.readouterr()
    assert code == 0, err
    assert json.loads(stdout)["done"] == 4
    lines = [json.loads(line) for line in (out / "answers.jsonl").read_text().splitlines()]
    assert len(lines) == 4
    for line in lines:
        per_layer = line["cost"]["llm_tokens_per_layer"]
        assert per_layer[-1] < per_layer[0]
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["config"]["answerer"]["prune"]["llm"]["method"] == pruner[1]
