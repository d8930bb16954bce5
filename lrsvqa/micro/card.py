"""Ship a trained micro model into the package: weights, tokenizer, processor, model card.

    python -m lrsvqa.micro.card RUN_DIR [--name qwen2_vl]

copies ``RUN_DIR/model`` to ``lrsvqa/models/micro/NAME``, evaluates it on the fixed held-out
test set that the tests check (``TEST_SET``), and writes ``MODEL_CARD.md`` and ``card.json``
from the run's settings, log and held-out evaluation.
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
from pathlib import Path
from typing import Any

from lrsvqa.micro.evaluate import HELD_OUT_SEED, evaluate_single_tile

# The fixed held-out set the default test suite re-checks (seeds never used in training).
TEST_SET = {"n_questions": 90, "seed": HELD_OUT_SEED + 500_000}
FILES = (
    "config.json",
    "generation_config.json",
    "model.safetensors",
    "chat_template.jinja",
    "processor_config.json",
    "tokenizer.json",
    "tokenizer_config.json",
)


#: How the shipped run used the machine, unless ``ship(how=...)`` says otherwise.
HOW = "1 torch thread, shared with other work"


def ship(run: str | Path, name: str = "qwen2_vl", how: str = HOW) -> Path:
    from lrsvqa.models.loading import MICRO_ROOT

    run = Path(run)
    dest = MICRO_ROOT / name
    dest.mkdir(parents=True, exist_ok=True)
    for f in FILES:
        if (run / "model" / f).exists():
            shutil.copy2(run / "model" / f, dest / f)
    if not (run / "eval.json").exists():  # training stopped before its own evaluation
        report = evaluate_single_tile(str(dest), n_questions=400)
        (run / "eval.json").write_text(json.dumps(report, indent=1) + "\n")
    held_out = json.loads((run / "eval.json").read_text())
    test_set = evaluate_single_tile(str(dest), **TEST_SET)  # type: ignore[arg-type]
    settings = json.loads((run / "settings.json").read_text())
    log = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines() if line]
    card = {
        "name": f"micro/{name}",
        "settings": settings,
        "train_seconds": log[-1]["seconds"] if log else None,
        "steps": log[-1]["step"] if log else None,
        "parameters": _parameters(dest),
        "held_out": held_out,
        "test_set": {**TEST_SET, **test_set},
        "final_log": _tail_means(log),
        "how": how,
    }
    commit = _code_commit()
    if commit:
        card["code_commit"] = commit
    (dest / "card.json").write_text(json.dumps(card, indent=1) + "\n")
    (dest / "MODEL_CARD.md").write_text(render(card))
    return dest


def _parameters(folder: Path) -> int:
    """The shipped weights' parameter count (from the safetensors header: no model built)."""
    from safetensors import safe_open

    with safe_open(str(folder / "model.safetensors"), framework="pt") as f:
        return sum(math.prod(f.get_slice(k).get_shape()) for k in f.keys())  # noqa: SIM118


def _code_commit() -> str | None:
    """The commit of the lrsvqa checkout that ships the card (the code a retrain needs), or
    None outside a git checkout or with uncommitted changes to the package (the shipped
    models' folder, which ``ship`` is writing, aside)."""
    import subprocess

    here = Path(__file__).parent.parent  # the lrsvqa package
    try:
        head = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--", ".", ":(exclude)models/micro"],
            cwd=here,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None
    return None if dirty else head


def _tail_means(log: list[dict[str, Any]], n: int = 100) -> dict[str, float]:
    tail = log[-n:]
    out = {}
    for key in ("answer", "grounding", "share", "chance", "correct"):
        vals = [r[key] for r in tail if key in r]
        if vals:
            out[key] = round(sum(vals) / len(vals), 4)
    return out


