"""The LRS-VQA release's LLM input format, for ``--preset lrsvqa-release``.

What the release (VisionXLab/LRS-VQA, ``LRS-VQA-Code/llava``) feeds its LLM, where our
default differs:

- Prompts (``eval/model_rsvqa.py`` → ``conversation.py``): ``vicuna_v1`` for a Vicuna/LLaMA
  LLM (``SeparatorStyle.TWO``: system, ``" "``, ``"USER: "`` + message, ``" "``,
  ``"ASSISTANT:"``) and ``qwen_1_5`` for a Qwen2 LLM (``SeparatorStyle.CHATML`` with the
  ``conv_qwen`` system prompt); the message is ``"<image>\\n" + question + "\\n"``.
  ``tokenizer_image_token`` (``mm_utils.py``) tokenizes the text around ``<image>`` chunk
  by chunk (a BOS only at the start).
- The ``:`` token's embedding between the global image's tokens and the local tiles'
  (``prepare_inputs_labels_for_multimodal`` in ``model/llava_arch.py``: ``ret_token``).
- Local tiles' 24 x 24 CLIP tokens pooled 2 x 2 (bilinear to 12 x 12, which for a factor
  of two is the mean of each 2 x 2 cell: ``get_2dPool_bilinear`` in
  ``multimodal_projector/builder.py``); the global image is not pooled.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from lrsvqa.errors import ModelError

if TYPE_CHECKING:
    import torch

    from lrsvqa.models.base import VisionTokens

VICUNA_V1_SYSTEM = (
    "A chat between a curious user and an artificial intelligence assistant. "
    "The assistant gives helpful, detailed, and polite answers to the user's questions."
)
QWEN_1_5_SYSTEM = "<|im_start|>system\nYou are a helpful assistant."
PROMPT_FORMATS = ("vicuna_v1", "qwen_1_5")
IMAGE = "<image>"


def release_message(question: str) -> str:
    """The user message of ``eval/model_rsvqa.py``: ``<image>\\n`` + question + ``\\n``."""
    return IMAGE + "\n" + question + "\n"


def release_prompt(fmt: str, question: str, system: str | None = None) -> str:
    """The whole prompt text of conversation ``fmt`` for one question (one user turn, then
    the assistant's turn opened)."""
    message = release_message(question)
    if fmt == "vicuna_v1":  # SeparatorStyle.TWO, sep " ", roles USER / ASSISTANT
        return (system or VICUNA_V1_SYSTEM) + " " + "USER: " + message + " " + "ASSISTANT:"
    if fmt == "qwen_1_5":  # SeparatorStyle.CHATML, sep <|im_end|>
        head = QWEN_1_5_SYSTEM if system is None else "<|im_start|>system\n" + system
        return (
            head
            + "<|im_end|>\n"
            + "<|im_start|>user\n"
            + message
            + "<|im_end|>\n"
            + "<|im_start|>assistant\n"
        )
    raise ModelError(f"unknown release prompt format {fmt!r}; one of {', '.join(PROMPT_FORMATS)}")


def prompt_format_for(text_model_type: str) -> str:
    """The conversation the release's eval script uses for an LLM (``model_rsvqa.py``:
    ``qwen_1_5`` for Qwen models, else the ``--conv-mode`` of ``eval_lrs_vqa.sh``)."""
    return "qwen_1_5" if text_model_type.startswith("qwen") else "vicuna_v1"


def release_token_ids(tokenizer: Any, prompt: str, image_token_id: int) -> list[int]:
    """``tokenizer_image_token``: each chunk between ``<image>`` marks tokenized on its own,
    a leading BOS kept once, the chunks joined by one image id each."""
    chunks = [tokenizer(chunk)["input_ids"] for chunk in prompt.split(IMAGE)]
    bos = getattr(tokenizer, "bos_token_id", None)
    out: list[int] = []
    offset = 0
    if chunks and chunks[0] and bos is not None and chunks[0][0] == bos:
        offset = 1
        out.append(chunks[0][0])
    for n, chunk in enumerate(chunks):
        if n:
            out.append(image_token_id)
        out.extend(chunk[offset:])
    return out


def separator_token_id(tokenizer: Any) -> int:
    """The id of the ``:`` token the release puts between global and local tokens."""
    ids = tokenizer.convert_tokens_to_ids([":"])
    tid = ids[0] if ids else None
    if tid is None or tid == getattr(tokenizer, "unk_token_id", None):
        raise ModelError("the tokenizer has no ':' token for the release's separator")
    return int(tid)


def pool_tokens(tokens: VisionTokens, stride: int) -> VisionTokens:
    """A tile's token grid pooled ``stride`` x ``stride`` as ``get_2dPool_bilinear`` does:
    bilinear to ``ceil(rows / stride)`` x ``ceil(cols / stride)`` (for an even grid and
    stride 2, exactly the mean of each 2 x 2 cell; an odd grid such as SigLIP's 27 x 27
    goes to 14 x 14)."""
    import math

    import torch.nn.functional as F

    from lrsvqa.models.base import VisionTokens

    if stride == 1:
        return tokens
    rows, cols = tokens.grid
    shape = (math.ceil(rows / stride), math.ceil(cols / stride))
    x = tokens.embeds.reshape(rows, cols, -1).permute(2, 0, 1).unsqueeze(0)
    pooled = F.interpolate(x.float(), size=shape, mode="bilinear").to(tokens.embeds.dtype)
    out = pooled.squeeze(0).permute(1, 2, 0).reshape(-1, tokens.embeds.shape[-1])
    return VisionTokens(out.contiguous(), shape)


def newline_stand_in(model: Any, tokenizer: Any) -> torch.Tensor:
    """LLaVA-1.5 has no ``image_newline`` parameter: the released checkpoints (trained with
    ``spatial_unpad``) learned one, and ``lrsvqa convert-checkpoint`` stores it in the
    converted folder (``image_newline.safetensors``). Without it, the embedding of the
    tokenizer's newline token stands in."""
    import torch

    path = getattr(model, "name_or_path", "") or ""
    from pathlib import Path

    file = Path(path) / "image_newline.safetensors"
    if path and file.is_file():
        from safetensors.torch import load_file

        return load_file(str(file))["image_newline"]
    ids = tokenizer("\n", add_special_tokens=False)["input_ids"]
    if not ids:
        raise ModelError("the tokenizer has no newline token to stand in for image_newline")
    with torch.no_grad():
        return model.get_input_embeddings()(torch.tensor([ids[-1]], device=model.device))[0]
