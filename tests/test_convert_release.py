"""``lrsvqa convert-checkpoint`` on synthetic checkpoints in the LRS-VQA release layout."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from lrsvqa.cli.main import main
from lrsvqa.models import from_pretrained
from lrsvqa.testing.release import LLM_LAYER_LIST, write_release_checkpoint

IMAGE = np.random.default_rng(3).integers(0, 256, size=(336, 336, 3), dtype=np.uint8)
QUESTION = "How many ships are there? Answer the question using a single word or phrase."


def _tensors(folder: Path) -> dict[str, torch.Tensor]:
    out: dict[str, torch.Tensor] = {}
    for file in sorted(folder.glob("*.safetensors")):
        out.update(load_file(str(file)))
    return out


def _convert(src: Path, out: Path, capsys: pytest.CaptureFixture[str], *extra: str) -> Any:
    code = main(["convert-checkpoint", str(src), str(out), "--json", *extra])
    captured = capsys.readouterr()
    return code, (json.loads(captured.out) if code == 0 else captured.err)


@pytest.fixture(scope="module", params=["llama", "qwen2"])
def converted(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> dict[str, Any]:
    root = tmp_path_factory.mktemp(f"release_{request.param}")
    src = write_release_checkpoint(root / "release", request.param)
    out = root / "converted"
    code = main(["convert-checkpoint", str(src), str(out), "--json"])
    assert code == 0
    report = json.loads((out / "lrsvqa_release.json").read_text())
    return {"llm": request.param, "src": src, "out": out, "report": report}


def test_every_source_tensor_is_mapped_once_or_reported(converted: dict[str, Any]) -> None:
    src, out, report = converted["src"], converted["out"], converted["report"]
    source = _tensors(src)
    assert report["tensors"] == len(source)
    assert report["mapped"] + report["rfm"] + len(report["unused"]) == len(source)
    assert set(report["unused"]) == {
        "model.layers.0.self_attn.rotary_emb.inv_freq",
        "model.mm_projector.token_pruner.norm.weight",
    }
    stock = load_file(str(out / "model.safetensors"))
    assert len(stock) == report["mapped"]  # one stock tensor per mapped source tensor
    # Values travel unchanged (the LLM, the projector, the vision tower).
    assert torch.equal(
        stock["model.language_model.layers.3.mlp.down_proj.weight"],
        source["model.layers.3.mlp.down_proj.weight"],
    )
    assert torch.equal(
        stock["model.multi_modal_projector.linear_2.bias"],
        source["model.mm_projector.mlp_projector.2.bias"],
    )
    assert torch.equal(
        stock["model.vision_tower.encoder.layers.2.mlp.fc1.weight"],
        source["model.vision_tower.vision_tower.vision_model.encoder.layers.2.mlp.fc1.weight"],
    )
    # <image> got an embedding row past the release's vocabulary: the mean row.
    rows = stock["model.language_model.embed_tokens.weight"]
    image_id = report["image_token_id"]
    assert rows.shape[0] >= image_id + 1
    if image_id >= source["model.embed_tokens.weight"].shape[0]:
        assert torch.allclose(rows[image_id], source["model.embed_tokens.weight"].mean(0))


def test_converted_model_loads_and_keep_all_equals_stock(converted: dict[str, Any]) -> None:
    ad = from_pretrained(str(converted["out"]), device="cpu")
    assert ad.capabilities.family == "llava"
    assert ad.model.config.text_config.model_type == converted["llm"]
    prompt = ad.prompt(1, QUESTION)
    if converted["llm"] == "llama":  # the release's conv_vicuna_v1, question + "\n"
        assert prompt.startswith("A chat between a curious user and an artificial intelligence")
        assert prompt.endswith(f"USER: <image>\n{QUESTION}\n ASSISTANT:")
    else:  # conv_qwen (qwen_1_5)
        assert prompt == (
            "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\n"
            f"<image>\n{QUESTION}\n<|im_end|>\n<|im_start|>assistant\n"
        )
    batch = ad.stock_inputs(IMAGE, QUESTION)
    n = batch["input_ids"].shape[1]
    stock = ad.model.generate(**batch, max_new_tokens=4, do_sample=False)[0, n:].tolist()
    ours = ad.generate(ad.build_inputs(ad.stock_segments(IMAGE), QUESTION), max_new_tokens=4)
    assert ours.token_ids == stock
    assert ad.image_token_id not in ours.token_ids
    assert ad.image_token_id in ad.model.generation_config.suppress_tokens


def test_converted_rfm_loads_with_the_release_layers(converted: dict[str, Any]) -> None:
    from lrsvqa.focus.distilled import load_scorer

    out = converted["out"]
    ad = from_pretrained(str(out), device="cpu")
    scorer = load_scorer(out / "rfm", ad)
    assert scorer.meta.n_layers == len(LLM_LAYER_LIST) + 1
    assert scorer.meta.teacher_layers == tuple(LLM_LAYER_LIST)
    source = _tensors(converted["src"])
    module = scorer.module.state_dict()
    for i in range(scorer.meta.n_layers):
        key = f"layers.{i}.self_attn.q_proj.weight"
        assert torch.equal(module[key], source[f"model.mm_projector.token_pruner.{key}"])
    from lrsvqa.prune import thumbnail_segment

    grids = scorer.score(
        ad, [thumbnail_segment(ad.encode([IMAGE])[0]), *ad.stock_segments(IMAGE)], QUESTION
    )
    assert len(grids) == 1 and np.isclose(grids[0].sum(), 1.0)


@pytest.fixture(scope="module")
def llama_release(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_release_checkpoint(tmp_path_factory.mktemp("llama_release") / "src", "llama")


def test_cli_ask_with_the_converted_model_and_rfm(
    llama_release: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from lrsvqa.testing import make_ship_scene

    scene = tmp_path / "s.tif"
    make_ship_scene(scene, 900, 700, ships=2)
    out = tmp_path / "converted"
    code, report = _convert(llama_release, out, capsys)
    assert code == 0 and report["rfm_layers"] == len(LLM_LAYER_LIST) + 1
    code = main(
        [
            "ask", str(scene), "How many ships?", "--model", str(out), "--device", "cpu",
            "--focus", f"distilled:{out / 'rfm'}", "--json", "--max-new-tokens", "2",
        ]
    )  # fmt: skip
    assert code == 0
    answer = json.loads(capsys.readouterr().out)
    assert answer["config"]["focus_scorer"] == "distilled"


def _edit(
    src: Path,
    dst: Path,
    drop: str | None = None,
    add: str | None = None,
    reshape: str | None = None,
) -> Path:
    import shutil

    shutil.copytree(src, dst)
    for file in sorted(dst.glob("*.safetensors")):
        with safe_open(str(file), framework="pt") as f:
            state = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118
        state.pop(drop, None)
        if reshape in state:
            state[reshape] = state[reshape][:-1]
        if add is not None:
            state[add] = torch.zeros(2)
            add = None
        save_file(state, str(file))
    return dst


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (
            {"drop": "model.layers.2.self_attn.k_proj.weight"},
            "missing tensor for model.language_model.layers.2.self_attn.k_proj.weight",
        ),
        (
            {"drop": "model.mm_projector.token_pruner.layers.1.mlp.up_proj.weight"},
            "missing RFM tensor model.mm_projector.token_pruner.layers.1.mlp.up_proj.weight",
        ),
        (
            {"add": "model.mm_projector.extra_head.weight"},
            "unexpected tensor model.mm_projector.extra_head.weight",
        ),
        (
            {"add": "model.mm_projector.token_pruner.layers.7.mlp.up_proj.weight"},
            "unexpected RFM tensor model.mm_projector.token_pruner.layers.7",
        ),
        (
            {"reshape": "model.mm_projector.mlp_projector.0.weight"},
            "tensor model.mm_projector.mlp_projector.0.weight has shape",
        ),
    ],
)
def test_a_bad_source_is_one_line_naming_the_tensor(
    edit: dict[str, str],
    message: str,
    llama_release: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    bad = _edit(llama_release, tmp_path / "bad", **edit)
    code, err = _convert(bad, tmp_path / "out", capsys)
    lines = [ln for ln in err.splitlines() if ln.startswith("lrsvqa:")]
    assert code == 2 and len(lines) == 1 and message in lines[0], err


def test_not_a_release_is_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from lrsvqa.models import tiny

    code, err = _convert(tiny.ensure("llava"), tmp_path / "out", capsys)
    assert code == 2 and "is not an LRS-VQA release" in err