def reproduce_flags(settings: dict[str, Any], *, explicit: bool = False) -> str:
    """The trainer options that give ``settings``. ``explicit``: every recorded setting (for
    the code of the commit that recorded them, whose defaults may differ from today's);
    otherwise what today's trainer needs: every setting that differs from ``train``'s
    current default, and a setting the run predates at its value then (a recipe without
    size jitter needs ``--size-jitter 0`` now that jitter is the default)."""
    import inspect

    from lrsvqa.micro.train import OPTIONAL, RECORDED, train

    defaults = {k: p.default for k, p in inspect.signature(train).parameters.items()}
    flags = ""
    for key, option in {**RECORDED, **OPTIONAL}.items():
        value = settings.get(key) if explicit or key in RECORDED else settings.get(key, 0)
        if key == "steps" or value is None or (not explicit and value == defaults[key]):
            continue  # --steps leads the command
        flags += f" {option} {value:g}" if isinstance(value, float) else f" {option} {value}"
    return flags


def render(card: dict[str, Any]) -> str:
    from lrsvqa.micro.data import BIG_SIZES
    from lrsvqa.micro.model import TILE, VISION, text_config

    held = card["held_out"]
    TEXT = text_config(int(card["settings"].get("llm_width", 0)))
    # cards from before "parameters" was recorded are the 128-wide model's
    millions = card.get("parameters", 1_500_000) / 1e6
    rows = "\n".join(
        f"| {cat} | {v['n']} | {v['accuracy']} | {v['majority_baseline']} ({v['majority_answer']}) |"
        for cat, v in held["categories"].items()
    )
    tail = card["final_log"]
    minutes = (card["train_seconds"] or 0) / 60
    single = int(card["settings"].get("single_tile_worlds", 0))
    share = float(card["settings"].get("single_tile_share", 0.0))
    curriculum = (
        f"\n- Curriculum: the first {single:,} worlds are single 224 px tiles (the thumbnail is"
        " then the tile at native resolution), so the model learns to read objects before it"
        " must find them in big scenes; the rest of the stream is the mix above."
        if single
        else ""
    )
    if share:
        curriculum += (
            f"\n- Mixed in: {share:.0%} of the worlds are single 224 px tiles throughout the"
            " stream (reading objects at native resolution), the rest the mix above."
        )
    settings = card["settings"]
    commit = card.get("code_commit")
    code = f" (the code of commit {commit[:10]}: `git checkout {commit[:10]}`)" if commit else ""
    readout = float(settings.get("readout_weight", 0.0))
    token = float(settings.get("token_weight", 1.0))
    flags = reproduce_flags(settings, explicit=bool(commit))
    big = float(settings.get("big_world_share", 0.0))
    jitter = float(settings.get("size_jitter", 0.0))
    if big:
        curriculum += (
            f"\n- Big scenes: {big:.0%} of the worlds after that are {min(BIG_SIZES):,}–"
            f"{max(BIG_SIZES):,} px, where"
            " small objects vanish below a pixel at the coarse levels the focus starts from."
        )
    if jitter:
        curriculum += (
            f"\n- Sides off the tile grid: every world side but the single tile's is scaled by"
            f" a factor in [{1 - jitter:g}, {1 + jitter:g}], so tiles at the right and bottom"
            " edges reach past the image, as in users' scenes; their padding tokens are left out"
            " of every sequence, as a focus pass leaves them out."
        )
    probes = (
        f"\n- Training-only probes (dropped when the model is saved): a linear head on each"
        f" vision token names the class and colour of the object under it"
        # the surface probe came with the size jitter (v10): a v9 card renders without it
        f"{' and the surface (water, rural or urban land)' if jitter else ''}"
        f" (weight {token:g}), which makes the vision tower encode them"
        if token
        else ""
    )
    if readout:
        probes += (
            f"; and a head on the last prompt token's hidden state at the LLM's last layer"
            f" names the asked-about object's class and colour (weight {readout:g}), which"
            " makes the LLM carry what its attention lands on into the answer"
        )
    probes += "." if probes else ""
    return f"""# {card["name"]} — a micro VLM trained on synthetic remote-sensing scenes

**What it is.** A stock `transformers` `Qwen2VLForConditionalGeneration` (so lrsvqa's focus,
pruning and M-RoPE position code paths are exactly those of the real Qwen2-VL models), at
micro size: LLM {TEXT["hidden_size"]} wide x {TEXT["num_hidden_layers"]} layers
({TEXT["num_attention_heads"]} heads, {TEXT["num_key_value_heads"]} KV heads), vision tower
{VISION["embed_dim"]} wide x {VISION["depth"]} layers with the real patch geometry (14 px patches
merged 2x2), {TILE} px tiles (8 x 8 LLM tokens), ~{millions:.1f} M parameters. Its config declares
`"lrsvqa": {{"tile_size": {TILE}, "focus_layers": [1]}}`: the Region Focus Module reads layer 1.

**It knows only the synthetic world** of `lrsvqa.testing.world`: land (rural fields or an urban
grid, roads) and water; ships (moving with a wake, or docked at a pier), planes on concrete
aprons, storage tanks (round or square), vehicles on roads; white, red, blue or yellow; from a
few pixels to tens of pixels long. On real imagery its answers mean nothing.

## Training
- Data: a deterministic stream of random worlds (seeds 0 ..; sizes 224 to 3,584 px) written as
  GeoTIFFs and read through lrsvqa's own pyramid, so it trains on what `ask` feeds it: the
  224 px thumbnail plus tiles of one pyramid level, with their true M-RoPE positions, either
  all tokens (a focus pass) or 25 % of them, the asked-about objects' tokens first (the
  pruned input of an answer). Finer-level tiles are sometimes shifted in the level grid
  (pixels unchanged) so that it sees the large position ids of big scenes.{curriculum}
- Loss: answer cross-entropy **plus a grounding term**: minus the log of the share of layer
  1's attention (last prompt token, mean over heads, restricted to the candidate tiles' tokens
  and renormalised — exactly what the Region Focus Module reads) that falls on the tokens of
  the objects the question is about. This term stands in for the grounding that large
  pre-trained models bring from pre-training: **the focus of this model was trained directly**,
  so its rfm results show the method's mechanics with a model whose attention is grounded,
  not that attention becomes grounded by itself.{probes}
- Recipe: {card["steps"]} steps of {card["settings"]["batch"]} examples, AdamW lr
  {card["settings"]["lr"]} (warm-up, cosine to 10 %), answer weight
  {settings.get("answer_weight", 4.0):g}, grounding weight
  {card["settings"]["grounding_weight"]}, seed {card["settings"]["seed"]}; {minutes:.0f} minutes on
  this project's 2-core CPU machine ({card.get("how", HOW)}).
- Reproduce{code}: `python -m lrsvqa.micro.train --out runs/micro --steps {card["steps"]}{flags}
  --threads 1`
  then `python -m lrsvqa.micro.card runs/micro`.
- End of training (mean of the last 100 steps): answer loss {tail.get("answer")}, token-level
  answer accuracy {tail.get("correct")}, attention share on the asked-about objects
  {tail.get("share")} against {tail.get("chance")} for a uniform attention.

## Held-out accuracy (single-tile scenes, {held["questions"]} questions, seeds never trained on)
Asked through `Pipeline.ask` (rfm selector) on 224 px scenes, exact match:

| category | n | accuracy % | majority baseline % (answer) |
|---|---|---|---|
{rows}

Overall {held["overall"]} %. The default test suite re-checks the fixed test set of
{card["test_set"]["n_questions"]} questions (seed {card["test_set"]["seed"]}): overall
{card["test_set"]["overall"]} % there.

## What it can and cannot answer
See the table: categories well above their majority baseline are learned; those near it are
not. Accuracy on large scenes (4,000–30,000 px) per selector is in `benchmarks/RESULTS.md`
(`bench_accuracy.py`).
"""


def main() -> None:
    parser = argparse.ArgumentParser(description="ship a trained micro model")
    parser.add_argument("run")
    parser.add_argument("--name", default="qwen2_vl")
    parser.add_argument("--how", default=HOW, help="how the run used the machine (the card)")
    args = parser.parse_args()
    print(ship(args.run, args.name, args.how))


if __name__ == "__main__":
    main()
