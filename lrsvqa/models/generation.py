"""The generation settings of the embeds path: the checkpoint's own, greedy forced.

Stock ``model.generate(**processor(...))`` applies the checkpoint's ``generation_config``
(Qwen2.5-VL's carries ``repetition_penalty`` 1.05, ``do_sample`` true, ``temperature`` 1e-6)
to a prompt whose ids it knows. lrsvqa's adapters hand ``generate`` the prompt's embeddings
*and* its ids, so each logits processor sees what stock does:

- prompt-reading processors (``repetition_penalty``, ``no_repeat_ngram_size``,
  ``bad_words_ids``, ``sequence_bias``, ``exponential_decay_length_penalty``, the forced
  bos/eos rules) and the lengths (``min_new_tokens``, ``min_length``, ``max_length``) count
  the prompt exactly as stock, because the ids are there;
- ``suppress_tokens``, ``begin_suppress_tokens`` and eos lists act on new tokens only,
  the same on both paths;
- the decoding strategy is fixed: one beam, no sampling, and the sampling- and beam-only knobs
  at their neutral values (greedy ignores them; neutral, transformers has nothing to warn about);
- ``token_healing`` is switched off: it rewrites the prompt's ids but not the embeddings.
"""

from __future__ import annotations

import copy
from typing import Any

# Sampling- and beam-only knobs at their neutral values: ``generate`` refills an unset
# (None) field from the checkpoint's config, so "unset" has to be the neutral value.
NEUTRAL = {
    "temperature": 1.0,
    "top_p": 1.0,
    "top_k": 50,
    "typical_p": 1.0,
    "epsilon_cutoff": 0.0,
    "eta_cutoff": 0.0,
    "early_stopping": False,
    "length_penalty": 1.0,
}
_NOT_RECORDED = {"transformers_version", "_from_model_config", "max_new_tokens", "max_length"}


def forced_greedy(config: Any, max_new_tokens: int, *, do_sample: bool = False) -> Any:
    """A copy of ``config`` (a ``GenerationConfig``) decoding greedily for ``max_new_tokens``."""
    out = copy.deepcopy(config)
    out.max_new_tokens = max_new_tokens
    out.num_beams = 1
    out.num_return_sequences = 1
    out.do_sample = do_sample
    for name, value in NEUTRAL.items():
        if do_sample and name not in {"early_stopping", "length_penalty"}:
            continue
        setattr(out, name, value)
    out.token_healing = False
    return out


def settings_record(config: Any) -> dict[str, Any]:
    """The settings that decide the tokens: forced ones plus what the checkpoint sets."""
    from transformers import GenerationConfig

    default = GenerationConfig()
    checkpoint = {
        k: v
        for k, v in sorted(config.to_dict().items())
        if k not in _NOT_RECORDED
        and not k.startswith("_")
        and k not in NEUTRAL
        and k not in {"do_sample", "num_beams", "num_return_sequences", "token_healing"}
        and v is not None
        and getattr(default, k, None) != v
    }
    return {
        "max_new_tokens": config.max_new_tokens,
        "do_sample": bool(config.do_sample),
        "num_beams": 1,
        "greedy_forced": not config.do_sample,
        "checkpoint": checkpoint,
    }
