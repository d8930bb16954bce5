"""``--preset lrsvqa-release``: each point of the release's operating point, on synthetic
scenes and tiny models, against what the release's code (VisionXLab/LRS-VQA,
``LRS-VQA-Code/llava``) computes."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from lrsvqa.cli.main import main
from lrsvqa.focus import FocusConfig
from lrsvqa.focus.scoring import AttentionScorer, ScoreResult
from lrsvqa.focus.segments import thumbnail_segment, tile_segments
from lrsvqa.focus.select import select
from lrsvqa.models.release_format import pool_tokens, release_prompt, release_token_ids
from lrsvqa.prune import LLMPruneConfig, planned_tokens_per_layer
from lrsvqa.pyramid import DynamicImagePyramid, PyramidConfig, plan_levels
from lrsvqa.testing import make_ship_scene

QUESTION = "How many ships are there?"

# What the release's `process_images` (mm_utils.py, branch `pyramid_crop`, block 336, base
# 1008) gives for LRS-VQA's largest image, 0836.png (27,328 x 17,216): (resize_hw,
# block_num_hw) per level, coarsest first (its `scale_infos` after the reversal). Worked out
# from its arithmetic: scales 1, 1/2 … 1/16 (27,328/32 < 1,008) and 1,008/27,328; each
# round(h * s), round(w * s), ceil block counts, the smaller block-filling scale, round.
RELEASE_27328 = [
    ((635, 1008), (2, 3)),
    ((1270, 2016), (4, 6)),
    ((2328, 3696), (7, 11)),
    ((4368, 6934), (13, 21)),
    ((8679, 13776), (26, 41)),
    ((17357, 27552), (52, 82)),
]


def test_level_sizes_equal_the_release_for_27328_px() -> None:
    levels = plan_levels(27328, 17216, PyramidConfig.release())
    got = [((lvl.height, lvl.width), (lvl.rows, lvl.cols)) for lvl in levels]
    assert got == RELEASE_27328
    portrait = plan_levels(17216, 27328, PyramidConfig.release())
    assert [(lvl.width, lvl.height) for lvl in portrait] == [hw for hw, _ in RELEASE_27328]
    # the default is unchanged: powers of two from native, coarsest fitting 3 x 448 px
    default = plan_levels(27328, 17216, PyramidConfig())
    assert [lvl.factor for lvl in default] == [32, 16, 8, 4, 2, 1]
    # a long side exactly 2 x 1008: no extra level; a small image: one (upscaled) level
    assert [lvl.width for lvl in plan_levels(2016, 1000, PyramidConfig.release())] == [
        1008,
        2016,
    ]
    assert [(lvl.width, lvl.height) for lvl in plan_levels(800, 600, PyramidConfig.release())] == [
        (896, 672)
    ]


@pytest.fixture(scope="module")
def scene(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("release") / "scene.tif"
    make_ship_scene(path, 3000, 2000, ships=4)
    return path


def test_release_tiles_partition_every_level_and_children_overlap(scene: Path) -> None:
    with DynamicImagePyramid(scene, config=PyramidConfig.release()) as pyramid:
        assert [lvl.n_tiles for lvl in pyramid.levels] == [6, 15, 54]  # 1008, 1512, 3024 px
        for lvl in pyramid.levels:
            covered = np.zeros((2000, 3000), dtype=np.int32)
            for tile in pyramid.tiles(lvl.index):
                w = pyramid.image_window(tile)
                covered[w.row_off : w.row_end, w.col_off : w.col_end] += 1
            assert (covered == 1).all()  # every native pixel in exactly one tile per level
        for tile in pyramid.tiles(0) + pyramid.tiles(1):
            kids = pyramid.children(tile)
            expect = [
                t
                for t in pyramid.tiles(tile.level + 1)
                if pyramid.image_window(t).intersection(pyramid.image_window(tile)).area
            ]
            assert kids == expect and len(kids) > 1
            for kid in kids:
                parent = pyramid.parent(kid)
                assert parent is not None and parent.level == tile.level
                assert pyramid.image_window(parent).intersection(pyramid.image_window(kid)).area


def fake_scores(pyramid: DynamicImagePyramid, tiles: list[Any], grids: list[Any]) -> ScoreResult:
    """Seeded scores, and a newline score per level row, summing to one. The tiles of the
    last column and the newlines score (almost) nothing: only the rule that every newline is
    kept can then reach the right-most tiles of the next level."""
    rng = np.random.default_rng(len(tiles))
    last = max(t.col for t in tiles)
    keep = [t.col != last or t.level > 0 for t in tiles]
    out = [rng.random(g) * k for k, g in zip(keep, grids, strict=True)]
    rows = {t.row * grids[0][0] + r for t in tiles for r in range(grids[0][0])}
    seps = {(tiles[0].level + 1, r): 1e-9 for r in sorted(rows)}
    total = sum(float(g.sum()) for g in out) + sum(seps.values())
    return ScoreResult([g / total for g in out], 0, 0, 0, {k: v / total for k, v in seps.items()})


class _Tokens:
    def __init__(self, grid: tuple[int, int]):
        self.grid = grid
        self.n = grid[0] * grid[1]


def run_select(scene: Path, config: FocusConfig, scorer: Any = None) -> tuple[Any, list[Any]]:
    seen: list[Any] = []
    scorer = scorer or fake_scores
    with DynamicImagePyramid(scene, config=PyramidConfig.release()) as pyramid:

        def encode(tiles: list[Any]) -> list[Any]:
            return [_Tokens((12, 12)) for _ in tiles]

        def score(thumb: Any, tiles: list[Any], tokens: list[Any]) -> ScoreResult:
            result = scorer(pyramid, list(tiles), [t.grid for t in tokens])
            seen.append((list(tiles), result))
            return result

        result = select(
            pyramid,
            config,
            thumbnail=_Tokens((24, 24)),  # type: ignore[arg-type]
            encode=encode,
            score=score,
            tokens_per_tile=144,
        )
        return result, seen


def test_every_hit_tile_is_kept_and_one_zoom_step(scene: Path) -> None:
    config = FocusConfig.release(token_budget=100_000)
    result, seen = run_select(scene, config)
    assert [lvl.level for lvl in result.levels] == [0, 1]  # one zoom step, then stop
    tiles0, scored = seen[0]
    # the release's get_next_level_fea, redone by hand: the top int(25 %) of tokens and
    # newlines of the unpadded 24 x 36 (+1 newline column) grid of level 0 (672 x 1008 px),
    # every newline kept, each mapped to floor(R * 5 / 24), floor(C * 3 / 37) (level 1 is
    # 3 x 5 tiles)
    cells = []
    for tile, grid in zip(tiles0, scored.grids, strict=True):
        for r in range(12):
            for c in range(12):
                cells.append((grid[r, c], tile.row * 12 + r, tile.col * 12 + c))
    newlines = [(v, row, 36) for (_, row), v in scored.separators.items()]
    assert len(cells) == 6 * 144 and len(newlines) == 24
    ranked = sorted(cells + newlines, key=lambda t: -t[0])
    top = ranked[: int(0.25 * len(ranked))]
    assert len(top) == 222  # int(), not ceil: 888 * 0.25 = 222
    hit = {(big_r * 3 // 24, big_c * 5 // 37) for _, big_r, big_c in top + newlines}
    assert {(t.row, t.col) for t in result.levels[1].encoded} == hit
    assert len(hit) > config.max_tiles  # max_tiles is not read
    # the newline column hits the right-most tiles of every row (the release's bias)
    assert {(r, 4) for r in range(3)} <= hit
    # the default keeps only max_tiles best, and goes on to native resolution
    default, _ = run_select(scene, FocusConfig(token_budget=100_000))
    assert all(len(lvl.encoded) <= 6 for lvl in default.levels[1:])


def one_token(pyramid: DynamicImagePyramid, tiles: list[Any], grids: list[Any]) -> ScoreResult:
    """All attention on level 0's token (row 0, column 22), none on the newlines."""
    out = [np.zeros(g) for g in grids]
    for t, g in zip(tiles, out, strict=True):
        if t.level == 0 and (t.row, t.col) == (0, 1):
            g[0, 10] = 1.0  # scene column 12 + 10 = 22
    rows = {t.row * grids[0][0] + r for t in tiles for r in range(grids[0][0])}
    return ScoreResult(out, 0, 0, 0, {(tiles[0].level + 1, r): 0.0 for r in sorted(rows)})


