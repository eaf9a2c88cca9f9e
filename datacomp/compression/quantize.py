"""Post-training static int8 quantization on CPU, calibrated on a small set.

What the installed torch supports is detected at import (:data:`QUANT_SUPPORT`):

- ``torch.ao.quantization`` FX graph mode (``prepare_fx`` / ``convert_fx``) with the ``x86`` (or ``fbgemm``) engine,
  falling back to ``qnnpack`` on ARM. Deprecated in recent torch but still shipped (torch 2.13/2.14 wheels);
  it is what this module uses.
- PT2E (``prepare_pt2e`` / ``convert_pt2e``) has left core torch for the optional ``torchao`` package
  (``pip install 'datacomp[quant]'``); its presence is reported but it is not used yet.

When no usable flow exists, :func:`quantize_int8` raises :class:`QuantizationUnavailable` with the reason, and the
compression pipeline records the stage as ``unavailable`` instead of failing.

Calibration data (``calibration_images``):
- ``"small"``: the small set itself (selected / distilled / random subset), up to ``size`` images;
- ``"train-random"``: ``size`` random real training images, the field's default (torchvision's reference
  ``train_quantization.py`` calibrates on the first 32 batches x 32 of a *shuffled* training loader = 1,024 images);
- ``"train-first"``: literally the first ``size`` training images in stored order. On class-sorted copies (such as
  the shared CIFAR-10 JPEG copy) these are all one class, so this is a calibration-shift stress case, not a default.
"""

from __future__ import annotations

import copy
import importlib.util
import platform
import warnings
from typing import Any

import torch
from torch import nn

from datacomp.compression.measure import count_macs, count_nonzero_parameters, count_parameters
from datacomp.compression.snapshot import architecture_snapshot
from datacomp.cost import CostLedger
from datacomp.errors import ConfigError, DatacompError

__all__ = [
    "QUANT_SUPPORT",
    "CALIBRATION_SOURCES",
    "QuantizationUnavailable",
    "quantization_support",
    "calibration_images",
    "quantize_int8",
    "rebuild_quantized",
]

CALIBRATION_SOURCES = ("small", "train-random", "train-first")
FIELD_DEFAULT_CALIBRATION_SIZE = 1024


class QuantizationUnavailable(DatacompError, RuntimeError):
    """The installed torch offers no usable int8 post-training quantization flow."""


def quantization_support() -> dict:
    """Detect the int8 PTQ flows available in this environment.

    Returns:
        ``{"available": bool, "api": "fx" | None, "backend": engine | None, "engines": [...],
        "torchao": bool, "reason": str}``.
    """
    engines = list(torch.backends.quantized.supported_engines)
    info: dict[str, Any] = {
        "available": False,
        "api": None,
        "backend": None,
        "engines": engines,
        "torchao": importlib.util.find_spec("torchao") is not None,
        "torch": torch.__version__,
        "reason": "",
    }
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            from torch.ao.quantization import get_default_qconfig_mapping  # noqa: F401
            from torch.ao.quantization.quantize_fx import convert_fx, prepare_fx  # noqa: F401
    except ImportError as err:
        info["reason"] = (
            f"torch {torch.__version__} has no torch.ao.quantization FX flow ({err}); PT2E needs the optional "
            f"torchao package (pip install 'datacomp[quant]'), which datacomp does not drive yet"
        )
        return info
    arm = platform.machine().lower() in ("arm64", "aarch64")
    preferred = ("qnnpack",) if arm else ("x86", "fbgemm")
    backend = next((e for e in preferred if e in engines), None)
    if backend is None:
        info["reason"] = f"no int8 CPU engine among {engines} (need one of {list(preferred)})"
        return info
    info.update(available=True, api="fx", backend=backend, reason="torch.ao.quantization FX graph mode")
    return info


QUANT_SUPPORT: dict = quantization_support()


def calibration_images(
    source: str,
    small_x: torch.Tensor | None,
    dataset: Any = None,
    *,
    size: int = FIELD_DEFAULT_CALIBRATION_SIZE,
    seed: int = 0,
) -> torch.Tensor:
    """Normalised calibration images.

    Args:
        source: ``"small"`` (the small set), ``"train-random"`` (random real training images) or ``"train-first"``
            (the first training images in stored order).
        small_x: The small set's normalised images (for ``"small"``).
        dataset: The :class:`datacomp.data.ImageDataset` (for ``"train-random"``).
        size: Number of images (``"small"`` uses ``min(size, len(small_x))``).
        seed: Seed of the random draw.
    """
    if source not in CALIBRATION_SOURCES:
        raise ConfigError(f"calibration source must be one of {CALIBRATION_SOURCES}, got '{source}'")
    if size < 1:
        raise ConfigError(f"calibration size must be >= 1, got {size}")
    generator = torch.Generator().manual_seed(seed)
    if source == "small":
        if small_x is None or len(small_x) == 0:
            raise ConfigError("calibration source 'small' needs the small set's images (got none)")
        if len(small_x) <= size:
            return small_x
        return small_x[torch.randperm(len(small_x), generator=generator)[:size]]
    if dataset is None:
        raise ConfigError(f"calibration source '{source}' needs the dataset (got none)")
    n = len(dataset.train_x)
    if source == "train-first":
        return dataset.normalize(dataset.train_x[: min(size, n)])
    idx = torch.randperm(n, generator=generator)[: min(size, n)]
    return dataset.normalize(dataset.train_x[idx])


