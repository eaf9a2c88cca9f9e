"""`select` API: class balance, determinism, metadata, Selection I/O, proxy dynamics and every rejection path."""

import hashlib
import json

import numpy as np
import pytest
import torch

from datacomp.errors import ConfigError, DataError
from datacomp.selectors import METHODS, Selection, class_budgets, select, train_proxy

N = 120


@pytest.fixture(scope="module")
def pool():
    rng = np.random.default_rng(0)
    labels = np.repeat([0, 1, 2], [60, 40, 20])
    features = rng.normal(size=(N, 6)) + labels[:, None]
    probs = rng.dirichlet(np.ones(3), size=N)
    acts = np.maximum(rng.normal(size=(N, 40)), 0) * (rng.random((N, 40)) < 0.2)
    return {
        "features": features, "labels": labels, "scores": rng.random(N), "probs": probs,
        "correct": rng.random((4, N)) < 0.6, "lengths": rng.integers(1, 500, N), "activations": acts,
    }


def run(method, pool, **kw):
    args = dict(pool)
    args.update(kw)
    return select(method, **args)


@pytest.mark.parametrize("method", METHODS)
def test_every_method_class_balanced_and_deterministic(method, pool):
    sel = run(method, pool, budget=12, seed=3)
    again = run(method, pool, budget=12, seed=3)
    np.testing.assert_array_equal(sel.indices, again.indices)
    assert sel.indices.dtype == np.int64 and sel.scores.shape == (12,)
    assert np.unique(sel.indices).size == 12
    # proportional split of 12 over class sizes 60/40/20 -> 6/4/2, grouped by class
    np.testing.assert_array_equal(pool["labels"][sel.indices], [0] * 6 + [1] * 4 + [2] * 2)
    assert sel.metadata["per_class_budgets"] == {"0": 6, "1": 4, "2": 2}
    assert sel.metadata["method"] == method and sel.metadata["seed"] == 3 and sel.metadata["class_balanced"]
    json.dumps(sel.metadata)  # JSON-serialisable as written to run.json


@pytest.mark.parametrize("method", ["random", "kcenter", "ccs"])
def test_seed_changes_random_methods(method, pool):
    a = run(method, pool, budget=20, seed=0, class_balanced=False)
    b = run(method, pool, budget=20, seed=1, class_balanced=False)
    assert not np.array_equal(a.indices, b.indices)


def test_unbalanced_ignores_class_sizes(pool):
    sel = run("longest", pool, budget=10, class_balanced=False)
    np.testing.assert_array_equal(sel.indices, np.argsort(-pool["lengths"], kind="stable")[:10])
    assert sel.metadata["per_class_budgets"] is None and not sel.metadata["class_balanced"]
    np.testing.assert_array_equal(sel.item_scores, pool["lengths"])


@pytest.mark.parametrize(
    ("counts", "budget", "rule", "expected"),
    [
        ([5, 3, 2], 5, "proportional", [3, 1, 1]),  # quotas 2.5/1.5/1.0: tie on remainder -> lower label
        ([7, 2, 1], 3, "proportional", [2, 1, 0]),  # quotas 2.1/0.6/0.3
        ([4, 4, 4], 7, "equal", [3, 2, 2]),
        ([4, 4, 4], 3, {0: 3}, [3, 0, 0]),
    ],
)
def test_class_budget_rules(counts, budget, rule, expected):
    labels = np.repeat(np.arange(len(counts)), counts)
    out = class_budgets(labels, budget, rule)
    assert list(out.values()) == expected and sum(expected) == budget


@pytest.mark.parametrize("method", ["random", "herding", "kcenter", "ccs"])
def test_fraction_on_balanced_pool_repeats_ipc_subset(method, pool):
    # The coreset table reuses the IPC-50 cell for CIFAR-10's 1 % fraction: on a balanced pool the proportional
    # split equals the equal split, and the subset depends on the per-class budgets only.
    balanced = {k: v[:60] if k != "correct" else v[:, :60] for k, v in pool.items()}
    balanced["labels"] = np.repeat([0, 1, 2], 20)
    a = run(method, balanced, budget=9, seed=5, class_budget="proportional")
    b = run(method, balanced, budget=9, seed=5, class_budget="equal")
    np.testing.assert_array_equal(a.indices, b.indices)
    assert a.metadata["per_class_budgets"] == b.metadata["per_class_budgets"] == {"0": 3, "1": 3, "2": 3}


def test_explicit_class_budget_without_total(pool):
    sel = run("random", pool, budget=None, class_budget={0: 2, 2: 5})
    assert len(sel) == 7 and (pool["labels"][sel.indices] == 2).sum() == 5