def test_a_token_hits_the_tile_at_its_relative_place_counting_the_newline_column(
    scene: Path,
) -> None:
    # int(888 / 888) = 1 token kept: scene cell (0, 22) of the 24 x (36 + 1) grid → level-1
    # tile (0, 22 * 5 // 37) = (0, 2) (by pixel footprint it would lie in tile column 3),
    # and the 24 newlines → (r * 3 // 24, 36 * 5 // 37) = the right-most column
    config = FocusConfig.release(token_budget=100_000, keep_ratio=1 / 888)
    result, _ = run_select(scene, config, one_token)
    assert {(t.row, t.col) for t in result.levels[1].encoded} == {(0, 2), (0, 4), (1, 4), (2, 4)}


def test_int_rounding_of_the_keep_ratio() -> None:
    assert FocusConfig.release().keep_count(10) == 2  # int(2.5)
    assert FocusConfig().keep_count(10) == 3  # ceil, the default
    assert FocusConfig.release().keep_count(3) == 0 and FocusConfig().keep_count(3) == 1


def test_lambda_rule_counts_from_the_original_n() -> None:
    release = LLMPruneConfig.release(method="pdrop", pdrop_layers=(1, 2, 3))
    assert release.stage_counts(999, 3) == [499, 249, 124]  # int(999 * 0.5 ** s)
    compound = LLMPruneConfig(method="pdrop", pdrop_layers=(1, 2, 3))
    assert compound.stage_counts(999, 3) == [500, 250, 125]  # rounded half up, compounded
    planned = planned_tokens_per_layer(release, 4, 1099, 999)
    assert [n - 100 for n in planned] == [999, 499, 249, 124]


