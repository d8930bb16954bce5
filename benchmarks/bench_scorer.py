"""Time ``lrsvqa score`` on 7,333 answers as a whole process (cold start, nothing imported).

Usage: python benchmarks/bench_scorer.py [ANNOTATIONS.jsonl] [--seed N] [--repeats N]

Answers are made from the real LRS-VQA annotations and mix exact ground truths,
casing variants, WordNet synonyms, empty answers and ground truths of other rows.
Each figure is the median wall time of fresh ``python -m lrsvqa.cli.main score``
processes:

- ``table``: the default path, the cached WordNet synonym table (``bench.synonyms``);
- ``nltk``: the same scorer with NLTK's WordNet reader (the path before the table);
- ``rebuild``: the first run after WordNet changed (empty cache: the table is parsed,
  checked against NLTK word by word, and cached).

It also checks that ``table`` and ``nltk`` print the same report.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DEFAULT_DATA = REPO.parent / "shared" / "data" / "LRS_VQA_merged.jsonl"

NLTK_SCORE = """
import sys
from lrsvqa.bench.scorer import SynonymMatcher, score_files
from lrsvqa.bench.wordnet import load_wordnet
import json
print(json.dumps(score_files(sys.argv[1], matcher=SynonymMatcher(load_wordnet())).to_dict()))
"""


def make_answers(data: Path, out: Path, seed: int) -> int:
    from lrsvqa.bench import load_lrsvqa
    from lrsvqa.bench.wordnet import load_wordnet

    wn = load_wordnet()
    rng = random.Random(seed)
    questions = load_lrsvqa(data)
    truths = [q.ground_truth for q in questions]
    with open(out, "w", encoding="utf-8") as fh:
        for q in questions:
            gt, u = q.ground_truth, rng.random()
            if u < 0.35:
                answer = gt
            elif u < 0.45:
                answer = rng.choice([gt.upper(), gt.title(), gt + "."])
            elif u < 0.60:
                senses = wn.synsets(gt)
                answer = rng.choice(rng.choice(senses).lemma_names()) if senses else gt + " "
            elif u < 0.63:
                answer = ""
            else:
                answer = rng.choice(truths)
            row = {"question_id": q.question_id, "text": answer}
            fh.write(json.dumps(row | {"ground_truth": gt, "category": q.category}) + "\n")
    return len(questions)


def run(argv: list[str], env: dict[str, str]) -> tuple[float, dict]:
    start = time.perf_counter()
    done = subprocess.run(argv, capture_output=True, text=True, env=env, check=True)
    elapsed = time.perf_counter() - start
    return elapsed, json.loads(done.stdout)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data", nargs="?", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    env = {**os.environ, "PYTHONPATH": str(REPO)}
    with tempfile.TemporaryDirectory() as tmp:
        answers = Path(tmp) / "answers.jsonl"
        n = make_answers(args.data, answers, args.seed)
        cli = [sys.executable, "-m", "lrsvqa.cli.main", "score", str(answers), "--json"]
        run(cli, env)  # make sure the table is in the user's cache
        table = [run(cli, env) for _ in range(args.repeats)]
        nltk = [run([sys.executable, "-c", NLTK_SCORE, str(answers)], env)]
        nltk += [run([sys.executable, "-c", NLTK_SCORE, str(answers)], env)]
        fresh = {**env, "XDG_CACHE_HOME": str(Path(tmp) / "empty-cache")}
        rebuild = run(cli, fresh)

    same = all(r[1] == nltk[0][1] for r in (*table, *nltk, rebuild))
    t_table = statistics.median(t for t, _ in table)
    t_nltk = statistics.median(t for t, _ in nltk)
    report = table[0][1]
    print(f"answers                          {n}")
    print(f"cold process, synonym table      {t_table:.2f} s (median of {len(table)})")
    print(f"cold process, NLTK reader        {t_nltk:.2f} s (median of {len(nltk)})")
    print(f"first run after WordNet changed  {rebuild[0]:.2f} s (build + check + cache)")
    print(f"table / NLTK                     {t_table / t_nltk:.3f}")
    print(f"identical reports                {same}")
    print(" | ".join(f"{g['name']} AA {g['aa'] * 100:.2f}%" for g in report["groups"]))


if __name__ == "__main__":
    main()