def _fx_flow():
    from torch.ao.quantization import get_default_qconfig_mapping
    from torch.ao.quantization.quantize_fx import convert_fx, prepare_fx

    return get_default_qconfig_mapping, prepare_fx, convert_fx


def quantize_int8(
    model: nn.Module,
    calibration: torch.Tensor,
    *,
    batch_size: int = 128,
    backend: str | None = None,
    ledger: CostLedger | None = None,
    phase: str = "quantize",
) -> nn.Module:
    """Post-training static int8 quantization (weights per-channel int8, activations uint8), calibrated on CPU.

    Args:
        model: Float model (left untouched; a CPU copy is converted).
        calibration: Normalised calibration images ``[N, C, H, W]`` (N >= 1).
        batch_size: Calibration batch size.
        backend: Quantized engine (default: the detected one, ``x86`` on x86 CPUs).
        ledger: Optional cost ledger (phase ``phase``; FLOPs of the calibration passes are counted).
        phase: Ledger phase name.

    Returns:
        The int8 model (an FX ``GraphModule``; runs on CPU) with ``datacomp_quant`` describing it.

    Raises:
        QuantizationUnavailable: No usable flow in this torch build (see :data:`QUANT_SUPPORT`).
        ConfigError: Missing or malformed calibration data, or an unknown backend.
    """
    if not QUANT_SUPPORT["available"]:
        raise QuantizationUnavailable(QUANT_SUPPORT["reason"])
    if calibration is None or not torch.is_tensor(calibration) or calibration.ndim != 4 or len(calibration) == 0:
        raise ConfigError(
            "calibration data is missing or malformed: pass normalised images [N, C, H, W] with N >= 1 "
            f"(got {None if calibration is None else tuple(getattr(calibration, 'shape', ()))})"
        )
    if batch_size < 1:
        raise ConfigError(f"batch_size must be >= 1, got {batch_size}")
    backend = backend or QUANT_SUPPORT["backend"]
    if backend not in QUANT_SUPPORT["engines"]:
        raise ConfigError(
            f"backend '{backend}' is not a quantized engine of this torch build: {QUANT_SUPPORT['engines']}"
        )
    float_model = copy.deepcopy(model).cpu().eval()
    calibration = calibration.detach().cpu()
    example = calibration[:1]
    info = {
        "scheme": "int8-static",
        "api": "fx",
        "backend": backend,
        "example_input_shape": list(example.shape),
        "calibration_images": int(len(calibration)),
        "fp32_num_parameters": count_parameters(float_model),
        "fp32_nonzero_parameters": count_nonzero_parameters(float_model),
        "fp32_macs_per_image": count_macs(float_model, example),
        "arch": getattr(model, "spec", None),
        "fp32_snapshot": architecture_snapshot(float_model),
    }
    get_mapping, prepare_fx, convert_fx = _fx_flow()
    torch.backends.quantized.engine = backend
    ledger = ledger if ledger is not None else CostLedger()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.ao deprecation notices, once per call
        # Every calibration batch is a counted step (exact FLOPs); the observers' qparam search in convert_fx runs
        # outside the steps, uncounted (no matmul/conv FLOPs, and counting its many tiny ops is slow).
        num_batches = -(-len(calibration) // batch_size)
        with ledger.phase(phase, flops="sampled", sample_steps=num_batches, device="cpu") as ph:
            prepared = prepare_fx(float_model, get_mapping(backend), (example,))
            with torch.no_grad():
                for start in range(0, len(calibration), batch_size):
                    with ph.step():
                        prepared(calibration[start : start + batch_size])
            quantized = convert_fx(prepared)
            ph.extra.update(calibration_images=int(len(calibration)), backend=backend)
    quantized.datacomp_quant = info
    return quantized.eval()


def rebuild_quantized(float_model: nn.Module, quant_info: dict) -> nn.Module:
    """The int8 module structure for ``float_model`` (uncalibrated; load the saved state dict into it).

    Args:
        float_model: Float model with the saved architecture (pruned shapes applied).
        quant_info: The ``quantization`` entry of a saved model spec.
    """
    if quant_info.get("api") != "fx":
        raise ConfigError(f"cannot rebuild quantization api {quant_info.get('api')!r}; this build supports 'fx'")
    if not QUANT_SUPPORT["available"]:
        raise QuantizationUnavailable(f"cannot load an int8 model: {QUANT_SUPPORT['reason']}")
    backend = quant_info["backend"]
    if backend not in QUANT_SUPPORT["engines"]:
        raise QuantizationUnavailable(f"int8 model needs engine '{backend}', not in {QUANT_SUPPORT['engines']}")
    get_mapping, prepare_fx, convert_fx = _fx_flow()
    torch.backends.quantized.engine = backend
    example = torch.zeros(quant_info["example_input_shape"])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # deprecation + "observer has not seen data" (scales come from the file)
        prepared = prepare_fx(float_model.cpu().eval(), get_mapping(backend), (example,))
        return convert_fx(prepared).eval()