def test_release_prompts_match_conversation_py() -> None:
    # conv_vicuna_v1 (SeparatorStyle.TWO, sep " ", sep2 "</s>") with the message
    # "<image>\n" + question + "\n" of eval/model_rsvqa.py, then the open assistant turn
    vicuna = (
        "A chat between a curious user and an artificial intelligence assistant. The "
        "assistant gives helpful, detailed, and polite answers to the user's questions. "
        "USER: <image>\nHow many ships are there?\n ASSISTANT:"
    )
    assert release_prompt("vicuna_v1", QUESTION) == vicuna
    # conv_qwen (SeparatorStyle.CHATML, sep "<|im_end|>")
    qwen = (
        "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n"
        "<|im_start|>user\n<image>\nHow many ships are there?\n<|im_end|>\n"
        "<|im_start|>assistant\n"
    )
    assert release_prompt("qwen_1_5", QUESTION) == qwen


class _Tok:
    bos_token_id = 1

    def __call__(self, text: str) -> dict[str, list[int]]:
        return {"input_ids": [1, *(ord(ch) for ch in text)]}


def test_tokenizer_image_token_rule() -> None:
    ids = release_token_ids(_Tok(), "ab<image>\nc", -200)
    assert ids == [1, ord("a"), ord("b"), -200, ord("\n"), ord("c")]  # one BOS, no other


@pytest.fixture(scope="module")
def captured(scene: Path) -> dict[str, Any]:
    """A preset answer of tiny/llava and the LLM input it was generated from."""
    import lrsvqa.pipeline.pipeline as pipeline_module
    from lrsvqa.pipeline import Pipeline

    seen: dict[str, Any] = {}
    original = pipeline_module.generate_pruned

    def spy(adapter: Any, inputs: Any, *args: Any, **kwargs: Any) -> Any:
        seen["inputs"] = inputs
        return original(adapter, inputs, *args, **kwargs)

    pipeline_module.generate_pruned = spy  # type: ignore[assignment]
    try:
        pipeline = Pipeline.from_pretrained(
            "tiny/llava", device="cpu", preset="lrsvqa-release", max_new_tokens=2
        )
        seen["answer"] = pipeline.ask(scene, QUESTION)
        seen["pipeline"] = pipeline
    finally:
        pipeline_module.generate_pruned = original  # type: ignore[assignment]
    return seen