def test_string_labels_work(pool):
    labels = np.array(["cat", "dog", "emu"])[pool["labels"]]
    sel = run("herding", pool, budget=6, labels=labels)
    assert sorted(sel.metadata["per_class_budgets"]) == ["cat", "dog", "emu"]


def test_selection_save_load_roundtrip(pool, tmp_path):
    sel = run("facility-location", pool, budget=9, n_neighbors=5)
    path = tmp_path / "sel.npz"
    sel.save(path)
    back = Selection.load(path)
    np.testing.assert_array_equal(back.indices, sel.indices)
    np.testing.assert_array_equal(back.weights, sel.weights)
    assert back.metadata == sel.metadata and back.item_scores is None
    assert [p.name for p in tmp_path.iterdir()] == ["sel.npz"]
    assert back.subset_digest() == sel.subset_digest()


def test_subset_digest_names_the_set_not_the_order():
    def sel(indices):
        return Selection(indices=np.array(indices, dtype=np.int64), scores=np.zeros(len(indices)))

    assert sel([3, 1, 2]).subset_digest() == sel([1, 2, 3]).subset_digest()
    assert sel([1, 2, 3]).subset_digest() != sel([1, 2, 4]).subset_digest()
    assert sel([1, 2]).subset_digest() != sel([1, 2, 3]).subset_digest()
    # Pinned: the digest must not change with NumPy versions or platforms (it is compared across machines).
    assert sel([1, 2, 3]).subset_digest() == hashlib.sha256(
        b"".join(i.to_bytes(8, "little") for i in (1, 2, 3))).hexdigest()


def test_proxy_dynamics_feed_score_methods():
    class Tiny(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.body = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU())
            self.head = torch.nn.Linear(8, 3)

        def forward_features(self, x):
            return self.body(x)

        def forward_head(self, e):
            return self.head(e)

        def forward(self, x):
            return self.forward_head(self.forward_features(x))

    gen = torch.Generator().manual_seed(0)
    y = torch.arange(90) % 3
    x = torch.randn(90, 4, generator=gen) + torch.nn.functional.one_hot(y, 4).float() * 2
    dyn = train_proxy(Tiny, x, y, epochs=3, runs=2, batch_size=32, seed=0, progress=False)
    assert dyn.probs.shape == (2, 3, 90, 3) and dyn.embeddings.shape == (2, 90, 8)
    np.testing.assert_allclose(dyn.probs.sum(-1), 1.0, atol=1e-5)  # every item recorded every epoch
    for method in ("forgetting", "el2n", "grand", "uncertainty"):
        sel = select(method, dynamics=dyn, budget=9)
        assert len(sel) == 9 and sel.metadata["cost"]["proxy_protocol"]["runs"] == 2
    assert dyn.protocol["samples_seen"] == 2 * 3 * 90
    grand = select("grand", dynamics=dyn, budget=90, class_balanced=False)
    np.testing.assert_allclose(grand.item_scores, dyn.grand())
    evaluated = train_proxy(Tiny, x, y, epochs=2, record="eval", batch_size=32, progress=False)
    assert evaluated.protocol["inference_passes"] == 3
    half = train_proxy(Tiny, x, y, epochs=3, runs=2, batch_size=32, seed=0, progress=False, bf16=True)
    assert half.protocol["bf16"] and not dyn.protocol["bf16"]
    np.testing.assert_allclose(half.probs.sum(-1), 1.0, atol=1e-5)  # scores come from float32 logits
    assert np.abs(half.final_probs - dyn.final_probs).max() < 0.1  # same training, lower precision


def test_proxy_rejects_bad_input():
    with pytest.raises(ValueError, match="record must be"):
        train_proxy(lambda: torch.nn.Linear(2, 2), torch.zeros(4, 2), torch.zeros(4), record="sometimes")
    with pytest.raises(ValueError, match="one label per row"):
        train_proxy(lambda: torch.nn.Linear(2, 2), torch.zeros(4, 2), torch.zeros(3))


