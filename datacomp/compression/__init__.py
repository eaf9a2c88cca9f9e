"""Compression consumers of small data: knowledge distillation, pruning and int8 quantization.

- :mod:`~datacomp.compression.kd`: Hinton KD (``alpha * T^2 * KL + (1 - alpha) * CE``, batch mean), FitNets hints,
  teacher relabelling, :func:`train_student`.
- :mod:`~datacomp.compression.prune`: global unstructured magnitude pruning and structured channel pruning
  (torch-pruning; magnitude or Taylor importance from the small set).
- :mod:`~datacomp.compression.quantize`: post-training static int8 on CPU, calibrated on the small set.
- :mod:`~datacomp.compression.modelio`: safe model files (safetensors + JSON architecture spec with pruned shapes).
- :mod:`~datacomp.compression.measure`: parameters, MACs, CPU latency, size on disk, accuracy.
- :mod:`~datacomp.compression.pipeline`: prune -> distill -> quantize with per-stage reports (``datacomp compress``).
"""

from .kd import DistillConfig, FeatureHint, KDLoss, kd_loss, relabel, teacher_soft_labels, train_student
from .measure import count_macs, count_parameters, measure_latency, model_report
from .modelio import load_model, save_model
from .pipeline import CompressConfig, SmallSet, resolve_small_set, run_compression
from .prune import global_magnitude_prune, structured_channel_prune
from .quantize import QUANT_SUPPORT, QuantizationUnavailable, calibration_images, quantize_int8

__all__ = [
    "kd_loss",
    "KDLoss",
    "FeatureHint",
    "DistillConfig",
    "relabel",
    "teacher_soft_labels",
    "train_student",
    "global_magnitude_prune",
    "structured_channel_prune",
    "QUANT_SUPPORT",
    "QuantizationUnavailable",
    "calibration_images",
    "quantize_int8",
    "save_model",
    "load_model",
    "count_parameters",
    "count_macs",
    "measure_latency",
    "model_report",
    "CompressConfig",
    "SmallSet",
    "resolve_small_set",
    "run_compression",
]
