"""Forward passes of a causal LM that stop at one decoder layer: its residual stream, or its attention weights.

Layers are numbered like the model's ``layers`` list (0-based; ``-1`` is the last, as in Python). The *residual
stream at layer i* is the output of decoder layer ``i`` (the hook point ``layers.i`` of EleutherAI's ``sparsify``):
for ``i < L - 1`` it equals ``output_hidden_states[i + 1]``; for the last layer transformers reports the output after
the final norm instead, so there ``final_norm(stream)`` equals ``output_hidden_states[-1]``.

The forward stops at the chosen layer: a hook on that layer records its output and ends the pass, so no layer above
it (and no LM head) runs. Batches are right-padded, so positions of real tokens are the same as in an unpadded pass.
Precision: bf16 autocast where the device multiplies bf16 natively (:func:`datacomp.runtime.native_bf16`) and the
weights are float32; ``bf16=False`` forces float32.
"""

from __future__ import annotations

import contextlib
from typing import Any, Iterator, Sequence

import torch

from datacomp.errors import ConfigError, DataError, FormatError, is_int
from datacomp.runtime import native_bf16

__all__ = ["decoder_layers", "final_norm", "layer_index", "precision", "encode_texts", "pad_batch", "content_mask",
           "hidden_at_layer", "layer_attention", "uses_bf16"]


class _StopForward(Exception):
    """Raised by the hook on the chosen layer to end the forward pass there."""


def _base(model: Any) -> Any:
    get = getattr(model, "get_decoder", None)
    base = get() if callable(get) else None
    return base if base is not None else getattr(model, "model", model)


def decoder_layers(model: Any) -> torch.nn.ModuleList:
    """The model's list of decoder layers (``model.layers``, ``h`` or ``blocks`` of its base model)."""
    base = _base(model)
    for attr in ("layers", "h", "blocks"):
        layers = getattr(base, attr, None)
        if isinstance(layers, torch.nn.ModuleList):
            return layers
    raise FormatError(f"{type(model).__name__}: cannot find its decoder layers (no layers / h / blocks list)")


def final_norm(model: Any) -> torch.nn.Module | None:
    """The norm applied after the last decoder layer (``norm`` / ``ln_f`` / ``final_layernorm``), if any."""
    base = _base(model)
    for attr in ("norm", "ln_f", "final_layernorm"):
        mod = getattr(base, attr, None)
        if isinstance(mod, torch.nn.Module):
            return mod
    return None


def layer_index(model: Any, layer: Any, option: str = "layer (--lm-layer)") -> int:
    """``layer`` as a non-negative index into the decoder layers; out of range raises :class:`ConfigError`."""
    n = len(decoder_layers(model))
    if not is_int(layer) or not -n <= layer < n:
        raise ConfigError(f"{option} must be an integer in {-n}..{n - 1} (the model has {n} decoder layers, "
                          f"0 = first, -1 = last), got {layer!r}")
    return layer % n


def uses_bf16(model: Any, device: torch.device, bf16: bool | None) -> bool:
    """Whether forwards run under bf16 autocast: float32 weights and ``bf16`` (``None``: where native)."""
    weights_fp32 = next(model.parameters()).dtype == torch.float32
    return weights_fp32 and (native_bf16(device) if bf16 is None else bool(bf16))


@contextlib.contextmanager
def precision(model: Any, device: torch.device, bf16: bool | None = None) -> Iterator[bool]:
    """``torch.inference_mode`` plus bf16 autocast when ``bf16`` (``None``: where native); yields whether bf16."""
    use = uses_bf16(model, device, bf16)
    auto = torch.autocast(device.type, dtype=torch.bfloat16) if use else contextlib.nullcontext()
    with torch.inference_mode(), auto:
        yield use


def encode_texts(tokenizer: Any, texts: Sequence[str], max_length: int) -> list[list[int]]:
    """Token ids of each text (the tokenizer's special tokens added, e.g. BOS), truncated to ``max_length``."""
    if not is_int(max_length) or max_length < 1:
        raise ConfigError(f"max_length must be a positive number of tokens, got {max_length!r}")
    out = tokenizer(list(texts), add_special_tokens=True, truncation=True, max_length=max_length)
    return [list(ids) for ids in out["input_ids"]]


