"""Data selection: coreset baselines, score-based pruning, CCS and SAE-driven diversity selection.

Entry points: :func:`select` (arrays in, ``method`` in :data:`METHODS`) returning a :class:`Selection`, and
:func:`select_dataset` (a dataset in, the chosen subset, its run folder and evaluation out). Every method is one
entry of the selector registry :data:`SELECTORS`. Building blocks: :func:`greedy_max_coverage`,
:func:`train_sae` / :class:`TopKSAE`, the score functions in :mod:`datacomp.selectors.scores` and
:func:`train_proxy` for training dynamics.
"""

from .api import METHODS, method_inputs, select
from .budgets import class_budgets
from .coverage import coverage_of, greedy_max_coverage
from .dataset_select import select_dataset
from .inputs import Inputs
from .job import SelectionRun
from .options import EvalOptions, ProxyOptions, SAEOptions, SelectOptions, TextOptions
from .proxy_training import ProxyDynamics, train_proxy
from .registry import SELECTORS, SelectorSpec, register_selector
from .sae import TopKSAE, train_sae
from .selection import Selection

__all__ = [
    "METHODS",
    "SELECTORS",
    "SelectorSpec",
    "register_selector",
    "Inputs",
    "Selection",
    "select",
    "select_dataset",
    "SelectionRun",
    "SelectOptions",
    "ProxyOptions",
    "TextOptions",
    "SAEOptions",
    "EvalOptions",
    "class_budgets",
    "method_inputs",
    "greedy_max_coverage",
    "coverage_of",
    "TopKSAE",
    "train_sae",
    "ProxyDynamics",
    "train_proxy",
]
