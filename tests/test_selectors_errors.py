"""Every remaining rejection path of the selector building blocks names the argument and the fix."""

import numpy as np
import pytest
import scipy.sparse as sp
import torch

from datacomp.errors import ConfigError, DataError, FormatError
from datacomp.selectors import Selection, select, train_proxy, train_sae
from datacomp.selectors import scores as S
from datacomp.selectors.submodular import dense_objective, knn_graph, lazy_greedy_facility_location

P = np.full((4, 2), 0.5)
Y = np.zeros(4, dtype=int)


@pytest.mark.parametrize(
    ("call", "error", "match"),
    [
        (lambda: S.el2n_scores(np.full(4, 0.5), Y), ValueError, r"probs must be \[n, C\]"),
        (lambda: S.el2n_scores(np.ones((4, 1)), Y), ValueError, "at least 2 classes"),
        (lambda: S.el2n_scores(P, np.full(4, 2)), ValueError, r"labels must lie in \[0, 2\)"),
        (lambda: S.forgetting_scores(np.ones(4)), ValueError, r"correct must be \[epochs, n\]"),
        (lambda: S.forgetting_scores(np.ones((2, 4)), "inf"), ValueError, "never_learned must be"),
        (lambda: S.grand_scores(P, Y, np.ones((3, 5))), ValueError, "embeddings shape"),
        (lambda: S.aum_scores(np.ones(4), Y), ValueError, "probs_or_logits must be"),
        (lambda: S.ccs_sample(np.arange(5.0), 2, np.random.default_rng(0), n_strata=0), ValueError, "n_strata"),
        (lambda: knn_graph(np.ones((5, 2)), n_neighbors=3, knn_index="hnsw"), ValueError, "knn_index must be"),
        (lambda: lazy_greedy_facility_location(sp.csr_matrix(-np.eye(3)), 1), ValueError, "non-negative"),
        (lambda: dense_objective(np.ones((3, 2)), [0], similarity="rbf"), ValueError, "needs gamma"),
        (lambda: dense_objective(np.ones((3, 2)), [0], similarity="dot"), ValueError, "similarity must be"),
    ],
)
def test_building_blocks_reject_bad_input(call, error, match):
    with pytest.raises(error, match=match):
        call()


@pytest.mark.parametrize(
    ("method", "kwargs", "error", "match"),
    [
        ("kcenter", {"features": np.eye(4), "already_selected": np.array([0, 1, 2])}, ValueError,
         "exceeds the 1 items not in already_selected"),
        ("longest", {"texts": "abcd"}, ConfigError, "sequence of strings"),
        ("sae-greedy", {"sae": object(), "n_items": 4}, ValueError, "with sae= needs features="),
        ("grand", {"probs": P, "labels": np.array(["a", "b", "a", "b"]), "features": np.ones((4, 2))},
         ValueError, "integer class labels"),
        ("sae-simscale", {"activations": np.eye(4), "order_by": "score"}, ValueError, "order_by='score' needs"),
        ("random", {"features": np.array([["a", "b"]] * 4)}, DataError, "features must be numeric"),
        ("random", {"n_items": 4, "labels": np.array([{}, {}, {}, {}])}, DataError, "labels must be integers"),
        ("random", {"n_items": 4, "labels": Y, "class_budget": {0: -1}}, ValueError, "must be >= 0"),
        ("random", {"n_items": 0}, ValueError, "n_items must be >= 1"),
        ("sae-greedy", {"activations": sp.csr_matrix(np.full((4, 2), np.nan))}, ValueError, "NaN/inf"),
        ("sae-greedy", {"activations": np.ones(4)}, ValueError, "activations must have 2"),
    ],
)
def test_select_rejects_bad_input(method, kwargs, error, match):
    budget = 2 if "class_budget" not in kwargs else None
    with pytest.raises(error, match=match):
        select(method, budget=budget, **kwargs)


def test_explicit_zero_class_budget_rejected():
    with pytest.raises(ValueError, match="total budget of 0"):
        select("random", n_items=4, labels=Y, budget=None, class_budget={0: 0})


def test_el2n_epoch_out_of_range():
    y = torch.arange(12) % 2
    dyn = train_proxy(lambda: torch.nn.Linear(3, 2), torch.randn(12, 3), y, epochs=2, progress=False)
    with pytest.raises(ValueError, match="one of the 2 recorded epochs"):
        select("el2n", dynamics=dyn, budget=2, epoch=5)
    with pytest.raises(ValueError, match="forward_features"):  # a bare Linear has no penultimate features
        select("grand", dynamics=dyn, budget=2)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [({"epochs": 0}, "epochs and runs must be >= 1"), ({"x": torch.full((4, 3), float("nan"))}, "NaN or inf")],
)
def test_proxy_rejects(kwargs, match):
    args = {"model_factory": lambda: torch.nn.Linear(3, 2), "x": torch.zeros(4, 3), "y": torch.zeros(4),
            "progress": False, **kwargs}
    with pytest.raises(ValueError, match=match):
        train_proxy(**args)


def test_sae_continue_with_wrong_width():
    sae = train_sae(np.random.default_rng(0).normal(size=(20, 4)), 8, 2, steps=1, progress=False)
    with pytest.raises(ValueError, match="sae expects d_in=4"):
        train_sae(np.zeros((20, 5)), 8, 2, steps=1, progress=False, sae=sae)


def test_sae_load_rejects_shape_mismatch(tmp_path):
    import json

    from safetensors.torch import save_file

    meta = {"format": "datacomp.TopKSAE/v1", "config": json.dumps({"d_in": 4, "n_latents": 8, "k": 2})}
    tensors = {"b_pre": torch.zeros(4), "W_enc": torch.zeros(8, 5), "b_enc": torch.zeros(8),
               "W_dec": torch.zeros(4, 8), "input_scale": torch.tensor(1.0)}
    save_file(tensors, str(tmp_path / "bad.safetensors"), metadata=meta)
    from datacomp.selectors import TopKSAE

    with pytest.raises(ValueError, match="do not match the config"):
        TopKSAE.load(tmp_path / "bad.safetensors")


def test_selection_load_rejects_other_npz(tmp_path):
    np.savez(tmp_path / "other.npz", indices=np.arange(3))
    with pytest.raises(ValueError, match="missing"):
        Selection.load(tmp_path / "other.npz")
