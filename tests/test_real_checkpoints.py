"""Contract tests on models built from the real non-weight files of released checkpoints.

Real tokenizer, chat template, image processor and generation config (Qwen2.5-VL-7B-Instruct's
carries ``repetition_penalty`` 1.05); shrunk random weights. The raw-logit contract tests of
``test_adapter_contract`` cannot see a logits processor: these compare generated tokens.
"""

from __future__ import annotations

import json
import logging
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from lrsvqa.models import from_pretrained
from lrsvqa.testing.checkpoints import build_from_files, plant_close_pair

CHECKPOINT_FILES = Path(__file__).resolve().parents[2] / "shared" / "data" / "checkpoint-files"
RELEASES = {"qwen2_5_vl": "qwen2_5_vl_7b_instruct", "llava": "llava_1_5_7b_hf"}
# Every question holds " ship"; the planted runner-up " boat" is in none of them.
QUESTIONS = [
    "Is there a ship in the harbor?",
    "How many cars are next to the ship? Answer the question using a single word or phrase.",
    "What is next to the ship?",
]
NEW = 4
IMAGE = np.random.default_rng(0).integers(0, 256, size=(224, 280, 3), dtype=np.uint8)


@pytest.fixture(scope="session")
def release_dirs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    if not CHECKPOINT_FILES.is_dir():
        pytest.fail(f"expected the real checkpoint files at {CHECKPOINT_FILES}")
    root = tmp_path_factory.mktemp("release_models")
    return {f: build_from_files(CHECKPOINT_FILES / d, root / d) for f, d in RELEASES.items()}


@pytest.fixture(scope="session")
def planted(release_dirs: dict[str, Path]) -> dict[str, Any]:
    """Each release's model with " ship" (in every prompt) the greedy answer and " boat" a
    close second: a penalty on the prompt's tokens decides between them."""
    out = {}
    for family, path in release_dirs.items():
        ad = from_pretrained(str(path), device="cpu")
        ship, boat = (
            ad.tokenizer(w, add_special_tokens=False)["input_ids"][0] for w in (" ship", " boat")
        )
        batches = [ad.stock_inputs(IMAGE, q) for q in QUESTIONS]
        for batch in batches:
            ids = batch["input_ids"][0].tolist()
            assert ship in ids and boat not in ids
        plant_close_pair(ad, batches, ship, boat)
        out[family] = (ad, ship, boat)
    return out


@pytest.fixture
def settings(planted: dict[str, Any]) -> Iterator[Any]:
    """Set generation-config fields of a planted model for one test, then restore them."""
    saved: list[tuple[Any, dict[str, Any]]] = []

    def apply(ad: Any, **fields: Any) -> None:
        cfg = ad.model.generation_config
        saved.append((cfg, {k: getattr(cfg, k, None) for k in fields}))
        for k, v in fields.items():
            setattr(cfg, k, v)

    yield apply
    for cfg, old in reversed(saved):
        for k, v in old.items():
            setattr(cfg, k, v)


def _stock(ad: Any, question: str) -> list[int]:
    batch = ad.stock_inputs(IMAGE, question)
    out = ad.model.generate(**batch, max_new_tokens=NEW, do_sample=False, num_beams=1)
    return out[0, batch["input_ids"].shape[1] :].tolist()


def _embeds_only(ad: Any, question: str) -> list[int]:
    """What lrsvqa did before: embeddings without the prompt's ids."""
    inputs = ad.build_inputs(ad.stock_segments(IMAGE), question)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        out = ad.model.generate(
            inputs_embeds=inputs.inputs_embeds,
            attention_mask=inputs.attention_mask,
            position_ids=ad.generation_position_ids(inputs),
            max_new_tokens=NEW,
            do_sample=False,
        )
    return out[0].tolist()


def _ours(ad: Any, question: str) -> list[int]:
    inputs = ad.build_inputs(ad.stock_segments(IMAGE), question)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # any generation warning fails the test
        return list(ad.generate(inputs, max_new_tokens=NEW).token_ids)


def test_builds_keep_the_release_files(release_dirs: dict[str, Path]) -> None:
    qwen = json.loads((release_dirs["qwen2_5_vl"] / "generation_config.json").read_text())
    assert qwen["repetition_penalty"] == 1.05 and qwen["eos_token_id"] == [151645, 151643]
    ad = from_pretrained(str(release_dirs["llava"]), device="cpu")
    assert ad.image_token_id == 32000 and ad.tokenizer.pad_token_id == 32001
    assert ad.tokenizer("a")["input_ids"][0] == 1  # <s>, as LLaMA's add_bos_token
    assert ad.prompt(1, "Q?") == "USER: <image>\nQ? ASSISTANT:"


