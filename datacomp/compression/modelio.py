"""Safe model files: a safetensors state dict plus a JSON architecture spec (no pickled classes).

A saved model is two files side by side::

    NAME.safetensors   tensors (quantized tensors decomposed into int8 values + scales + zero points)
    NAME.json          {"format": "datacomp-model", "version": 1,
                        "arch": {"name": "convnet-3-in", "in_channels": 3, "num_classes": 10,
                                 "image_size": [32, 32], "kwargs": {}},      # = model.spec
                        "module_attrs": {"features.0": {"in_channels": 3, "out_channels": 64, "groups": 1}, ...},
                        "param_shapes": {"features.0.weight": [64, 3, 3, 3], ...},
                        "model_attrs": {"feature_dim": 1024},
                        "quantization": null | {"scheme": "int8-static", "api": "fx", "backend": "x86", ...},
                        "binarization": null | {"scheme": "xnor", "mode": "weights", "layers": [...], ...},
                        "dataset": {...} | null, "metadata": {...}}

Loading rebuilds the unpruned architecture with the registered constructor (``datacomp.models.model_from_spec`` by
default), shrinks every layer to the recorded shapes (what structured pruning changed), re-applies int8 conversion
when the file holds a quantized model, re-attaches the activation binarization of a binarized one, and loads the
tensors with ``strict=True``.

Binarized weights (:mod:`~datacomp.compression.binarize`) are stored as their signs packed 8 per byte plus one fp32
scale per output channel (state entry kind ``binary``); files without a ``binarization`` entry (all files written
before it existed) load as before.
"""

from __future__ import annotations

import json
import os
import warnings
from collections import OrderedDict
from pathlib import Path
from typing import Any, Callable

import torch
from safetensors import SafetensorError
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save
from torch import nn

from datacomp.compression.binarize import apply_binarization, pack_binary, unpack_binary
from datacomp.compression.quantize import QuantizationUnavailable, rebuild_quantized
from datacomp.compression.snapshot import apply_snapshot, architecture_snapshot
from datacomp.errors import FormatError, MissingInputError
from datacomp.io import atomic_write, read_json, sha256_arrays, write_json
from datacomp.models import model_from_spec

__all__ = [
    "MODEL_FORMAT",
    "save_model",
    "load_model",
    "read_spec",
    "architecture_snapshot",
    "resolve_model_path",
    "model_digest",
]

MODEL_FORMAT = "datacomp-model"
MODEL_FORMAT_VERSION = 1
_STATE_KEY = "datacomp_state"
_VERSIONS_KEY = "datacomp_state_versions"

# --------------------------------------------------------------------------------------------------------------------
# State dict <-> flat tensors (quantized tensors, packed-param tuples and dtypes have no safetensors form)


def _flatten_state(state: dict,
                   binary: frozenset[str] = frozenset()) -> tuple[dict[str, torch.Tensor], dict[str, dict]]:
    """Flat tensors and their layout; the keys in ``binary`` (binarized weights) are stored packed."""
    tensors: dict[str, torch.Tensor] = {}
    layout: dict[str, dict] = {}

    def put(key: str, value: Any) -> dict:
        if key in binary:
            tensors[f"{key}::bits"], tensors[f"{key}::alpha"] = pack_binary(value)
            return {"kind": "binary", "shape": list(value.shape), "dtype": str(value.dtype).removeprefix("torch.")}
        if value is None:
            return {"kind": "none"}
        if isinstance(value, torch.dtype):
            return {"kind": "dtype", "value": str(value).removeprefix("torch.")}
        if isinstance(value, (tuple, list)):
            return {"kind": "tuple", "items": [put(f"{key}::{i}", v) for i, v in enumerate(value)]}
        if not torch.is_tensor(value):
            raise TypeError(f"cannot save state entry '{key}' of type {type(value).__name__}")
        value = value.detach().cpu()
        if value.is_quantized:
            tensors[f"{key}::int"] = value.int_repr().contiguous()
            entry = {"kind": "qtensor", "dtype": str(value.dtype).removeprefix("torch.")}
            if value.qscheme() in (torch.per_tensor_affine, torch.per_tensor_symmetric):
                entry.update(scheme="per_tensor", scale=float(value.q_scale()), zero_point=int(value.q_zero_point()))
            else:
                tensors[f"{key}::scales"] = value.q_per_channel_scales().contiguous()
                tensors[f"{key}::zero_points"] = value.q_per_channel_zero_points().contiguous()
                entry.update(scheme="per_channel", axis=int(value.q_per_channel_axis()))
            return entry
        tensors[key] = value.contiguous().clone()
        return {"kind": "tensor"}

    for key, value in state.items():
        layout[key] = put(key, value)
    return tensors, layout


