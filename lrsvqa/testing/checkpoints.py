"""Random-weight models built from the real non-weight files of released checkpoints.

``build_from_files(src, out)`` reads a folder as laid out in ``shared/data/checkpoint-files``
(``config.shrunk.json``: the released ``config.json`` with layer counts and widths shrunk,
plus the released tokenizer, chat template, image-processor and generation configs) and
writes a loadable model folder with random weights of that shrunk size. Everything but the
weights is the release's own, so the tests see its real token ids, chat template and
generation settings (e.g. Qwen's ``repetition_penalty``).

A release whose tokenizer files are missing (LLaMA-2's, for their licence) gets a stand-in
``tokenizer.json``: a byte-level BPE trained here, padded to the release's vocabulary size
with its special tokens at their released ids; ``tokenizer_config.json`` stays the real one.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

from lrsvqa.errors import ConfigError

# The files a release folder may carry besides weights; copied verbatim.
_COPY = (
    "added_tokens.json",
    "chat_template.jinja",
    "chat_template.json",
    "generation_config.json",
    "merges.txt",
    "preprocessor_config.json",
    "processor_config.json",
    "special_tokens_map.json",
    "tokenizer.json",
    "tokenizer.model",
    "tokenizer_config.json",
    "vocab.json",
)
BUILD_VERSION = "1"


def _stand_in_tokenizer(src: Path, out: Path, vocab_size: int) -> None:
    """A ``tokenizer.json`` with the release's special tokens at their released ids."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    from lrsvqa.models.tiny import _CORPUS

    cfg = json.loads((src / "tokenizer_config.json").read_text())
    added = {int(k): v["content"] for k, v in cfg.get("added_tokens_decoder", {}).items()}
    base = sorted(i for i in added if i < vocab_size)
    low = [added[i] for i in base if i < 1000]  # <unk>, <s>, </s>: the first ids
    if [added[i] for i in range(len(low))] != low:
        raise ConfigError(f"{src}: special tokens below id 1000 must be contiguous from 0")
    trainer = trainers.BpeTrainer(
        vocab_size=600,
        special_tokens=low,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok = Tokenizer(models.BPE(unk_token=added.get(0)))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator(_CORPUS * 4, trainer)
    data = json.loads(tok.to_str())
    vocab: dict[str, int] = data["model"]["vocab"]
    high = sorted(i for i in added if i >= len(low))
    filler_end = high[0] if high else vocab_size
    n = len(vocab)
    while n < filler_end:  # unused ids up to the release's first added token
        vocab[f"<unused_{n}>"] = n
        n += 1
    tok = Tokenizer.from_str(json.dumps(data))
    from tokenizers import AddedToken

    for i in high:
        got = tok.add_special_tokens([AddedToken(added[i], special=True, normalized=False)])
        if got != 1 or tok.token_to_id(added[i]) != i:
            raise ConfigError(f"{src}: cannot place {added[i]!r} at id {i}")
    if cfg.get("add_bos_token") and cfg.get("bos_token"):
        from tokenizers import processors

        bos = str(cfg["bos_token"])
        tok.post_processor = processors.TemplateProcessing(
            single=f"{bos} $A", pair=f"{bos} $A {bos} $B", special_tokens=[(bos, vocab[bos])]
        )
    tok.save(str(out / "tokenizer.json"))


def build_from_files(
    src: str | os.PathLike[str], out: str | os.PathLike[str], seed: int = 0
) -> Path:
    """Write a random-weight model of ``src``'s shrunk config plus all its real files."""
    import torch
    import transformers

    from lrsvqa.models.tiny import _enlarge_init

    src, dst = Path(src), Path(out)
    cfg_path = src / "config.shrunk.json"
    if not cfg_path.is_file():
        raise ConfigError(f"{src} has no config.shrunk.json; it is not a checkpoint-files folder")
    config_dict = json.loads(cfg_path.read_text())
    arch = (config_dict.get("architectures") or [None])[0]
    model_cls = getattr(transformers, str(arch), None)
    if model_cls is None:
        raise ConfigError(f"{cfg_path}: unknown architecture {arch!r}")
    dst.mkdir(parents=True, exist_ok=True)
    for name in _COPY:
        if (src / name).is_file():
            shutil.copyfile(src / name, dst / name)
    (dst / "config.json").write_text(json.dumps(config_dict, indent=2) + "\n")
    config = transformers.AutoConfig.from_pretrained(dst)
    torch.manual_seed(seed)
    model = model_cls(config)
    _enlarge_init(model, seed)
    model.save_pretrained(dst, safe_serialization=True)
    # save_pretrained rewrites these from the model: put the release's own back.
    for name in ("config.json", "generation_config.json"):
        if name == "config.json":
            (dst / name).write_text(json.dumps(config_dict, indent=2) + "\n")
        elif (src / name).is_file():
            shutil.copyfile(src / name, dst / name)
    has_tok = any((src / n).is_file() for n in ("tokenizer.json", "vocab.json", "tokenizer.model"))
    if not has_tok:
        _stand_in_tokenizer(src, dst, int(config.get_text_config().vocab_size))
    (dst / "lrsvqa_checkpoint_files.json").write_text(
        json.dumps({"source": str(src), "seed": seed, "version": BUILD_VERSION}) + "\n"
    )
    return dst


def plant_close_pair(
    adapter: Any, prompts: list[Any], winner: int, runner_up: int, *, ratio: float = 0.97
) -> None:
    """Make ``winner`` the greedy first answer to every prompt, ``runner_up`` a close second.

    ``prompts`` are stock processor batches. Both output rows point along the mean direction
    of the prompts' last hidden states, scaled so the pair outranks every other token and
    ``runner_up``'s logit is ``ratio`` times ``winner``'s: a repetition penalty of more than
    ``1 / ratio`` on ``winner`` (when it is in the prompt) swaps the answer.
    """
    import torch

    head = adapter.model.get_output_embeddings()
    seen: list[torch.Tensor] = []
    hook = head.register_forward_hook(lambda m, args, out: seen.append(args[0][0, -1].detach()))
    try:
        with torch.no_grad():
            for batch in prompts:
                adapter.model(**batch)
    finally:
        hook.remove()
    states = torch.stack(seen).float()
    direction = torch.nn.functional.normalize(states, dim=-1).mean(0)
    direction = direction / direction.norm()
    proj = states @ direction
    if float(proj.min()) <= 0:
        raise ConfigError("the prompts' last hidden states share no direction; use fewer")
    with torch.no_grad():
        natural = (states @ head.weight.float().T).abs().max()
        scale = 4.0 * float(natural) / float(proj.min())
        row = (scale * direction).to(head.weight.dtype)
        head.weight[winner] = row
        head.weight[runner_up] = ratio * row