def test_pooled_tiles_separator_and_newline_rows(captured: dict[str, Any]) -> None:
    answer, inputs, pipeline = captured["answer"], captured["inputs"], captured["pipeline"]
    adapter = pipeline.adapter
    assert all(t.grid == (12, 12) for t in answer.focus.final_tokens)  # 144 per tile
    assert pipeline.tokens_per_tile == 144
    ids = inputs.input_ids[0].tolist()
    image = adapter.image_token_id
    first = ids.index(image)
    colon = adapter.tokenizer.convert_tokens_to_ids([":"])[0]
    # [global 576 tokens][':'][tiles…]: the separator right after the unpooled thumbnail
    assert ids[first : first + 576] == [image] * 576
    assert ids[first + 576] == colon and ids[first + 577] == image
    # one newline per row of level 1's unpadded token grid (1008 px tall: 36 rows), kept
    # tokens or not
    level = answer.focus.final_tiles[0].level
    assert level == 1
    assert inputs.separator_positions.numel() == 36
    # the prompt is vicuna_v1's, tokenized around <image> as tokenizer_image_token
    text = adapter.prompt(1, QUESTION)
    assert text.startswith("A chat between") and text.endswith("\n ASSISTANT:")
    assert answer.config["preset"] == "lrsvqa-release"
    assert answer.config["input_format"]["global_separator"] == ":"
    from lrsvqa.pipeline.preset import resolve

    assert resolve("lrsvqa-release", adapter).max_new_tokens == 1024  # model_rsvqa.py, Vicuna


def test_pooling_is_the_2x2_mean() -> None:
    from lrsvqa.models.base import VisionTokens

    embeds = torch.arange(4 * 4 * 3, dtype=torch.float32).reshape(16, 3)
    pooled = pool_tokens(VisionTokens(embeds, (4, 4)), 2)
    grid = embeds.reshape(4, 4, 3)
    assert pooled.grid == (2, 2)
    assert torch.allclose(pooled.embeds[1], grid[0:2, 2:4].reshape(4, 3).mean(0))


def test_an_odd_grid_pools_bilinearly_to_ceil_half_as_the_release() -> None:
    """SigLIP's 27 x 27 grid (LLaVA-OneVision) → 14 x 14, as ``get_2dPool_bilinear``'s
    ``interpolate(size=ceil(h / 2), mode="bilinear")``; a constant grid stays constant."""
    import torch.nn.functional as F

    from lrsvqa.models.base import VisionTokens

    embeds = torch.randn(27 * 27, 5)
    pooled = pool_tokens(VisionTokens(embeds, (27, 27)), 2)
    assert pooled.grid == (14, 14) and pooled.embeds.shape == (196, 5)
    x = embeds.reshape(27, 27, 5).permute(2, 0, 1).unsqueeze(0)
    ref = F.interpolate(x, size=(14, 14), mode="bilinear").squeeze(0).permute(1, 2, 0)
    assert torch.allclose(pooled.embeds, ref.reshape(196, 5))


def test_onevision_under_the_preset_keeps_its_siglip_tiles_pooled() -> None:
    from lrsvqa.pipeline import Pipeline

    pipeline = Pipeline.from_pretrained(
        "tiny/llava_onevision", device="cpu", preset="lrsvqa-release"
    )
    assert pipeline.pyramid.tile_size == 384 and pipeline.pyramid.tile_pool == 2
    assert pipeline.pyramid.levels == "release" and pipeline.tokens_per_tile == 14 * 14


def test_newlines_inside_the_softmax_only_under_the_preset(captured: dict[str, Any]) -> None:
    pipeline = captured["pipeline"]
    adapter = pipeline.adapter
    session = pipeline.session(captured["answer"].scene)
    tiles = session.pyramid.tiles(0)
    tokens = session.encode_tiles(tiles, __import__("lrsvqa").pipeline.session.Stopwatch()).tokens
    thumb = session.thumbnail(__import__("lrsvqa").pipeline.session.Stopwatch()).tokens[0]
    segments = pipeline._every_row(
        session, [thumbnail_segment(thumb), *tile_segments(tiles, tokens, [None] * 6)]
    )
    inside = AttentionScorer(newlines=True).score(adapter, segments, QUESTION)
    assert inside.separators is not None and len(inside.separators) == 24
    sep_total = sum(inside.separators.values())
    grid_total = sum(float(g.sum()) for g in inside.grids)
    assert sep_total > 0 and math.isclose(grid_total + sep_total, 1.0, rel_tol=1e-6)
    excluded = AttentionScorer().score(adapter, segments, QUESTION)
    assert excluded.separators is None
    assert math.isclose(sum(float(g.sum()) for g in excluded.grids), 1.0, rel_tol=1e-6)


