"""Request bodies of the JSON API (validated: unknown fields and bad values are 422)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from lrsvqa.pipeline import MAX_QUESTION_CHARS
from lrsvqa.serve.scenes import MAX_SCENE_ID


class AskOptions(BaseModel):
    """Per-question knobs; anything left out takes the server's default (its CLI options)."""

    model_config = ConfigDict(extra="forbid")

    selector: Literal["rfm", "all", "uniform", "random", "thumbnail"] | None = None
    keep_ratio: float | None = Field(default=None, gt=0.0, le=1.0)
    max_tiles: int | None = Field(default=None, ge=1, le=256)
    budget: int | None = Field(
        default=None, ge=1, le=100_000, description="most vision tokens to the LLM"
    )
    max_depth: int | None = Field(default=None, ge=0, le=16)
    seed: int | None = Field(default=None, ge=0, le=2**31 - 1)
    llm_prune: Literal["none", "pdrop", "fastv"] | None = None
    pdrop_ratio: float | None = Field(default=None, gt=0.0, le=1.0)
    pdrop_layers: list[int] | None = Field(default=None, max_length=64)
    fastv_k: int | None = Field(default=None, ge=1, le=1024)
    fastv_ratio: float | None = Field(default=None, ge=0.0, lt=1.0)
    fastv_query: Literal["all", "last"] | None = None
    max_new_tokens: int | None = Field(default=None, ge=1, le=4096)
    bands: list[int] | None = Field(default=None, min_length=1, max_length=3)


class AskRequest(BaseModel):
    """A question about one scene (an id from GET /api/scenes, or an allowed URL)."""

    model_config = ConfigDict(extra="forbid")

    scene: str = Field(..., min_length=1, max_length=MAX_SCENE_ID)
    question: str = Field(..., min_length=1, max_length=MAX_QUESTION_CHARS)
    options: AskOptions = Field(default_factory=AskOptions)


class JobCreated(BaseModel):
    job: str
    seq: int
    position: int
    status_url: str
    events_url: str
    result_url: str
