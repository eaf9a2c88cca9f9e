"""Data selection: coreset baselines, score-based pruning, CCS and SAE-driven diversity selection.

Entry point: :func:`select` (``method`` in :data:`METHODS`) returning a :class:`Selection`. Building blocks:
:func:`greedy_max_coverage`, :func:`train_sae` / :class:`TopKSAE`, the score functions in
:mod:`datacomp.selectors.scores` and :func:`train_proxy` for training dynamics.
"""

from .api import METHODS, Selection, class_budgets, method_inputs, select
from .coverage import coverage_of, greedy_max_coverage
from .proxy_training import ProxyDynamics, train_proxy
from .sae import TopKSAE, train_sae

__all__ = [
    "METHODS",
    "Selection",
    "select",
    "class_budgets",
    "method_inputs",
    "greedy_max_coverage",
    "coverage_of",
    "TopKSAE",
    "train_sae",
    "ProxyDynamics",
    "train_proxy",
]
