"""Loader messages for folders that stock transformers reads with a misleading error."""

from __future__ import annotations

import importlib.util
import shutil
from pathlib import Path

import pytest

from lrsvqa.cli.main import main
from lrsvqa.models import tiny


def test_tokenizer_model_without_json_names_the_packages(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = tmp_path / "model"
    shutil.copytree(tiny.ensure("llava"), folder)
    (folder / "tokenizer.json").unlink()
    (folder / "tokenizer.model").write_bytes(b"\x0a\x05hello")  # a SentencePiece file
    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util,
        "find_spec",
        lambda name, *a: None if name == "sentencepiece" else real(name, *a),
    )
    scene = Path(__file__).resolve().parents[2] / "shared" / "data" / "RGB.byte.tif"
    code = main(["ask", str(scene), "Any ships?", "--model", str(folder), "--device", "cpu"])
    err = [ln for ln in capsys.readouterr().err.splitlines() if ln.startswith("lrsvqa:")]
    assert code == 2 and len(err) == 1
    assert "tokenizer.model but no tokenizer.json" in err[0]
    assert "pip install 'lrsvqa[sentencepiece]'" in err[0] and "tiktoken" not in err[0]
    assert str(folder) in err[0]


def test_processor_loads_with_the_pil_backend(tmp_path: Path) -> None:
    from lrsvqa.models import from_pretrained

    ad = from_pretrained("tiny/qwen2_5_vl", device="cpu")
    assert type(ad.processor.image_processor).__name__.endswith("Pil")
