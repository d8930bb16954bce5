"""The cached WordNet synonym table: same answers as NLTK, no NLTK at scoring time."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from lrsvqa.bench import load_lrsvqa, read_answers, score
from lrsvqa.bench import scorer as scorer_mod
from lrsvqa.bench import synonyms as synonyms_mod
from lrsvqa.bench import wordnet as wordnet_mod
from lrsvqa.bench.scorer import SynonymMatcher
from lrsvqa.bench.synonyms import SynonymTable, load_table

from .test_scorer import GOLDEN, LRS_VQA, _random_answers, _write_jsonl

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def wn() -> Any:
    return wordnet_mod.load_wordnet()


@pytest.fixture(scope="module")
def table() -> SynonymTable:
    loaded = load_table()
    assert loaded is not None, "the table disagreed with NLTK when built"
    return loaded


def test_table_agrees_with_nltk_word_by_word(table: SynonymTable, wn: Any) -> None:
    words = synonyms_mod.check_words(table, step=400)
    questions = load_lrsvqa(LRS_VQA)
    words += [q.ground_truth.lower() for q in questions[::5]]
    words += ["ships", "geese", "mice", "better", "best", "running", "flies", "ran", "Planes"]
    assert len(words) > 8000
    assert synonyms_mod.disagreements(table, wn, words) == []
    assert table.version == "3.0" and table.describe() == wordnet_mod.describe(wn)
    # the rules that matter: irregular forms, one round of substitutions, no strip
    assert table.synset_keys("geese") & table.synset_keys("goose")
    assert table.synset_keys("3") & table.synset_keys("three")
    assert not table.synset_keys("parking lot") and not table.synset_keys("yes.")


def test_real_file_scores_identical_to_nltk(table: SynonymTable, wn: Any, tmp_path: Path) -> None:
    rows = _random_answers(load_lrsvqa(LRS_VQA), wn, seed=99)
    answers = read_answers(_write_jsonl(tmp_path / "answers.jsonl", rows))
    assert len(answers) == 7333
    by_nltk = score(answers, matcher=SynonymMatcher(wn)).to_dict()
    by_table = score(answers, matcher=SynonymMatcher(table)).to_dict()
    assert by_table == by_nltk
    assert sum(c["synonym_matches"] for g in by_table["groups"] for c in g["categories"]) > 300


def _fake_wordnet(folder: Path, ship_offsets: str = "100 200") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    header = "  1 This software and database is being provided ... WordNet 3.0 Copyright 2006\n"
    n_ship = len(ship_offsets.split())
    index = {
        "noun": f"boat n 1 0 1 0 200\nship n {n_ship} 0 {n_ship} 0 {ship_offsets}\n",
        "verb": "ship v 1 1 @ 1 0 300\n",
        "adj": "big a 1 0 1 0 400\nlarge a 1 0 1 0 400\n",
        "adv": "",
    }
    for suffix in ("noun", "verb", "adj", "adv"):
        (folder / f"index.{suffix}").write_text(header + index[suffix], encoding="utf-8")
        exc = "bigger big\n" if suffix == "adj" else ""
        (folder / f"{suffix}.exc").write_text(exc, encoding="utf-8")
    for name in wordnet_mod.DICT_FILES:  # the rest only has to exist
        if not (folder / name).exists():
            (folder / name).write_text("", encoding="utf-8")
    return folder


@pytest.fixture()
def fake_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    folder = _fake_wordnet(tmp_path / "dict")
    monkeypatch.setenv("LRSVQA_WORDNET_DIR", str(folder))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setattr(synonyms_mod, "_loaded", None)
    monkeypatch.setattr(scorer_mod, "_default_matcher", None)
    return folder


def test_table_is_cached_and_rebuilt_when_wordnet_changes(
    fake_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    first = load_table(verify=False)
    assert first is not None and first.where.startswith(str(fake_env))
    assert first.synset_keys("ships") == {("n", 100), ("n", 200), ("v", 300)}
    assert first.synset_keys("boats") & first.synset_keys("ship")
    assert first.synset_keys("bigger") == first.synset_keys("large") == {("a", 400)}
    cached = list(synonyms_mod.table_dir().glob("*.marshal"))
    assert len(cached) == 1 and first.digest in cached[0].name

    monkeypatch.setattr(synonyms_mod, "_loaded", None)
    built: list[str] = []
    real_parse = synonyms_mod.parse
    monkeypatch.setattr(
        synonyms_mod, "parse", lambda *a, **k: built.append("x") or real_parse(*a, **k)
    )
    again = load_table(verify=False)
    assert again is not None and built == []  # read from the cache, not parsed
    assert again.index == first.index

    _fake_wordnet(fake_env, ship_offsets="100 201")  # WordNet changed, same file size
    changed = load_table(verify=False)
    assert changed is not None and built == ["x"] and changed.digest != first.digest
    assert changed.synset_keys("ships") == {("n", 100), ("n", 201), ("v", 300)}
    assert not changed.synset_keys("boat") & changed.synset_keys("ship")
    assert [p.name for p in synonyms_mod.table_dir().glob("*.marshal")] == [
        f"{changed.digest}-py{sys.version_info.major}{sys.version_info.minor}.marshal"
    ]

    # a damaged cache file is rebuilt, not trusted
    synonyms_mod._cache_file(changed.digest).write_bytes(b"\x00garbage")
    monkeypatch.setattr(synonyms_mod, "_loaded", None)
    assert load_table(verify=False) is not None and built == ["x", "x"]


def test_disagreement_with_nltk_falls_back_to_nltk(
    fake_env: Path, monkeypatch: pytest.MonkeyPatch, wn: Any
) -> None:
    monkeypatch.setattr(synonyms_mod, "disagreements", lambda table, reader, words: ["ships"])
    monkeypatch.setattr(wordnet_mod, "load_wordnet", lambda: wn)
    assert load_table() is None
    assert load_table() is None  # remembered in the cache: not re-verified
    matcher = scorer_mod.default_matcher()
    assert matcher.wordnet is wn


def test_bad_index_line_names_file(fake_env: Path) -> None:
    (fake_env / "index.noun").write_text("ship n 2 0 2 0 100\n", encoding="utf-8")
    with pytest.raises(wordnet_mod.WordNetMissingError, match=r"index\.noun line 1"):
        load_table(verify=False)


def test_cold_score_process_never_imports_nltk(table: SynonymTable) -> None:
    code = (
        "import sys\n"
        "from lrsvqa.cli.main import main\n"
        f"rc = main(['score', {str(GOLDEN)!r}, '--json'])\n"
        "assert rc == 0, rc\n"
        "assert 'nltk' not in sys.modules, 'scoring imported NLTK'\n"
    )
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120
    )
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["groups"][0]["aa"] == pytest.approx((1 / 2 + 1 + 1 / 3) / 3)
    assert report["wordnet"] == table.describe()
