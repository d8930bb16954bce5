"""LRS-VQA and MME-RealWorld loaders: the real annotation file and broken copies of it."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest

from lrsvqa.bench import (
    CATEGORIES,
    SIZE_BINS,
    SOURCES,
    load_lrsvqa,
    load_mme_rs,
    missing_images,
)
from lrsvqa.errors import ConfigError, DataError

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
LRS_VQA = SHARED_DATA / "LRS_VQA_merged.jsonl"
FIXTURES = Path(__file__).resolve().parent / "data"


@pytest.fixture(scope="module")
def real_lines() -> list[str]:
    # CI has shared/data: a missing file must fail, not skip.
    assert LRS_VQA.is_file(), f"missing {LRS_VQA}"
    return LRS_VQA.read_text(encoding="utf-8").splitlines()


def _write(path: Path, lines: list[str]) -> Path:
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def test_real_file_loads_all_questions() -> None:
    questions = load_lrsvqa(LRS_VQA)
    assert len(questions) == 7333
    assert {q.category for q in questions} == set(CATEGORIES)
    assert Counter(q.source for q in questions) == {"STAR": 3999, "FAIR": 2272, "GLH-Bridge": 1062}
    assert len({q.question_id for q in questions}) == 7333
    assert {q.size_bin for q in questions} == {*SIZE_BINS, None}
    first = questions[0]
    assert first.question_id == "FAIR_1"
    assert first.image == "LRS_VQA/image/15565.tif"
    assert first.image_path is None
    assert first.hbox == (282, 3418, 763, 4050)
    assert first.image_size == (4000, 4000)
    # count questions carry no box / size bin
    counts = [q for q in questions if q.category == "count"]
    assert all(q.hbox is None and q.size_bin is None for q in counts)
    assert json.loads(json.dumps(first.to_dict()))["hbox"] == [282, 3418, 763, 4050]


def test_filters_and_limit(tmp_path: Path) -> None:
    fair = load_lrsvqa(LRS_VQA, sources=["FAIR"])
    assert len(fair) == 2272 and {q.source for q in fair} == {"FAIR"}
    color = load_lrsvqa(LRS_VQA, sources="STAR", categories=["object color"])
    assert color and {(q.source, q.category) for q in color} == {("STAR", "object color")}
    small = load_lrsvqa(LRS_VQA, size_bins=["32x32"], limit=5)
    assert len(small) == 5 and {q.size_bin for q in small} == {"32x32"}
    with_root = load_lrsvqa(LRS_VQA, tmp_path, limit=3)
    assert with_root[0].image_path == tmp_path / "LRS_VQA/image/15565.tif"


@pytest.mark.parametrize(
    ("kwargs", "needle"),
    [
        ({"sources": ["DOTA"]}, "'FAIR', 'GLH-Bridge', 'STAR'"),
        ({"categories": ["colour"]}, "'object color'"),
        ({"size_bins": ["16x16"]}, "'>1024x1024'"),
        ({"limit": -1}, "limit"),
    ],
)
def test_unknown_filter_value_lists_valid_ones(kwargs: dict, needle: str) -> None:
    with pytest.raises(ConfigError, match=needle):
        load_lrsvqa(LRS_VQA, **kwargs)


def test_malformed_json_names_line(tmp_path: Path, real_lines: list[str]) -> None:
    lines = real_lines[:5]
    lines[2] = lines[2][:-3]
    bad = _write(tmp_path / "bad.jsonl", lines)
    with pytest.raises(DataError, match=r"bad\.jsonl:3: not valid JSON"):
        load_lrsvqa(bad)


def test_unknown_category_names_line(tmp_path: Path, real_lines: list[str]) -> None:
    rows = [json.loads(line) for line in real_lines[:6]]
    rows[4]["category"] = "object colour"
    bad = _write(tmp_path / "cat.jsonl", [json.dumps(r) for r in rows])
    with pytest.raises(
        DataError, match=r"cat\.jsonl: 1 invalid row\(s\): line 5: unknown category"
    ):
        load_lrsvqa(bad)


def test_duplicate_id_names_both_lines(tmp_path: Path, real_lines: list[str]) -> None:
    bad = _write(tmp_path / "dup.jsonl", [*real_lines[:4], real_lines[1]])
    with pytest.raises(DataError, match=r"lines 2 and 5: duplicate question_id 'FAIR_2'"):
        load_lrsvqa(bad)


def test_missing_field_and_several_problems(tmp_path: Path, real_lines: list[str]) -> None:
    rows = [json.loads(line) for line in real_lines[:6]]
    del rows[0]["ground_truth"]
    rows[3]["image_size"] = [0, 10]
    rows[5]["question_id"] = "DOTA_1"
    bad = _write(tmp_path / "x.jsonl", ["", *(json.dumps(r) for r in rows)])
    with pytest.raises(DataError) as info:
        load_lrsvqa(bad)
    message = str(info.value)
    assert "3 invalid row(s)" in message
    assert "line 2: missing required field(s) ground_truth" in message
    assert "line 5: image_size" in message
    assert "line 7: question_id 'DOTA_1'" in message


def test_empty_and_absent_files(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="no questions"):
        load_lrsvqa(_write(tmp_path / "empty.jsonl", [""]))
    with pytest.raises(DataError, match="cannot read"):
        load_lrsvqa(tmp_path / "absent.jsonl")


def test_missing_images(tmp_path: Path) -> None:
    questions = load_lrsvqa(LRS_VQA, tmp_path, sources=["FAIR"], limit=20)
    present = questions[0].image_path
    assert present is not None
    present.parent.mkdir(parents=True)
    present.write_bytes(b"")
    missing = missing_images(questions)
    expected = list(dict.fromkeys(q.image_path for q in questions if q.image_path != present))
    assert missing == expected
    with pytest.raises(ConfigError, match="image_root"):
        missing_images(load_lrsvqa(LRS_VQA, limit=1))


def test_sources_constant_matches_file() -> None:
    assert {q.source for q in load_lrsvqa(LRS_VQA)} == set(SOURCES)


# --- MME-RealWorld remote sensing ---------------------------------------------------------


def test_mme_rs_fixture(tmp_path: Path) -> None:
    questions = load_mme_rs(FIXTURES / "mme_rs_sample.json", tmp_path)
    assert [q.question_id for q in questions] == [
        "perception/remote_sensing/color/0001",
        "perception/remote_sensing/count/0002",
        "perception/remote_sensing/position/0004",
    ]
    first = questions[0]
    assert first.choices[0] == "(A) White" and len(first.choices) == 5
    assert first.ground_truth == "A"
    assert first.category == "color" and first.subtask == "Remote Sensing"
    assert first.image_path == tmp_path / "remote_sensing/03553_Toronto.png"
    assert questions[2].choices[-1] == "(E) There is no ship."  # "Answer Choices" spelling
    prompt = first.prompt()
    assert prompt.startswith("What color is the roof")
    assert "The choices are listed below: \n\n(A) White\n(B) Red" in prompt
    assert prompt.endswith("Respond with only the letter (A, B, C, D, or E) of the correct option.")
    assert json.loads(json.dumps(first.to_dict()))["choices"][1] == "(B) Red"
    assert len(load_mme_rs(FIXTURES / "mme_rs_sample.json", subtask=None)) == 4


def test_mme_rs_jsonl_and_errors(tmp_path: Path) -> None:
    rows = json.loads((FIXTURES / "mme_rs_sample.json").read_text(encoding="utf-8"))
    jsonl = _write(tmp_path / "mme.jsonl", [json.dumps(r) for r in rows])
    assert len(load_mme_rs(jsonl)) == 3
    rows[1]["Ground truth"] = "F"
    del rows[3]["Answer Choices"]
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(rows), encoding="utf-8")
    with pytest.raises(DataError) as info:
        load_mme_rs(bad)
    assert "row 2: 'Ground truth' must be one letter" in str(info.value)
    assert "row 4: missing required field(s) Answer choices" in str(info.value)
    dup = tmp_path / "dup.json"
    dup.write_text(json.dumps([rows[0], rows[0]]), encoding="utf-8")
    with pytest.raises(DataError, match="rows 1 and 2: duplicate Question_id"):
        load_mme_rs(dup)
    with pytest.raises(DataError, match="no questions with Subtask 'Remote Sensing'"):
        load_mme_rs(_write(tmp_path / "ad.jsonl", [json.dumps(rows[2])]))
