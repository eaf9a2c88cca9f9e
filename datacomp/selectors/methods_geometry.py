"""Methods on the pool's geometry: random, herding, k-center greedy and facility location (registered here).

``random`` follows the one random rule of datacomp (the same as ``datacomp subset random`` and
:func:`datacomp.evaluation.random_subset`): one ``torch.Generator`` seeded with the selection's seed; classes in
sorted label order; class c takes the first ``k_c`` entries of ``torch.randperm(n_c)`` over its members in pool
order. Without classes, the first ``budget`` entries of ``torch.randperm(n)``.
"""

from __future__ import annotations

import numpy as np
import torch

from datacomp.errors import ConfigError

from . import geometric, submodular
from .inputs import Inputs
from .registry import SelectorSpec, base_pool, missing_input, register_selector

__all__: list[str] = []


def _prepare_random(inputs: Inputs) -> tuple[dict, dict]:
    return {"item_index": np.arange(inputs.n)}, {"rule": "torch.randperm per class, one generator seeded with seed"}


def _run_random(pool: dict, budget: int, rng: torch.Generator):
    order = torch.randperm(pool["item_index"].shape[0], generator=rng)[:budget].numpy()
    return order, np.arange(order.size, dtype=np.float64), None, {}


def _features_pool(method: str, inputs: Inputs) -> tuple[dict, dict]:
    if inputs.features is None:
        raise missing_input(method)
    return base_pool(inputs.n, features=inputs.features), {"feature_dim": int(inputs.features.shape[1])}


def _prepare_herding(inputs: Inputs) -> tuple[dict, dict]:
    return _features_pool("herding", inputs)


def _run_herding(pool: dict, budget: int, rng: np.random.Generator, mode: str = "textbook"):
    idx, errors, info = geometric.herding(pool["features"], budget, mode=mode)
    return idx, errors, None, info


def _herding_summary(pool: dict, indices: np.ndarray) -> dict:
    return {"mean_error": float(geometric.running_mean_error(pool["features"], indices)[-1])}


def _prepare_kcenter(inputs: Inputs, already_selected=None) -> tuple[dict, dict]:
    if inputs.features is None:
        raise missing_input("kcenter")
    n = inputs.features.shape[0]
    mask = np.zeros(n, dtype=bool)
    if already_selected is not None:
        pre = np.asarray(already_selected)
        if pre.ndim != 1 or pre.dtype.kind not in "iu" or (pre.size and (pre.min() < 0 or pre.max() >= n)):
            raise ConfigError(f"already_selected must be a 1-D array of item indices in [0, {n})")
        mask[pre] = True
    return base_pool(inputs.n, features=inputs.features, already=mask), {"n_already_selected": int(mask.sum())}


def _run_kcenter(pool: dict, budget: int, rng: np.random.Generator, start: str = "random"):
    already = np.flatnonzero(pool["already"])
    free = pool["already"].size - already.size
    if budget > free:
        raise ConfigError(f"kcenter budget {budget} exceeds the {free} items not in already_selected")
    idx, dists, info = geometric.kcenter_greedy(pool["features"], budget, rng, start=start, already_selected=already)
    return idx, dists, None, info


def _prepare_facility_location(inputs: Inputs) -> tuple[dict, dict]:
    return _features_pool("facility-location", inputs)


def _run_facility_location(pool: dict, budget: int, rng: np.random.Generator,
                           graph: submodular.KNNGraphSettings = submodular.KNNGraphSettings(), progress: bool = False):
    # graph's fields are the method's parameters (--set n_neighbors=32): see datacomp.selectors.registry.
    return submodular.facility_location(pool["features"], budget, graph, seed=int(rng.integers(2**31)),
                                        progress=progress)


register_selector(SelectorSpec(
    "random", "uniform random subset (the baseline every method is compared to)",
    prepare=_prepare_random, run=_run_random, needs="nothing beyond the pool size (any input, or n_items=)",
    score_meaning="draw order within the class (0 = drawn first)", shared_stream=True))
register_selector(SelectorSpec(
    "herding", "greedy running-mean matching of the class's feature mean (Welling 2009)",
    prepare=_prepare_herding, run=_run_herding, needs="features=",
    score_meaning="running-mean error ||mean(S_t) - mu|| after the pick (lower is better)", source="features",
    summary=_herding_summary))
register_selector(SelectorSpec(
    "kcenter", "k-center greedy: each pick is the item farthest from the picks so far (Sener & Savarese 2018)",
    prepare=_prepare_kcenter, run=_run_kcenter, needs="features=",
    score_meaning="distance of the pick to earlier picks (inf for a random first center)", source="features"))
register_selector(SelectorSpec(
    "facility-location", "lazy-greedy facility location on a kNN similarity graph (CRAIG, Mirzasoleiman 2020)",
    prepare=_prepare_facility_location, run=_run_facility_location, needs="features=",
    score_meaning="marginal facility-location gain on the kNN graph (higher first)", source="features"))
