"""In-context-learning methods (registered here): data-whisperer (Wang et al., ACL 2025, arXiv 2505.12212).

The scores come first: a dataset-level text selection (``source="icl"``) runs :func:`datacomp.lm.whisper_scores`
with the causal LM of ``--embedder lm:NAME`` (:mod:`datacomp.selectors.icl_inputs`) and passes them as ``scores=``;
``select("data-whisperer", scores=...)`` takes precomputed ones. The run keeps the ``budget`` highest scores (ties:
lowest index). The parameters ``n_demos``, ``n_queries``, ``folds``, ``max_new_tokens``, ``layer`` and ``max_length``
(``--set``; tokens kept of each demonstration and query prompt, ``--max-length`` being the encoders' truncation) are
those of the scoring (:class:`datacomp.lm.WhispererConfig`); here they are only validated and recorded.
"""

from __future__ import annotations

import numpy as np

from datacomp.lm.whisperer_plan import WhispererConfig

from .inputs import Inputs
from .registry import SelectorSpec, base_pool, missing_input, register_selector

__all__ = ["WHISPERER_PARAMS", "whisperer_config_params"]

WHISPERER_PARAMS = ("n_demos", "n_queries", "folds", "max_new_tokens", "layer", "max_length")


def _prepare_whisperer(inputs: Inputs, n_demos: int = 5, n_queries: int = 3, folds: int = 2,
                       max_new_tokens: int = 64, layer: int | None = None, max_length: int = 1024
                       ) -> tuple[dict, dict]:
    params = whisperer_config_params(n_demos=n_demos, n_queries=n_queries, folds=folds,
                                     max_new_tokens=max_new_tokens, layer=layer, max_length=max_length)
    if inputs.scores is None:
        raise missing_input("data-whisperer")
    return base_pool(inputs.n, item_scores=np.asarray(inputs.scores, dtype=np.float64)), {
        "score_source": "scores", **params}


def whisperer_config_params(**params: object) -> dict:
    """The scoring parameters (:data:`WHISPERER_PARAMS`) checked by :meth:`datacomp.lm.WhispererConfig.check`."""
    WhispererConfig(**params).check()  # type: ignore[arg-type]
    return dict(params)


def _run_whisperer(pool: dict, budget: int, rng: np.random.Generator):
    values = pool["item_scores"]
    idx = np.lexsort((np.arange(values.size), -values))[:budget]
    return idx, values[idx], None, {"order": "score descending, ties by lowest index"}


register_selector(SelectorSpec(
    "data-whisperer", "in-context-learning scores of a causal LM, attention-weighted (Data Whisperer)",
    prepare=_prepare_whisperer, run=_run_whisperer,
    needs="scores= (text datasets: computed with the causal LM of --embedder lm:NAME)",
    score_meaning="attention-weighted task metric of the queries the item was a demonstration for (higher first)",
    source="icl"))
