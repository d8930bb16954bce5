"""The LRS-VQA scorer: golden numbers, an independent re-implementation, CLI, WordNet setup."""

from __future__ import annotations

import functools
import json
import random
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import pytest

from lrsvqa.bench import load_lrsvqa, read_answers, score, score_files
from lrsvqa.bench import scorer as scorer_mod
from lrsvqa.bench import synonyms as synonyms_mod
from lrsvqa.bench import wordnet as wordnet_mod
from lrsvqa.bench.scorer import AnswerRow, SynonymMatcher, normalise
from lrsvqa.cli.main import main
from lrsvqa.errors import ConfigError, DataError, WordNetMissingError

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
LRS_VQA = SHARED_DATA / "LRS_VQA_merged.jsonl"
GOLDEN = Path(__file__).resolve().parent / "data" / "golden_answers.jsonl"
INSTALL_HINT = "sudo apt-get install wordnet-base wordnet-sense-index"


@pytest.fixture(scope="module")
def wn() -> Any:
    return wordnet_mod.load_wordnet()


@pytest.fixture(scope="module")
def questions() -> list:
    assert LRS_VQA.is_file(), f"missing {LRS_VQA}"  # CI has shared/data: fail, never skip
    return load_lrsvqa(LRS_VQA)


def _write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


# --- WordNet ------------------------------------------------------------------------------


def test_wordnet_facts_the_golden_file_relies_on(wn: Any) -> None:
    assert wn.get_version() == "3.0"
    assert {s.name() for s in wn.synsets("three")} & {s.name() for s in wn.synsets("3")}
    best = max(a.path_similarity(b) for a in wn.synsets("airplane") for b in wn.synsets("plane"))
    assert best == 1.0  # both have airplane.n.01
    assert wn.synsets("parking lot") == []  # WordNet writes multi-word lemmas with "_"
    assert wn.synsets("parking_lot") and wn.synsets("yes.") == [] and wn.synsets(" no") == []
    assert wn.synset("dog.n.01").lexname() == "noun.animal"
    assert wn.synset("run.v.01").lexname() == "verb.motion"


def test_lexnames_parse_as_nltk_does() -> None:
    lines = wordnet_mod.lexnames_text().splitlines()
    assert len(lines) == 45
    for i, line in enumerate(lines):
        index, name, category = line.split()  # NLTK: index, lexname, _ = line.split()
        assert int(index) == i and len(index) == 2
        assert int(category) == {"noun": 1, "verb": 2, "adj": 3, "adv": 4}[name.split(".")[0]]
    assert lines[0] == "00\tadj.all\t3" and lines[3] == "03\tnoun.Tops\t1"
    assert lines[44] == "44\tadj.ppl\t3" and lines[29] == "29\tverb.body\t2"


def test_assemble_copies_files_and_reuses_them(tmp_path: Path) -> None:
    source = tmp_path / "dict"
    source.mkdir()
    for name in wordnet_mod.DICT_FILES:
        (source / name).write_text(name, encoding="utf-8")
    corpus = wordnet_mod.assemble(source, tmp_path / "nltk_data")
    assert corpus == tmp_path / "nltk_data" / "corpora" / "wordnet"
    assert (corpus / "lexnames").read_text(encoding="utf-8") == wordnet_mod.lexnames_text()
    data = corpus / "data.noun"
    assert not data.is_symlink() and data.stat().st_nlink == 1  # NLTK refuses links
    assert data.stat().st_mode & 0o022 == 0
    mtime = data.stat().st_mtime_ns
    assert wordnet_mod.assemble(source, tmp_path / "nltk_data") == corpus
    assert data.stat().st_mtime_ns == mtime  # reused, not rebuilt
    (source / "data.noun").write_text("changed", encoding="utf-8")
    wordnet_mod.assemble(source, tmp_path / "nltk_data")
    assert data.read_text(encoding="utf-8") == "changed"
    (corpus / "lexnames").chmod(0o664)  # made under umask 002: NLTK would refuse it
    wordnet_mod.assemble(source, tmp_path / "nltk_data")
    assert all(p.stat().st_mode & 0o022 == 0 for p in corpus.iterdir())


