"""``Pipeline``: scene → pyramid → focus → pruned tokens → answer with evidence and cost."""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from lrsvqa.errors import ConfigError
from lrsvqa.focus import AttentionScorer, FocusConfig, FocusResult, select
from lrsvqa.focus.padding import unpadded_keep
from lrsvqa.io.scene import Scene
from lrsvqa.pipeline.answer import Answer, Evidence, TileEvidence
from lrsvqa.pipeline.cost import (
    CostReport,
    focus_pass_flops,
    paper_prefill_flops,
    peak_rss_mb,
    prefill_flops,
)
from lrsvqa.pipeline.session import SceneSession, SessionCache, Stopwatch
from lrsvqa.prune import (
    PruneConfig,
    assemble_segments,
    generate_pruned,
    thumbnail_segment,
    tile_segments,
)
from lrsvqa.pyramid import PyramidConfig, Tile

if TYPE_CHECKING:
    from lrsvqa.models.base import Adapter, VisionTokens

MAX_QUESTION_CHARS = 4000


def check_question(question: str) -> str:
    """A question the model can take, or a ConfigError that says what is wrong."""
    if not isinstance(question, str) or not question.strip():
        raise ConfigError("the question is empty; ask something about the scene")
    if len(question) > MAX_QUESTION_CHARS:
        raise ConfigError(
            f"the question is {len(question):,} characters long; the limit is "
            f"{MAX_QUESTION_CHARS:,} (shorten it)"
        )
    try:
        question.encode("utf-8")
    except UnicodeEncodeError:
        raise ConfigError(
            "the question is not valid UTF-8 text; re-type it or fix its encoding"
        ) from None
    return question


