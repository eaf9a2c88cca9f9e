"""Compression consumers of small data: knowledge distillation, pruning, binarization and int8 quantization.

- :func:`compress` (:mod:`~datacomp.compression.api`): prune -> train (``kd`` / ``multi-kd``, ``finetune`` or
  born-again generations) -> binarize -> quantize a teacher with a small set, each stage saved, measured and costed;
  settings in :class:`CompressConfig`.
- :func:`train_teacher` (:mod:`~datacomp.compression.train`): a teacher trained on the full training split.
- :mod:`~datacomp.compression.losses`: Hinton KD (``alpha * T^2 * KL + (1 - alpha) * CE``, batch mean), FitNets hints.
- :mod:`~datacomp.compression.kd`: :class:`KDSettings` / :class:`KDConfig` and :func:`train_student` (KD /
  fine-tuning on a small set).
- :mod:`~datacomp.compression.multikd`: multi-teacher KD (:class:`TeacherEnsemble`: the teachers' softened
  distributions averaged with weights).
- :mod:`~datacomp.compression.binarize`: XNOR-Net 1-bit weights (and activations) with the clipped
  straight-through estimator.
- :mod:`~datacomp.compression.relabel`: teacher soft labels for a small set.
- :mod:`~datacomp.compression.prune`: global unstructured magnitude pruning and structured channel pruning
  (torch-pruning; magnitude or Taylor importance from the small set).
- :mod:`~datacomp.compression.quantize`: post-training static int8 on CPU, calibrated on the small set.
- :mod:`~datacomp.compression.modelio` / :mod:`~datacomp.compression.snapshot`: safe model files (safetensors + JSON
  architecture spec with pruned shapes).
- :mod:`~datacomp.compression.measure`: parameters, MACs, CPU latency, size on disk, accuracy.
- :mod:`~datacomp.compression.smallset`: the small set (a :class:`~datacomp.synset.SyntheticSet`) from a spec.
"""

from .api import DEFAULT_CONFIG, CompressResult, compress, upgrade_compress_record
from .binarize import BINARIZE_MODES, binarize_model, binarize_weight, binary_size, freeze_binarized, sign_ste
from .config import CompressConfig
from .kd import KDConfig, KDSettings, train_student
from .losses import FeatureHint, KDLoss, cross_entropy, kd_loss
from .measure import count_macs, count_parameters, measure_latency, model_report
from .modelio import load_model, model_digest, save_model
from .multikd import TeacherEnsemble, combine_teacher_logits
from .prune import ChannelPruneSettings, global_magnitude_prune, structured_channel_prune
from .quantize import QUANT_SUPPORT, QuantizationUnavailable, calibration_images, quantize_int8
from .relabel import relabel, teacher_soft_labels
from .smallset import resolve_small_set
from .stages import StageResult
from .train import TrainConfig, TrainResult, train_teacher

__all__ = [
    "compress",
    "CompressConfig",
    "CompressResult",
    "StageResult",
    "DEFAULT_CONFIG",
    "upgrade_compress_record",
    "train_teacher",
    "TrainConfig",
    "TrainResult",
    "kd_loss",
    "cross_entropy",
    "KDLoss",
    "FeatureHint",
    "KDConfig",
    "KDSettings",
    "relabel",
    "teacher_soft_labels",
    "train_student",
    "global_magnitude_prune",
    "structured_channel_prune",
    "ChannelPruneSettings",
    "QUANT_SUPPORT",
    "QuantizationUnavailable",
    "calibration_images",
    "quantize_int8",
    "save_model",
    "load_model",
    "model_digest",
    "count_parameters",
    "count_macs",
    "measure_latency",
    "model_report",
    "resolve_small_set",
    "TeacherEnsemble",
    "combine_teacher_logits",
    "BINARIZE_MODES",
    "binarize_model",
    "binarize_weight",
    "binary_size",
    "freeze_binarized",
    "sign_ste",
]