def _unflatten_state(tensors: dict[str, torch.Tensor], layout: dict[str, dict]) -> dict:
    def get(key: str, entry: dict) -> Any:
        kind = entry["kind"]
        if kind == "none":
            return None
        if kind == "dtype":
            return getattr(torch, entry["value"])
        if kind == "tuple":
            return tuple(get(f"{key}::{i}", e) for i, e in enumerate(entry["items"]))
        if kind == "tensor":
            return tensors[key]
        if kind == "binary":
            return unpack_binary(tensors[f"{key}::bits"], tensors[f"{key}::alpha"], entry["shape"],
                                 getattr(torch, entry["dtype"]))
        if kind == "qtensor":
            ints = tensors[f"{key}::int"]
            if entry["scheme"] == "per_tensor":
                return torch._make_per_tensor_quantized_tensor(ints, entry["scale"], entry["zero_point"])
            return torch._make_per_channel_quantized_tensor(
                ints, tensors[f"{key}::scales"], tensors[f"{key}::zero_points"], entry["axis"]
            )
        raise FormatError(f"unknown state entry kind '{kind}' for '{key}'")

    with warnings.catch_warnings():  # quantized-tensor constructors are deprecated along with torch.ao (see quantize)
        warnings.simplefilter("ignore")
        return {key: get(key, entry) for key, entry in layout.items()}


# --------------------------------------------------------------------------------------------------------------------
# Save / load


def resolve_model_path(path: str | os.PathLike) -> tuple[Path, Path]:
    """``(weights.safetensors, spec.json)`` for a model given as either file or as a directory holding ``model.*``."""
    path = Path(path)
    if path.is_dir():
        path = path / "model.safetensors"
    elif not path.suffix and not path.exists():
        raise MissingInputError(
            f"model '{path}' not found: expected a run folder from `datacomp train` (holding model.safetensors "
            f"and model.json), or a .safetensors / .json model file"
        )
    if path.suffix == ".json":
        weights, spec = path.with_suffix(".safetensors"), path
    elif path.suffix == ".safetensors":
        weights, spec = path, path.with_suffix(".json")
    else:
        raise FormatError(f"model path must be a folder, a .safetensors or a .json file, got '{path}'")
    return weights, spec


def save_model(
    model: nn.Module,
    path: str | os.PathLike,
    arch: dict | None = None,
    *,
    dataset: dict | None = None,
    metadata: dict | None = None,
) -> Path:
    """Save ``model`` safely as ``path`` (``.safetensors``) plus its spec (same stem, ``.json``).

    Args:
        model: A float model (pruned or not), an int8 model from :func:`datacomp.compression.quantize.quantize_int8`
            or a frozen binarized model (:mod:`datacomp.compression.binarize`, ``model.datacomp_binary`` set).
        path: Target ``.safetensors`` file (or a directory: ``DIR/model.safetensors``).
        arch: The model's constructor spec (``model.spec`` from ``datacomp.models.create_model``: ``name``,
            ``in_channels``, ``num_classes``, ``image_size``, ``kwargs``); defaults to ``model.spec``.
        dataset: Optional dataset summary (``ImageDataset.info()``), including ``mean``/``std``.
        metadata: Optional JSON-safe extras (config, seed, versions, cost ...).

    Returns:
        The path of the weights file.
    """
    quant = getattr(model, "datacomp_quant", None)
    if arch is None:
        arch = quant["arch"] if quant else getattr(model, "spec", None)
    _check_arch(arch)
    weights_path, spec_path = resolve_model_path(path)
    snapshot = quant["fp32_snapshot"] if quant else architecture_snapshot(model)
    binary = getattr(model, "datacomp_binary", None)
    state = model.state_dict()
    binary_keys = frozenset(f"{name}.weight" for name in binary["layers"]) if binary else frozenset()
    if not binary_keys <= set(state):
        raise ValueError("a binarized model is saved after freeze_binarized() (its weights still train through a "
                         "parametrization)")
    tensors, layout = _flatten_state(state, binary_keys)
    # Per-module state-dict versions: quantized modules pick their loading code path from them.
    versions = {k: dict(v) for k, v in getattr(state, "_metadata", {}).items()}
    spec = {
        "format": MODEL_FORMAT,
        "version": MODEL_FORMAT_VERSION,
        "arch": _jsonable_arch(arch),
        **snapshot,
        "quantization": {k: v for k, v in quant.items() if k not in ("fp32_snapshot", "arch")} if quant else None,
        "binarization": dict(binary) if binary else None,
        "dataset": dataset,
        "metadata": metadata or {},
    }
    header = {_STATE_KEY: json.dumps(layout), _VERSIONS_KEY: json.dumps(versions)}
    atomic_write(weights_path, st_save(tensors, metadata=header))
    write_json(spec_path, spec)
    return weights_path