def pad_batch(seqs: Sequence[Sequence[int]], pad_id: int | None, device: torch.device | str = "cpu"
              ) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-padded ``(input_ids, attention_mask)`` of shape [B, max length]."""
    if not seqs or not all(len(s) for s in seqs):
        raise DataError("pad_batch needs at least one non-empty token sequence")
    width = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), width), 0 if pad_id is None else int(pad_id), dtype=torch.long)
    mask = torch.zeros((len(seqs), width), dtype=torch.long)
    for row, s in enumerate(seqs):
        ids[row, :len(s)] = torch.as_tensor(list(s), dtype=torch.long)
        mask[row, :len(s)] = 1
    return ids.to(device), mask.to(device)


def content_mask(input_ids: torch.Tensor, attention_mask: torch.Tensor, special_ids: Sequence[int]) -> torch.Tensor:
    """True at real tokens that are not special (BOS, EOS, padding, chat-template markers)."""
    keep = attention_mask.bool()
    if len(special_ids):
        keep &= ~torch.isin(input_ids, torch.as_tensor(list(special_ids), device=input_ids.device))
    return keep


def _run_until(model: Any, module: torch.nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor,
               **kwargs: Any) -> Any:
    """Run ``model`` on the batch and return ``module``'s output, stopping the pass there."""
    captured: list[Any] = []

    def hook(_mod: Any, _args: Any, output: Any) -> None:
        captured.append(output)
        raise _StopForward

    handle = module.register_forward_hook(hook)
    try:
        _base(model)(input_ids=input_ids, attention_mask=attention_mask, use_cache=False, **kwargs)
    except _StopForward:
        pass
    finally:
        handle.remove()
    if not captured:
        raise FormatError(f"{type(model).__name__}: the forward pass never reached the requested layer")
    return captured[0]


def hidden_at_layer(model: Any, input_ids: torch.Tensor, attention_mask: torch.Tensor, layer: int,
                    bf16: bool | None = None) -> torch.Tensor:
    """Residual stream [B, T, d] (float32) at the output of decoder layer ``layer``; no layer above it runs."""
    idx = layer_index(model, layer)
    with precision(model, input_ids.device, bf16):
        out = _run_until(model, decoder_layers(model)[idx], input_ids, attention_mask)
    hidden = out[0] if isinstance(out, tuple) else out
    return hidden.float()


def layer_attention(model: Any, input_ids: torch.Tensor, attention_mask: torch.Tensor, layer: int,
                    bf16: bool | None = False) -> torch.Tensor:
    """Attention probabilities [B, T_query, T_key] of decoder layer ``layer``, averaged over heads (float32).

    The model must use eager attention (``load_lm(..., attn_implementation="eager")``): SDPA never materialises the
    weights. Padding is masked both ways: padded keys get weight 0 and rows of padded queries are 0, so the row of
    every real query sums to 1 over its real keys. ``bf16`` defaults to float32 here (exact weights).
    """
    impl = getattr(model.config, "_attn_implementation", None)
    if impl != "eager":
        raise ConfigError(f"layer_attention needs eager attention (the model uses {impl!r}); load it with "
                          "load_lm(..., attn_implementation='eager')")
    idx = layer_index(model, layer)
    block = decoder_layers(model)[idx]
    attn = getattr(block, "self_attn", None) or getattr(block, "attn", None)
    if attn is None:
        raise FormatError(f"{type(block).__name__}: no self_attn / attn module to read attention weights from")
    with precision(model, input_ids.device, bf16):
        out = _run_until(model, attn, input_ids, attention_mask, output_attentions=True)
    weights = out[1] if isinstance(out, tuple) and len(out) > 1 else None
    if weights is None:
        raise FormatError(f"{type(attn).__name__} returned no attention weights (eager attention required)")
    mean = weights.float().mean(dim=1)
    mask = attention_mask.to(mean.dtype)
    return mean * mask[:, None, :] * mask[:, :, None]
