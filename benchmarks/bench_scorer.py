"""Time the official scorer on 7,333 answers made from the real LRS-VQA annotations.

Usage: python benchmarks/bench_scorer.py [ANNOTATIONS.jsonl] [--seed N]
Answers mix exact ground truths, casing variants, WordNet synonyms, empty
answers and ground truths of other rows. Prints the seconds spent loading
WordNet, scoring with cold caches, and scoring again with warm caches.
"""

from __future__ import annotations

import argparse
import random
import time
from pathlib import Path

from lrsvqa.bench import load_lrsvqa, score
from lrsvqa.bench.scorer import AnswerRow, SynonymMatcher
from lrsvqa.bench.wordnet import load_wordnet

DEFAULT_DATA = (
    Path(__file__).resolve().parents[1].parent / "shared" / "data" / "LRS_VQA_merged.jsonl"
)


def make_answers(data: Path, wn: object, seed: int) -> list[AnswerRow]:
    questions = load_lrsvqa(data)
    rng = random.Random(seed)
    truths = [q.ground_truth for q in questions]
    rows = []
    for i, q in enumerate(questions, start=1):
        gt, u = q.ground_truth, rng.random()
        if u < 0.35:
            answer = gt
        elif u < 0.45:
            answer = rng.choice([gt.upper(), gt.title(), gt + "."])
        elif u < 0.60:
            senses = wn.synsets(gt)  # type: ignore[attr-defined]
            answer = rng.choice(rng.choice(senses).lemma_names()) if senses else gt + " "
        elif u < 0.63:
            answer = ""
        else:
            answer = rng.choice(truths)
        rows.append(AnswerRow(q.question_id, answer, gt, q.category, line=i))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data", nargs="?", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    start = time.perf_counter()
    wn = load_wordnet()
    load_s = time.perf_counter() - start
    rows = make_answers(args.data, wn, args.seed)

    matcher = SynonymMatcher(wn)
    start = time.perf_counter()
    report = score(rows, matcher=matcher)
    cold_s = time.perf_counter() - start
    start = time.perf_counter()
    score(rows, matcher=matcher)
    warm_s = time.perf_counter() - start

    print(f"answers          {len(rows)}")
    print(f"wordnet load     {load_s:.2f} s")
    print(f"score (cold)     {cold_s:.2f} s")
    print(f"score (warm)     {warm_s:.2f} s")
    print(" | ".join(f"{g.name} AA {g.aa * 100:.2f}%" for g in report.groups if g.aa is not None))


if __name__ == "__main__":
    main()