def model_digest(model: nn.Module) -> str:
    """SHA-256 of a model's state (every tensor, int8 values, scales and zero points included, in key order).

    Two models with the same digest hold bit-identical weights; file time stamps and metadata are not hashed.
    """
    tensors, layout = _flatten_state(model.state_dict())
    return sha256_arrays([torch.tensor(list(json.dumps(layout).encode()), dtype=torch.uint8),
                          *(tensors[k] for k in sorted(tensors))])


def read_spec(path: str | os.PathLike) -> dict:
    """Read and validate a model spec (``.json``, ``.safetensors`` or directory)."""
    _, spec_path = resolve_model_path(path)
    if not spec_path.is_file():
        raise MissingInputError(f"model spec '{spec_path}' not found (expected next to the .safetensors weights)")
    spec = read_json(spec_path, what="model spec")
    if not isinstance(spec, dict) or spec.get("format") != MODEL_FORMAT:
        raise FormatError(f"'{spec_path}' is not a datacomp model spec (format="
                          f"{spec.get('format') if isinstance(spec, dict) else None!r})")
    if spec.get("version") != MODEL_FORMAT_VERSION:
        raise FormatError(f"'{spec_path}': unsupported model spec version {spec.get('version')!r} (this datacomp "
                          f"reads version {MODEL_FORMAT_VERSION})")
    try:
        _check_arch(spec.get("arch"))
    except TypeError as err:
        raise FormatError(f"'{spec_path}': {err}") from None
    return spec


def _check_arch(arch: Any) -> None:
    keys = ("name", "in_channels", "num_classes", "image_size")
    if not isinstance(arch, dict) or any(k not in arch for k in keys):
        raise TypeError(
            f"arch must be a model spec dict with {list(keys)} (+ optional 'kwargs'), as in model.spec from "
            f"datacomp.models.create_model; got {arch!r}"
        )


def _jsonable_arch(arch: dict) -> dict:
    out = {k: arch[k] for k in ("name", "in_channels", "num_classes")}
    out["image_size"] = [int(v) for v in arch["image_size"]]
    out["kwargs"] = dict(arch.get("kwargs") or {})
    return out


def load_model(
    path: str | os.PathLike, builder: Callable[..., nn.Module] | None = None
) -> tuple[nn.Module, dict]:
    """Rebuild a model saved by :func:`save_model`.

    Args:
        path: Directory, ``.safetensors`` or ``.json`` of a saved model.
        builder: ``builder(arch_spec) -> nn.Module``; defaults to ``datacomp.models.model_from_spec``.

    Returns:
        ``(model in eval mode, spec dict)``.

    Raises:
        MissingInputError: The files are not there.
        FormatError: The files are malformed, or their tensors do not fit the recorded architecture.
    """
    weights_path, _ = resolve_model_path(path)
    spec = read_spec(path)
    if not weights_path.is_file():
        raise MissingInputError(f"model weights '{weights_path}' not found")
    raw = weights_path.read_bytes()
    try:
        tensors = st_load(raw)
        header = _safetensors_metadata(raw)
        layout = json.loads(header.get(_STATE_KEY, "null"))
        versions = json.loads(header.get(_VERSIONS_KEY, "{}"))
    except (SafetensorError, ValueError, UnicodeDecodeError) as err:
        raise FormatError(f"'{weights_path}' is not a valid safetensors file (truncated or corrupt?): {err}") from None
    if layout is None:  # a plain safetensors state dict
        layout = {k: {"kind": "tensor"} for k in tensors}
    try:
        state = OrderedDict(_unflatten_state(tensors, layout))
        state._metadata = OrderedDict(versions)  # type: ignore[attr-defined]
        model = (builder or model_from_spec)(dict(spec["arch"]))
        apply_snapshot(model, spec)
        model.eval()
        if spec.get("binarization"):
            apply_binarization(model, spec["binarization"])
        if spec.get("quantization"):
            model = rebuild_quantized(model, spec["quantization"])
        model.load_state_dict(state, strict=True)
    except (KeyError, ValueError, RuntimeError) as err:
        if isinstance(err, (FormatError, QuantizationUnavailable)):
            raise
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise FormatError(f"model '{path}': its tensors do not fit the recorded architecture "
                          f"{spec['arch'].get('name')!r} ({first}); re-save it with datacomp") from None
    if spec.get("quantization"):
        model.datacomp_quant = {
            **spec["quantization"],
            "arch": spec["arch"],
            "fp32_snapshot": {k: spec[k] for k in ("module_attrs", "param_shapes", "model_attrs")},
        }
    return model.eval(), spec


def _safetensors_metadata(raw: bytes) -> dict:
    header_len = int.from_bytes(raw[:8], "little")
    header = json.loads(raw[8 : 8 + header_len])
    return header.get("__metadata__", {}) or {}