@pytest.mark.parametrize(
    ("method", "kwargs", "error", "match"),
    [
        ("random", {"budget": 0}, ValueError, "budget must be >= 1"),
        ("random", {"budget": -3}, ValueError, "budget must be >= 1"),
        ("random", {"budget": N + 1}, ValueError, "exceeds the pool size"),
        ("random", {"budget": 2.5}, ConfigError, "budget must be an int"),
        ("random", {"budget": None}, ValueError, "budget is required"),
        ("random", {"budget": 70, "class_budget": "equal"}, ValueError, "class 2 has 20 items but its budget is 23"),
        ("random", {"budget": 5, "class_budget": {0: 30, 2: 21}}, ValueError, "class_budget sums to 51"),
        ("random", {"budget": 21, "class_budget": {2: 21}}, ValueError, "class 2 has 20 items"),
        ("random", {"budget": 1, "class_budget": {7: 1}}, ValueError, "not in labels"),
        ("random", {"budget": 3, "class_budget": "fair"}, ValueError, "class_budget must be"),
        ("herding", {"budget": 3, "features": np.full((N, 6), np.nan)}, ValueError, "features contains"),
        ("kcenter", {"budget": 3, "features": np.full((N, 6), np.inf)}, ValueError, "NaN/inf"),
        ("herding", {"budget": 3, "features": np.zeros(N)}, ValueError, "features must have 2"),
        ("random", {"budget": 3, "labels": np.zeros(N - 1)}, ValueError, "labels has length 119"),
        ("random", {"budget": 3, "labels": np.full(N, 0.5)}, ValueError, "labels must be integers"),
        ("random", {"budget": 3, "labels": np.zeros((N, 2))}, ValueError, "labels must be 1-D"),
        ("random", {"budget": 3, "scores": np.zeros(N - 2)}, ValueError, "inputs disagree"),
        ("ccs", {"budget": 3, "scores": np.r_[np.zeros(N - 1), np.nan]}, ValueError, "scores contains 1 NaN"),
        ("ccs", {"budget": 3, "beta": 1.0}, ValueError, "beta"),
        ("ccs", {"budget": 3, "hard": "middle"}, ValueError, "hard must be"),
        ("kcenter", {"budget": 3, "start": "centroid"}, ValueError, "start must be"),
        ("kcenter", {"budget": 3, "already_selected": np.array([N])}, ValueError, "already_selected"),
        ("herding", {"budget": 3, "mode": "fast"}, ValueError, "herding mode"),
        ("facility-location", {"budget": 3, "similarity": "l1"}, ValueError, "similarity must be"),
        ("facility-location", {"budget": 3, "n_neighbors": 0}, ValueError, "n_neighbors"),
        ("uncertainty", {"budget": 3, "kind": "variance"}, ValueError, "uncertainty kind"),
        ("uncertainty", {"budget": 3, "prefer": "high"}, ValueError, "prefer must be 'uncertain'"),
        ("el2n", {"budget": 3, "prefer": "middle"}, ValueError, "prefer must be 'high'"),
        ("sae-greedy", {"budget": 3, "tie_break": "random"}, ValueError, "tie_break"),
        ("sae-greedy", {"budget": 3, "activations": -np.ones((N, 4))}, ValueError, "non-negative"),
        ("sae-simscale", {"budget": 3, "order_by": "size"}, ValueError, "order_by must be"),
        ("herding", {"budget": 3, "n_neighbors": 5}, ConfigError, r"unknown parameter\(s\) \['n_neighbors'\]"),
        ("herding", {"budget": 3, "seed": -1}, ValueError, "seed must be >= 0"),
    ],
)
def test_rejects_bad_input(pool, method, kwargs, error, match):
    with pytest.raises(error, match=match):
        run(method, pool, **kwargs)


@pytest.mark.parametrize(
    ("method", "kwargs", "match"),
    [
        ("herding", {"scores": np.zeros(5)}, "herding needs features="),
        ("kcenter", {"n_items": 5}, "kcenter needs features="),
        ("facility-location", {"n_items": 5}, "facility-location needs features="),
        ("forgetting", {"features": np.zeros((5, 2))}, "forgetting needs scores=, correct="),
        ("el2n", {"features": np.zeros((5, 2))}, "el2n needs scores=, probs=/logits="),
        ("el2n", {"probs": np.full((5, 2), 0.5)}, "el2n from probs=/logits= needs labels="),
        ("grand", {"probs": np.full((5, 2), 0.5), "labels": np.zeros(5, int)}, "needs embeddings="),
        ("uncertainty", {"lengths": np.ones(5)}, "uncertainty needs scores=, probs="),
        ("ccs", {"probs": np.full((5, 2), 0.5)}, r"ccs needs scores="),
        ("longest", {"features": np.zeros((5, 2))}, "longest needs lengths= or texts="),
        ("sae-greedy", {"features": np.zeros((5, 2))}, "sae-greedy needs activations= or sae="),
        ("sae-simscale", {"activations": np.ones((5, 3)), "order_by": "length"}, "order_by='length' needs"),
        ("random", {}, "no input gives the pool size"),
    ],
)
def test_missing_inputs_are_named(method, kwargs, match):
    with pytest.raises(ValueError, match=match):
        select(method, budget=2, **kwargs)


def test_unknown_method_lists_valid_ones():
    with pytest.raises(ValueError, match="unknown method 'coreset'; valid methods: random, herding, kcenter"):
        select("coreset", np.zeros((4, 2)), budget=1)


def test_probs_must_be_probabilities():
    with pytest.raises(ValueError, match="pass logits= instead"):
        select("uncertainty", probs=np.array([[2.0, -1.0], [0.5, 0.5]]), budget=1)