def _no_wordnet(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(wordnet_mod, "SEARCH_DIRS", ())
    monkeypatch.setattr(wordnet_mod, "find_nltk_corpus", lambda: None)
    monkeypatch.setattr(wordnet_mod, "_reader", None)
    monkeypatch.setattr(scorer_mod, "_default_matcher", None)
    monkeypatch.setattr(synonyms_mod, "nltk_data_dirs", lambda: [])
    monkeypatch.setattr(synonyms_mod, "_loaded", None)


def test_wordnet_dir_env_without_files(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    _no_wordnet(monkeypatch)
    monkeypatch.setenv("LRSVQA_WORDNET_DIR", str(tmp_path))
    with pytest.raises(WordNetMissingError, match=INSTALL_HINT) as info:
        wordnet_mod.load_wordnet()
    assert str(tmp_path) in str(info.value) and "LRSVQA_WORDNET_DIR" in str(info.value)


def test_wordnet_missing_cli_exit_2(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    _no_wordnet(monkeypatch)
    monkeypatch.delenv("LRSVQA_WORDNET_DIR", raising=False)
    with pytest.raises(WordNetMissingError, match="WordNet not found"):
        score([{"question_id": "FAIR_1", "text": "a", "ground_truth": "b", "category": "count"}])
    assert main(["score", str(GOLDEN)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("lrsvqa: error: WordNet not found")
    assert INSTALL_HINT in err and "(or set LRSVQA_WORDNET_DIR)" in err


# --- golden file --------------------------------------------------------------------------


def test_golden_official(wn: Any) -> None:
    report = score_files(GOLDEN, matcher=SynonymMatcher(wn))
    assert report.mode == "official" and report.official
    assert [g.name for g in report.groups] == ["FAIR", "GLH-Bridge", "STAR"]
    assert report.n_answers == 21 and report.n_skipped == 3

    fair = report.group("FAIR")
    cats = {c.category: (c.correct, c.total) for c in fair.categories}
    # count: "three" == "3" by synonym (three.n.01), "4" != "3"              -> 1/2
    # object category: "plane" ~ "airplane" (airplane.n.01), "Airplane" lower -> 2/2
    # reasoning: "Yes." no (no strip, "yes." has no synset), "yes" (given as
    #   "id") yes, " no" no; FAIR_7 has an empty ground truth: skipped          -> 1/3
    # object shape: its only row has an empty ground truth: listed, 0/0, not in AA
    assert cats == {
        "count": (1, 2),
        "object category": (2, 2),
        "reasoning": (1, 3),
        "object shape": (0, 0),
    }
    assert fair.skipped == 2 and fair.total == 7 and fair.correct == 4
    assert fair.oa == 4 / 7
    assert fair.aa == pytest.approx((1 / 2 + 1 + 1 / 3) / 3)  # 0.6111 != OA 0.5714
    shape = next(c for c in fair.categories if c.category == "object shape")
    assert shape.accuracy is None
    synonym_hits = {c.category: c.synonym_matches for c in fair.categories}
    assert synonym_hits["count"] == 1 and synonym_hits["object category"] == 1

    star = report.group("STAR")
    # object color: "gray" ~ "grey" (gray.n.01), "red" != "white", "WHITE" -> 2/3
    # rural or urban: "urban" == "urban", "urban" != "rural"             -> 1/2
    # object category: "parking area" vs "parking lot": multi-word strings
    #   have no synsets (WordNet has parking_lot), so no match          -> 0/1
    # count: "two" ~ "2" (given as "id")                                  -> 1/1
    # STAR_7 has an empty category: skipped
    assert {c.category: (c.correct, c.total) for c in star.categories} == {
        "count": (1, 1),
        "object category": (0, 1),
        "object color": (2, 3),
        "rural or urban": (1, 2),
    }
    assert star.skipped == 1
    assert star.oa == 4 / 7
    assert star.aa == pytest.approx((1 + 0 + 2 / 3 + 1 / 2) / 4)  # 0.5417

    glh = report.group("GLH-Bridge")
    # object shape: "rectangular" yes, "rectangle" no (noun vs adjective
    #   synsets), "round" ~ "circular" (circular.s.01)                   -> 2/3
    # object background: "water"                                          -> 1/1
    assert {c.category: (c.correct, c.total) for c in glh.categories} == {
        "object background": (1, 1),
        "object shape": (2, 3),
    }
    assert glh.oa == 3 / 4 and glh.aa == pytest.approx((1 + 2 / 3) / 2)

    as_dict = json.loads(json.dumps(report.to_dict()))
    assert as_dict["groups"][0]["group"] == {"source": "FAIR"}
    assert as_dict["groups"][0]["aa"] == pytest.approx(0.6111111)
    text = report.to_text()
    assert "== FAIR — official scoring (reference rules)" in text
    assert "AA: FAIR 61.11% | GLH-Bridge 83.33% | STAR 54.17%" in text
    assert "| **OA** | 4 | 7 | 57.14% |" in report.to_markdown()


def test_golden_normalised_is_labelled_and_lenient(wn: Any) -> None:
    report = score_files(GOLDEN, mode="normalised", matcher=SynonymMatcher(wn))
    assert not report.official and "NORMALISED" in report.to_text()
    assert "not comparable" in report.to_markdown()
    fair = report.group("FAIR")
    # "Yes." and " no" now match: reasoning 3/3
    assert {c.category: (c.correct, c.total) for c in fair.categories}["reasoning"] == (3, 3)
    assert report.to_dict()["official"] is False


def test_normalise() -> None:
    assert normalise(" Three. ") == "3"
    assert normalise("Twenty-one!") == "21"
    assert normalise("seventeen") == "17" and normalise("someone") == "someone"
    assert normalise("Yes.") == "yes" and normalise("parking lot") == "parking lot"


def test_by_size_bin_needs_annotations(wn: Any, questions: list) -> None:
    rows = [
        {"question_id": q.question_id, "text": q.ground_truth, "ground_truth": q.ground_truth}
        | {"category": q.category}
        for q in questions[::20]
    ]
    with pytest.raises(DataError, match="size_bin; pass the annotation file with --data"):
        score(rows, by="source,size_bin", matcher=SynonymMatcher(wn))
    report = score(rows, questions, by="source,category,size_bin", matcher=SynonymMatcher(wn))
    assert report.by == ("source", "category", "size_bin")
    names = [g.name for g in report.groups]
    assert names[0] == "FAIR / 32x32" and names[-1] == "STAR / none" and "FAIR / none" in names
    assert all(g.oa == 1.0 for g in report.groups)
    assert sum(g.total for g in report.groups) == len(rows) == 367
    pooled = score(rows, by=[], matcher=SynonymMatcher(wn))
    assert [g.name for g in pooled.groups] == ["all"]
    with pytest.raises(ConfigError, match="valid: source, category, size_bin"):
        score(rows, by="model", matcher=SynonymMatcher(wn))
    with pytest.raises(ConfigError, match="official, normalised"):
        score(rows, mode="lenient", matcher=SynonymMatcher(wn))


def test_join_with_annotations(wn: Any, questions: list, tmp_path: Path) -> None:
    bare = _write_jsonl(
        tmp_path / "answers.jsonl",
        [{"id": q.question_id, "text": q.ground_truth.upper()} for q in questions[:50]],
    )
    with pytest.raises(DataError, match=r"answers\.jsonl:1: answer has no ground_truth/category"):
        score_files(bare, matcher=SynonymMatcher(wn))
    report = score_files(bare, LRS_VQA, matcher=SynonymMatcher(wn))
    assert report.group("FAIR").total == 50 and report.group("FAIR").oa == 1.0
    unknown = _write_jsonl(tmp_path / "u.jsonl", [{"id": "FAIR_999999", "text": "x"}])
    with pytest.raises(DataError, match=r"u\.jsonl:1: question id 'FAIR_999999' is not in"):
        score_files(unknown, LRS_VQA, matcher=SynonymMatcher(wn))


def test_answer_file_errors(tmp_path: Path) -> None:
    row = {"question_id": "FAIR_1", "text": "yes", "ground_truth": "yes", "category": "count"}
    dup = _write_jsonl(tmp_path / "dup.jsonl", [row, {**row, "question_id": "FAIR_2"}, row])
    with pytest.raises(DataError, match=r"'FAIR_1' at .*dup\.jsonl:1 and .*dup\.jsonl:3"):
        read_answers(dup)
    clash = _write_jsonl(tmp_path / "clash.jsonl", [{**row, "id": "FAIR_9"}])
    with pytest.raises(DataError, match=r"clash\.jsonl:1: question_id 'FAIR_1' and id 'FAIR_9'"):
        read_answers(clash)
    no_text = _write_jsonl(tmp_path / "t.jsonl", [{"question_id": "FAIR_1"}])
    with pytest.raises(DataError, match=r"t\.jsonl:1: 'text'"):
        read_answers(no_text)
    with pytest.raises(DataError, match="no answers"):
        read_answers(_empty_dir(tmp_path))


def _empty_dir(tmp_path: Path) -> Path:
    folder = tmp_path / "run"
    folder.mkdir()
    (folder / "other.jsonl").write_text("", encoding="utf-8")
    return folder


# --- independent re-implementation on the real annotation file ------------------------------


def _reference_scores(items: list[dict], wn: Any) -> dict[str, dict[str, Any]]:
    """The official rules, written straight from their description."""
    synsets = functools.lru_cache(maxsize=None)(wn.synsets)
    similarity = functools.lru_cache(maxsize=None)(lambda a, b: a.path_similarity(b))

    @functools.cache
    def are_synonyms(word1: str, word2: str) -> bool:
        for s1 in synsets(word1):
            for s2 in synsets(word2):
                sim = similarity(s1, s2)
                if sim is not None and sim > 0.8:
                    return True
        return False

    per_source: dict[str, list[dict]] = defaultdict(list)
    for item in items:
        per_source[(item.get("question_id") or item["id"]).split("_")[0]].append(item)
    results = {}
    for source, base in per_source.items():
        categories = {item["category"] for item in base}
        correct = dict.fromkeys(categories, 0)
        total = dict.fromkeys(categories, 0)
        n_correct, n_total = 0, len(base)
        for item in base:
            gt, answer, category = (
                item["ground_truth"].lower(),
                item["text"].lower(),
                item["category"],
            )
            if not (gt and category):
                n_total -= 1
                continue
            if gt == answer or are_synonyms(gt, answer):
                n_correct += 1
                correct[category] += 1
            total[category] += 1
        accs = [correct[c] / total[c] for c in sorted(categories) if total[c] > 0]
        results[source] = {
            "categories": {c: (correct[c], total[c]) for c in categories if c},
            "oa": n_correct / n_total if n_total else None,
            "aa": sum(accs) / len(accs) if accs else None,
        }
    return results


def _random_answers(questions: list, wn: Any, seed: int = 1234) -> list[dict]:
    rng = random.Random(seed)
    truths = [q.ground_truth for q in questions]
    rows = []
    for q in questions:
        gt, u = q.ground_truth, rng.random()
        if u < 0.35:
            answer = gt
        elif u < 0.45:
            answer = rng.choice([gt.upper(), gt.title(), gt.capitalize(), gt + "."])
        elif u < 0.60:  # a WordNet synonym, with "_" or " ", or a near miss
            senses = wn.synsets(gt)
            if senses:
                lemma = rng.choice(rng.choice(senses).lemma_names())
                answer = lemma.replace("_", rng.choice(["_", " "]))
            else:
                answer = gt + rng.choice([" ", "s", ""])
        elif u < 0.63:
            answer = ""
        else:
            answer = rng.choice(truths)
        row = {"text": answer, "ground_truth": gt, "category": q.category}
        row["id" if rng.random() < 0.2 else "question_id"] = q.question_id
        v = rng.random()
        if v < 0.01:
            row["ground_truth"] = ""
        elif v < 0.015:
            row["category"] = ""
        rows.append(row)
    return rows


def test_matches_independent_implementation(wn: Any, questions: list, tmp_path: Path) -> None:
    rows = _random_answers(questions, wn)
    path = _write_jsonl(tmp_path / "answers.jsonl", rows)
    answer_rows = read_answers(path)
    assert len(answer_rows) == 7333

    start = time.perf_counter()
    report = score(answer_rows, matcher=SynonymMatcher(wn))  # cold caches
    elapsed = time.perf_counter() - start
    assert elapsed <= 5.0, f"scoring 7,333 answers took {elapsed:.2f} s"

    expected = _reference_scores(rows, wn)
    assert {g.name for g in report.groups} == set(expected)
    for group in report.groups:
        ref = expected[group.name]
        got = {c.category: (c.correct, c.total) for c in group.categories}
        assert got == ref["categories"], group.name
        assert group.oa == ref["oa"] and group.aa == ref["aa"], group.name
    # the file exercises every rule
    assert report.n_skipped > 50
    assert sum(c.synonym_matches for g in report.groups for c in g.categories) > 300


# --- CLI ----------------------------------------------------------------------------------


def test_cli_json_and_text(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["score", str(GOLDEN), "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["mode"] == "official" and data["groups"][0]["name"] == "FAIR"
    assert data["groups"][0]["oa"] == 4 / 7
    assert main(["score", str(GOLDEN)]) == 0
    out = capsys.readouterr().out
    assert "OA" in out and "AA: FAIR 61.11%" in out
    assert main(["score", str(GOLDEN), "--mode", "normalised", "--markdown"]) == 0
    assert "NORMALISED" in capsys.readouterr().out


def test_cli_run_dir(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    lines = GOLDEN.read_text(encoding="utf-8").splitlines(keepends=True)
    run = tmp_path / "run"
    run.mkdir()
    (run / "answers_0.jsonl").write_text("".join(lines[:10]), encoding="utf-8")
    (run / "answers_1.jsonl").write_text("".join(lines[10:]), encoding="utf-8")
    (run / "config.jsonl").write_text("not json\n", encoding="utf-8")  # ignored
    assert main(["score", str(run), "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["n_answers"] == 21 and len(data["files"]) == 2
    (run / "answers_2.jsonl").write_text(lines[3], encoding="utf-8")
    assert main(["score", str(run)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "answers_0.jsonl:4 and" in err and "answers_2.jsonl:1" in err


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["missing.jsonl"], "missing.jsonl: no such answer file or run folder"),
        (["BAD"], "BAD.jsonl:2: not valid JSON"),
        (["BARE"], "answer has no ground_truth/category; pass the annotation file with --data"),
        (["BARE", "--data", "nope.jsonl"], "nope.jsonl: no such annotation file (--data)"),
        (["GOLDEN", "--by", "model"], "unknown grouping model"),
    ],
)
def test_cli_bad_input_exit_2(
    args: list[str], needle: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = tmp_path / "BAD.jsonl"
    bad.write_text('{"id": "FAIR_1", "text": "x"}\n{"id": \n', encoding="utf-8")
    bare = _write_jsonl(tmp_path / "BARE.jsonl", [{"id": "FAIR_1", "text": "x"}])
    paths = {"BAD": str(bad), "BARE": str(bare), "GOLDEN": str(GOLDEN)}
    argv = [paths.get(a, str(tmp_path / a) if a.endswith(".jsonl") else a) for a in args]
    assert main(["score", *argv]) == 2
    err = capsys.readouterr().err
    assert err.startswith("lrsvqa: error: ") and err.count("\n") == 1
    assert needle in err


def test_answer_row_from_dict() -> None:
    row = AnswerRow.from_dict({"id": "STAR_3", "text": "x"}, "f.jsonl", 7)
    assert row.source == "STAR" and row.where == "f.jsonl:7" and row.ground_truth is None
    assert row.to_dict()["question_id"] == "STAR_3"