def write_scenes(rows: list[dict[str, Any]], root: Path) -> None:
    from PIL import Image

    rng = np.random.default_rng(0)
    for image in dict.fromkeys(r["image"] for r in rows):
        path = root / image
        path.parent.mkdir(parents=True, exist_ok=True)
        pixels = rng.integers(0, 255, (700, 1100, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(path)


@pytest.mark.parametrize(
    "family", ["qwen2_vl", "qwen2_5_vl", "llava", "llava_next", "llava_onevision"]
)
def test_bench_with_the_preset_runs_and_records_it(family: str, tmp_path: Path, capsys) -> None:
    from tests.bench_fakes import subset_rows, write_jsonl

    rows = subset_rows(1, per_image=1)
    write_scenes(rows, tmp_path / "images")
    data = write_jsonl(tmp_path / "q.jsonl", rows)
    out = tmp_path / "run"
    args = [
        "bench", "--data", str(data), "--image-root", str(tmp_path / "images"),
        "--model", f"tiny/{family}", "--out", str(out), "--device", "cpu", "--json",
        "--preset", "lrsvqa-release", "--max-new-tokens", "2",
    ]  # fmt: skip
    code = main(args)
    stdout, err = capsys.readouterr()
    assert code == 0, err
    assert json.loads(stdout)["done"] == 1
    assert (
        "--max-new-tokens 2 given beside --preset lrsvqa-release replaces the preset's per-model value"
        in err
    )
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["identity"]["preset"] == "lrsvqa-release"
    assert manifest["identity"]["focus_extra"]["tile_rule"] == "hit"
    assert manifest["identity"]["llm_prune"]["pdrop_rounding"] == "release"
    config = manifest["config"]["answerer"]
    assert config["preset"] == "lrsvqa-release"
    tile = 384 if family == "llava_onevision" else 336  # OneVision keeps its SigLIP tiles
    assert config["pyramid"]["levels"] == "release" and config["pyramid"]["tile_size"] == tile
    assert config["focus"]["max_depth"] == 1 and config["focus"]["rounding"] == "floor"
    assert config["focus"]["newlines"] == "in-softmax"
    assert config["prune"]["llm"]["pdrop_positions"] == "compact"
    llava = family.startswith("llava")
    assert config["pyramid"].get("tile_pool", 1) == (2 if llava else 1)
    # the release's rule: qwen_1_5 for a Qwen2 LLM (OneVision's), else vicuna_v1
    fmt = "qwen_1_5" if family == "llava_onevision" else "vicuna_v1"
    assert config["input_format"]["prompt_format"] == (fmt if llava else None)
    if family == "llava":
        # the same folder without the preset is another configuration: refused
        code = main([a for a in args if a not in ("--preset", "lrsvqa-release")])
        _, err = capsys.readouterr()
        assert code == 2 and "other settings" in err


def test_convert_keeps_the_release_newline_for_the_preset(tmp_path: Path, capsys) -> None:
    from safetensors import safe_open
    from safetensors.torch import save_file

    from lrsvqa.pipeline import Pipeline
    from lrsvqa.testing.release import write_release_checkpoint

    src = write_release_checkpoint(tmp_path / "src", "llama")
    hidden = json.loads((src / "config.json").read_text())["hidden_size"]
    newline = torch.randn(hidden, generator=torch.Generator().manual_seed(3))
    shard = sorted(src.glob("*.safetensors"))[0]
    with safe_open(str(shard), framework="pt") as f:
        state = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118
    state["model.image_newline"] = newline  # a spatial_unpad checkpoint's learned newline
    save_file(state, str(shard))
    index = json.loads((src / "model.safetensors.index.json").read_text())
    index["weight_map"]["model.image_newline"] = shard.name
    (src / "model.safetensors.index.json").write_text(json.dumps(index))
    out = tmp_path / "converted"
    assert main(["convert-checkpoint", str(src), str(out), "--json"]) == 0
    capsys.readouterr()
    assert (out / "image_newline.safetensors").is_file()
    pipeline = Pipeline.from_pretrained(str(out), device="cpu", preset="lrsvqa-release")
    assert torch.equal(pipeline.adapter.separator_embedding().float(), newline)


def test_pdrop_release_rule_inside_the_llm(captured: dict[str, Any]) -> None:
    from lrsvqa.prune import generate_pruned

    adapter, inputs = captured["pipeline"].adapter, captured["inputs"]
    n_layers = adapter.capabilities.num_layers
    n_image = int(inputs.vision_positions.numel())
    release = LLMPruneConfig.release(method="pdrop", pdrop_ratio=0.3)
    _, per_layer = generate_pruned(adapter, inputs, release, max_new_tokens=1)
    assert per_layer == planned_tokens_per_layer(release, n_layers, inputs.length, n_image)
    stages = len(release.boundaries(n_layers))
    assert per_layer[-1] == inputs.length - n_image + int(n_image * 0.3**stages)


def test_ask_json_records_the_preset_and_the_options_that_won(scene: Path, capsys) -> None:
    args = ["ask", str(scene), QUESTION, "--model", "tiny/qwen2_vl", "--device", "cpu"]
    preset = ["--preset", "lrsvqa-release", "--keep-ratio", "0.5", "--max-new-tokens", "2"]
    code = main([*args, *preset, "--json"])
    out, err = capsys.readouterr()
    assert code == 0, err
    data = json.loads(out)
    assert data["config"]["preset"] == "lrsvqa-release"
    assert data["config"]["focus"]["keep_ratio"] == 0.5  # the user's value won …
    assert data["config"]["focus"]["tile_rule"] == "hit"  # … the rest is the preset's
    assert data["config"]["max_new_tokens"] == 2
    assert any("--keep-ratio 0.5 given beside --preset" in n for n in data["notes"])
    assert any("--max-new-tokens 2 given beside --preset" in n for n in data["notes"])


def test_every_command_says_which_options_beside_the_preset_won(
    scene: Path, tmp_path: Path, capsys
) -> None:
    """ask-many (like serve and demo) builds its pipeline with build_pipeline: the notes go
    to stderr; ask puts them in the answer's notes instead, never both."""
    common = ["--model", "tiny/qwen2_vl", "--device", "cpu", "--preset", "lrsvqa-release"]
    common += ["--keep-ratio", "0.5", "--max-new-tokens", "1"]
    out = tmp_path / "many.csv"
    code = main(["ask-many", str(scene), "-q", QUESTION, "--out", str(out), *common])
    _, err = capsys.readouterr()
    assert code == 0, err
    assert err.count("note: --keep-ratio 0.5 given beside --preset lrsvqa-release") == 1
    code = main(["ask", str(scene), QUESTION, *common])
    printed, err = capsys.readouterr()
    assert code == 0, err
    assert (printed + err).count("--keep-ratio 0.5 given beside --preset") == 1


def test_a_stock_pipeline_on_the_same_model_answers_as_stock(
    scene: Path, captured: dict[str, Any]
) -> None:
    """The preset's input format is the preset pipeline's own: a stock pipeline sharing the
    adapter afterwards lays out its input (prompt, no ':' separator) as a fresh one does."""
    from lrsvqa.models import from_pretrained
    from lrsvqa.pipeline import Pipeline

    shared = captured["pipeline"].adapter
    assert shared.input_format.global_separator  # left as the preset set it
    after = Pipeline(shared, max_new_tokens=2).ask(scene, QUESTION)
    fresh = Pipeline(from_pretrained("tiny/llava", device="cpu"), max_new_tokens=2).ask(
        scene, QUESTION
    )
    assert not shared.input_format.global_separator
    assert after.text == fresh.text
    assert after.cost.llm_vision_tokens == fresh.cost.llm_vision_tokens
    assert after.cost.llm_prompt_tokens == fresh.cost.llm_prompt_tokens
    again = captured["pipeline"].ask(scene, QUESTION)  # and the preset pipeline gets its own back
    assert again.cost.llm_prompt_tokens == captured["answer"].cost.llm_prompt_tokens
