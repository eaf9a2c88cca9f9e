"""Evaluation of small training sets exactly as the field's papers do: train fresh models, test on the real test split.

Protocols are named presets (:data:`PROTOCOLS`), each documented with its source. Every accuracy carries the protocol
that produced it. DD-Ranking-style honesty metrics (improvement over a random real subset with the same stored images
per class, hard-label recovery against full-data training) are computed with the same protocol.

Modules:
  * :mod:`~datacomp.evaluation.protocols`: ``Protocol``, ``PROTOCOLS``, ``get_protocol``;
  * :mod:`~datacomp.evaluation.settings`: ``EvalSettings`` (seed, device, progress of an evaluation's runs);
  * :mod:`~datacomp.evaluation.classifier`: ``train_classifier`` (one fresh model on one set), ``TrainingRun``;
  * :mod:`~datacomp.evaluation.results`: ``EvalResult``;
  * :mod:`~datacomp.evaluation.sets`: ``evaluate_synset``, ``evaluate_models``;
  * :mod:`~datacomp.evaluation.baselines`: the random-baseline rule (``baseline_counts``, ``random_subset``,
    ``evaluate_random_baseline``), full-data training, IOR and HLR;
  * :mod:`~datacomp.evaluation.api`: ``evaluate`` (``datacomp.evaluate``).
"""

from __future__ import annotations

from ..training import batch_backward, micro_batch_size, test_accuracy
from .api import evaluate
from .baselines import (
    baseline_counts,
    evaluate_full_data,
    evaluate_random_baseline,
    hard_label_recovery,
    improvement_over_random,
    random_baseline_set,
    random_subset,
)
from .classifier import TrainingRun, train_classifier
from .protocols import PROTOCOLS, Protocol, get_protocol
from .results import EvalResult
from .settings import EvalSettings
from .sets import evaluate_models, evaluate_synset

__all__ = [
    "batch_backward",
    "micro_batch_size",
    "Protocol",
    "PROTOCOLS",
    "get_protocol",
    "EvalResult",
    "EvalSettings",
    "TrainingRun",
    "train_classifier",
    "test_accuracy",
    "evaluate",
    "evaluate_synset",
    "evaluate_models",
    "random_subset",
    "baseline_counts",
    "random_baseline_set",
    "evaluate_random_baseline",
    "evaluate_full_data",
    "improvement_over_random",
    "hard_label_recovery",
]