class Pipeline:
    """One loaded model and the stage configs; ``ask`` answers questions about scenes."""

    def __init__(
        self,
        adapter: Adapter,
        *,
        focus: FocusConfig | None = None,
        prune: PruneConfig | None = None,
        pyramid: PyramidConfig | None = None,
        max_new_tokens: int = 32,
        progress: bool = False,
        max_scenes: int = 2,
    ):
        caps = adapter.capabilities
        self.adapter = adapter
        self.focus = focus or FocusConfig()
        self.prune = prune or PruneConfig()
        # Tiles and thumbnail follow the model: its tile size and base input size.
        base = pyramid or PyramidConfig()
        self.pyramid = replace(base, tile_size=caps.tile_size, thumbnail_size=caps.thumbnail_size)
        if max_new_tokens < 1:
            raise ConfigError(f"max_new_tokens must be at least 1, got {max_new_tokens}")
        self.max_new_tokens = max_new_tokens
        self.progress = progress
        self.sessions = SessionCache(max_scenes)
        self.scorer: Any = AttentionScorer(self.focus.layers)
        if self.focus.focus.startswith("distilled:"):
            from lrsvqa.focus.distilled import load_scorer

            self.scorer = load_scorer(self.focus.focus.split(":", 1)[1], adapter)
        if self.focus.selector == "rfm":
            self.scorer.resolve_layers(adapter)  # bad layer indices fail now, not mid-run
        self.prune.llm.validate(caps.num_layers)

    @classmethod
    def from_pretrained(
        cls,
        model_id: str | None = None,
        *,
        revision: str | None = None,
        device: str = "auto",
        dtype: str = "auto",
        focus: FocusConfig | None = None,
        prune: PruneConfig | None = None,
        pyramid: PyramidConfig | None = None,
        max_new_tokens: int = 32,
        progress: bool = False,
    ) -> Pipeline:
        """Load a model by Hugging Face id (default: ``lrsvqa.models.DEFAULT_MODEL_ID``)
        or ``tiny/<family>`` (a random offline model: meaningless answers)."""
        from lrsvqa.models import DEFAULT_MODEL_ID, from_pretrained

        adapter = from_pretrained(
            model_id or DEFAULT_MODEL_ID, revision=revision, device=device, dtype=dtype
        )
        return cls(
            adapter,
            focus=focus,
            prune=prune,
            pyramid=pyramid,
            max_new_tokens=max_new_tokens,
            progress=progress,
        )

    @property
    def model_id(self) -> str:
        return self.adapter.model_id

    @property
    def revision(self) -> str | None:
        return self.adapter.revision

    def config_dict(self) -> dict[str, Any]:
        """Every stage's config plus the model's id and revision."""
        return {
            "model_id": self.adapter.model_id,
            "revision": self.adapter.revision,
            "family": self.adapter.capabilities.family,
            "pyramid": self.pyramid.to_dict(),
            "focus": self.focus.to_dict(),
            "focus_layers": list(self.scorer.resolve_layers(self.adapter))
            if self.focus.selector == "rfm"
            else None,
            "focus_scorer": getattr(self.scorer, "name", "attention"),
            "distilled_rfm": self.scorer.meta.to_dict() if hasattr(self.scorer, "meta") else None,
            "prune": self.prune.to_dict(),
            "pdrop_boundaries": list(
                self.prune.llm.boundaries(self.adapter.capabilities.num_layers)
            )
            if self.prune.llm.method == "pdrop"
            else None,
            "generation": {"max_new_tokens": self.max_new_tokens, "do_sample": False},
        }

    def session(
        self, scene: str | os.PathLike[str] | Scene, bands: Sequence[int] | None = None
    ) -> SceneSession:
        """The cached per-scene state (opened on first use)."""
        return self.sessions.get(scene, tuple(bands) if bands else None, self.pyramid, self.adapter)

    def ask(
        self,
        scene: str | os.PathLike[str] | Scene,
        question: str,
        *,
        bands: Sequence[int] | None = None,
    ) -> Answer:
        """Answer ``question`` about ``scene`` (a path, URL or open ``Scene``)."""
        check_question(question)
        start_all = time.perf_counter()
        watch = Stopwatch()
        session = self.session(scene, bands)
        caps = self.adapter.capabilities
        thumbnail_cached = session.has_thumbnail
        thumbnail = session.thumbnail_tokens(watch)
        used: dict[str, int] = {"thumbnail": thumbnail.n}
        encoded: dict[str, int] = {} if thumbnail_cached else {"thumbnail": thumbnail.n}
        tiles_encoded: dict[str, int] = {} if thumbnail_cached else {"thumbnail": 1}
        hits = int(thumbnail_cached)

        def encode(tiles: Sequence[Tile]) -> list[VisionTokens]:
            nonlocal hits
            fresh = {t.key for t in tiles if not session.has(t)}
            tokens = session.encode_tiles(tiles, watch, progress=self.progress)
            for tile, tok in zip(tiles, tokens, strict=True):
                key = str(tile.level)
                used[key] = used.get(key, 0) + tok.n
                if tile.key in fresh:
                    encoded[key] = encoded.get(key, 0) + tok.n
                    tiles_encoded[key] = tiles_encoded.get(key, 0) + 1
                else:
                    hits += 1
            return tokens

        compact_positions = caps.mrope and self.prune.mrope_positions == "compact"
        passes_before = len(self.scorer.passes)
        runs_before = len(getattr(self.scorer, "runs", []))

        def score(thumb: VisionTokens, tiles: Sequence[Tile], tokens: list[VisionTokens]) -> Any:
            start = time.perf_counter()
            keeps = [  # padding never enters the pass
                unpadded_keep(session.pyramid, t, tok.grid)
                for t, tok in zip(tiles, tokens, strict=True)
            ]
            segments = [
                thumbnail_segment(thumb),
                *tile_segments(tiles, tokens, keeps, compact=compact_positions),
            ]
            out = self.scorer.score(self.adapter, segments, question)
            watch.add("focus", time.perf_counter() - start)
            return out

        focus = select(
            session.pyramid,
            self.focus,
            thumbnail=thumbnail,
            encode=encode,
            score=score if self.focus.selector == "rfm" else None,
            tokens_per_tile=caps.n_tokens_per_tile,
        )
        segments = assemble_segments(focus, thumbnail, self.prune, mrope=caps.mrope)
        start = time.perf_counter()
        inputs = self.adapter.build_inputs(segments, question)
        generation, per_layer = generate_pruned(
            self.adapter, inputs, self.prune.llm, max_new_tokens=self.max_new_tokens
        )
        watch.add("generate", time.perf_counter() - start)
        watch.seconds["focus"] = watch.seconds.get("focus", 0.0)
        watch.seconds["total"] = time.perf_counter() - start_all

        passes = self.scorer.passes[passes_before:]
        runs = getattr(self.scorer, "runs", [])[runs_before:] or [(n, n) for n in passes]
        read_layers = self.scorer.resolve_layers(self.adapter) if passes else ()
        focus_layers = max(read_layers) if passes else 0
        n_vision = int(inputs.vision_positions.numel() + inputs.separator_positions.numel())
        cost = CostReport(
            vision_tokens=used,
            vision_tokens_encoded=encoded,
            tiles_encoded=tiles_encoded,
            cache_hits=hits,
            focus_passes=list(passes),
            focus_tokens_run=[run for run, _ in runs],
            focus_layers=focus_layers,
            llm_vision_tokens=n_vision,
            llm_prompt_tokens=inputs.length,
            llm_tokens_per_layer=list(per_layer),
            new_tokens=len(generation.token_ids),
            vision_flops=caps.vision_flops_per_tile * sum(tiles_encoded.values()),
            focus_flops=sum(focus_pass_flops(caps, read_layers, run, keys) for run, keys in runs),
            llm_flops=prefill_flops(caps, per_layer),
            paper_llm_flops=paper_prefill_flops(caps, per_layer),
            paper_focus_flops=sum(
                focus_pass_flops(caps, read_layers, run, keys, paper=True) for run, keys in runs
            ),
            seconds=dict(watch.seconds),
            peak_rss_mb=peak_rss_mb(),
        )
        return Answer(
            text=generation.text.strip(),
            question=question,
            scene=session.scene.path,
            evidence=self._evidence(session, focus),
            cost=cost,
            config=self.config_dict(),
            focus=focus,
            notes=list(focus.notes),
        )

    def save_overlay(
        self, answer: Answer, path: str | os.PathLike[str], *, panel_size: int = 512
    ) -> str:
        """The answer's overlay PNG, reusing this pipeline's open scene."""
        session = self.session(answer.scene)
        return answer.save_overlay(path, pyramid=session.pyramid, panel_size=panel_size)

    def _evidence(self, session: SceneSession, focus: FocusResult) -> Evidence:
        pyramid = session.pyramid
        scene = session.scene
        finest = focus.finest_level
        tiles: list[TileEvidence] = []
        for level in focus.levels:
            is_last = level is focus.levels[-1] and finest is not None
            for choice in level.chosen:
                if is_last and choice.kept_tokens == 0:
                    continue
                window = pyramid.image_window(choice.tile)
                tiles.append(
                    TileEvidence(
                        level=choice.tile.level,
                        factor=level.factor,
                        row=choice.tile.row,
                        col=choice.tile.col,
                        window=window,
                        score=choice.score,
                        kept_tokens=choice.kept_tokens,
                        geometry=pyramid.geometry(window),
                        finest=is_last,
                    )
                )
        crs = scene.crs.to_string() if scene.crs else None
        return Evidence(tiles=tiles, crs=crs, scene_bounds=scene.bounds if crs else None)

    def close(self) -> None:
        self.sessions.clear()

    def __enter__(self) -> Pipeline:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def ask(
    scene: str | os.PathLike[str],
    question: str,
    *,
    model: str | None = None,
    focus: FocusConfig | None = None,
    device: str = "auto",
) -> Answer:
    """One-shot shortcut: load ``model`` and answer one question about ``scene``."""
    with Pipeline.from_pretrained(model, focus=focus, device=device) as pipeline:
        return pipeline.ask(scene, question)