@pytest.mark.parametrize("family", list(RELEASES))
def test_keep_all_equals_stock_under_the_repetition_penalty(
    family: str, planted: dict[str, Any], settings: Any
) -> None:
    ad, ship, boat = planted[family]
    if family == "llava":  # llava-1.5-7b-hf sets no penalty; a fine-tuned release may
        settings(ad, repetition_penalty=1.05)
    assert ad.model.generation_config.repetition_penalty == 1.05
    for question in QUESTIONS:
        stock = _stock(ad, question)
        assert stock[0] == boat  # the penalty on the prompt's " ship" decides the answer
        assert _embeds_only(ad, question)[0] == ship
        assert _ours(ad, question) == stock


# (generation-config fields, whether the embeds-only path diverged from stock with them)
AUDIT = {
    "no_repeat_ngram_size": ({"no_repeat_ngram_size": 1}, True),
    "forced_bos_token_id": ({"forced_bos_token_id": "boat"}, True),
    "bad_words_ids": ({"bad_words_ids": [["ship"]]}, False),
    "suppress_tokens": ({"suppress_tokens": ["ship"]}, False),
    "begin_suppress_tokens": ({"begin_suppress_tokens": ["ship"]}, False),
    "eos_list": ({"eos_token_id": [2, "ship"]}, False),
    "min_new_tokens": ({"eos_token_id": ["ship"], "min_new_tokens": 3}, False),
    "sequence_bias": ({"sequence_bias": [[["ship"], -1000.0]]}, False),
}


def _resolve(value: Any, ids: dict[str, int]) -> Any:
    if isinstance(value, str):
        return ids[value]
    if isinstance(value, list):
        return [_resolve(v, ids) for v in value]
    return value


# Settings where the two paths agreed anyway run in the slow set; the ones that diverged,
# and one that did not, run by default.
_DEFAULT_AUDIT = {"no_repeat_ngram_size", "forced_bos_token_id", "suppress_tokens"}


@pytest.mark.parametrize(
    "name",
    [n if n in _DEFAULT_AUDIT else pytest.param(n, marks=pytest.mark.slow) for n in AUDIT],
)
def test_keep_all_equals_stock_under_other_settings(
    name: str, planted: dict[str, Any], settings: Any
) -> None:
    ad, ship, boat = planted["llava"]
    fields, diverged = AUDIT[name]
    fields = {k: _resolve(v, {"ship": ship, "boat": boat}) for k, v in fields.items()}
    if "sequence_bias" in fields:
        fields["sequence_bias"] = [[list(k), b] for k, b in fields["sequence_bias"]]
    settings(ad, **fields)
    question = QUESTIONS[0]
    stock = _stock(ad, question)
    assert _ours(ad, question) == stock
    assert (_embeds_only(ad, question) != stock) == diverged


def test_generation_config_is_recorded_with_greedy_forced(planted: dict[str, Any]) -> None:
    ad, _, _ = planted["qwen2_5_vl"]
    record = ad.generation_settings(7)
    assert record["greedy_forced"] is True and record["do_sample"] is False
    assert record["num_beams"] == 1 and record["max_new_tokens"] == 7
    assert record["checkpoint"]["repetition_penalty"] == 1.05
    assert record["checkpoint"]["eos_token_id"] == [151645, 151643]
    assert "temperature" not in record["checkpoint"]  # sampling knobs are not in force


def test_pdrop_at_ratio_one_equals_stock_under_the_penalty(planted: dict[str, Any]) -> None:
    from lrsvqa.prune import LLMPruneConfig, generate_pruned

    ad, _, boat = planted["qwen2_5_vl"]
    question = QUESTIONS[1]
    stock = _stock(ad, question)
    inputs = ad.build_inputs(ad.stock_segments(IMAGE), question)
    config = LLMPruneConfig(method="pdrop", pdrop_ratio=1.0)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        generation, _ = generate_pruned(ad, inputs, config, max_new_tokens=NEW)
    assert generation.token_ids == stock and stock[0] == boat


def test_cli_ask_gives_no_generation_warning(
    release_dirs: dict[str, Path],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    from lrsvqa.cli.main import main
    from lrsvqa.testing import make_ship_scene

    scene = tmp_path / "s.tif"
    make_ship_scene(scene, 600, 500, ships=2)
    with warnings.catch_warnings(record=True) as seen, caplog.at_level(logging.WARNING):
        warnings.simplefilter("always")
        code = main(
            [
                "ask",
                str(scene),
                "Is there a ship?",
                "--model",
                str(release_dirs["qwen2_5_vl"]),
                "--device",
                "cpu",
                "--json",
                "--max-new-tokens",
                "3",
                "--llm-prune",
                "pdrop",
            ]
        )
    assert code == 0
    out = json.loads(capsys.readouterr().out)
    generation = out["config"]["generation"]
    assert generation["greedy_forced"] is True
    assert generation["checkpoint"]["repetition_penalty"] == 1.05
    messages = [str(w.message) for w in seen] + [r.getMessage() for r in caplog.records]
    assert not [m for m in messages if "generat" in m.lower() or "penalty" in m.lower()], messages
