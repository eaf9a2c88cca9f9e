"""Selection algorithms against brute-force oracles on small inputs."""

import itertools

import numpy as np
import pytest
import scipy.sparse as sp
import torch
from scipy.spatial.distance import cdist

from datacomp.errors import ConfigError
from datacomp.selectors import SELECTORS, select
from datacomp.selectors.coverage import coverage_of
from datacomp.selectors.geometric import kcenter_greedy, max_min_distance, running_mean_error
from datacomp.selectors.sae_select import diverse_scan
from datacomp.selectors.scores import (
    aum_scores,
    ccs_sample,
    el2n_scores,
    forgetting_scores,
    grand_scores,
    uncertainty_scores,
)
from datacomp.selectors.submodular import (
    KNNGraphSettings,
    dense_objective,
    facility_location,
    graph_objective,
    knn_graph,
    lazy_greedy_facility_location,
)


@pytest.fixture(scope="module")
def blobs():
    rng = np.random.default_rng(0)
    centers = rng.normal(scale=6.0, size=(5, 8))
    x = np.concatenate([c + rng.normal(size=(40, 8)) for c in centers])
    return x, np.repeat(np.arange(5), 40)


# --------------------------------------------------------------------------------------------- k-center


def brute_kcenter(x, first, budget):
    dist = cdist(x, x)
    chosen = [first]
    for _ in range(budget - 1):
        chosen.append(int(np.argmax(dist[:, chosen].min(axis=1))))
    return np.array(chosen), float(dist[:, chosen].min(axis=1).max())


@pytest.mark.parametrize("budget", [1, 5, 17])
def test_kcenter_matches_brute_force(blobs, budget):
    x, _ = blobs
    picks, scores, info = kcenter_greedy(x, budget, np.random.default_rng(4))
    expected, radius = brute_kcenter(x, int(picks[0]), budget)
    np.testing.assert_array_equal(picks, expected)
    assert info["radius"] == pytest.approx(radius, rel=1e-9)
    assert max_min_distance(x, picks) == pytest.approx(radius, rel=1e-9)
    assert np.all(np.diff(scores[1:]) <= 1e-12)  # distances of successive picks never grow


def test_kcenter_radius_beats_random(blobs):
    x, _ = blobs
    sel = select("kcenter", x, budget=5, class_balanced=False)
    rng = np.random.default_rng(0)
    random_radii = [max_min_distance(x, rng.choice(len(x), 5, replace=False)) for _ in range(20)]
    assert np.unique(sel.indices // 40).size == 5  # one center per blob
    assert sel.metadata["info"]["radius"] < 0.5 * np.median(random_radii)


def test_kcenter_never_repeats_duplicates():
    x = np.repeat(np.eye(3), 4, axis=0)  # 3 distinct points, 4 copies each
    picks, _, _ = kcenter_greedy(x, 12, np.random.default_rng(0))
    assert np.unique(picks).size == 12


def test_kcenter_already_selected_are_centers(blobs):
    x, _ = blobs
    sel = select("kcenter", x, budget=4, class_balanced=False, already_selected=np.array([0, 50]))
    assert not set(sel.indices.tolist()) & {0, 50}
    dist = cdist(x, x)[:, [0, 50, *sel.indices]].min(axis=1).max()
    assert sel.metadata["info"]["radius"] == pytest.approx(dist)


# --------------------------------------------------------------------------------------------- facility location


def naive_fl(dense_cover, budget):
    best = np.zeros(dense_cover.shape[1])
    picks = []
    for _ in range(budget):
        gains = np.maximum(dense_cover - best[None, :], 0).sum(axis=1)
        gains[picks] = -1
        pick = int(np.argmax(gains))
        picks.append(pick)
        best = np.maximum(best, dense_cover[pick])
    return np.array(picks), best.sum()


@pytest.mark.parametrize("similarity", ["cosine", "rbf"])
def test_facility_location_lazy_equals_naive_and_objective(blobs, similarity):
    x, _ = blobs
    graph, _ = knn_graph(x, n_neighbors=6, similarity=similarity)
    cover = graph.T.tocsr()
    picks, gains, best, _ = lazy_greedy_facility_location(cover, 12)
    expected, objective = naive_fl(cover.toarray(), 12)
    np.testing.assert_array_equal(picks, expected)
    assert best.sum() == pytest.approx(objective)
    assert graph_objective(graph, picks) == pytest.approx(objective)
    assert gains.sum() == pytest.approx(objective)


def test_facility_location_is_exact_on_full_graph_and_optimal_on_tiny_set():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(9, 3))
    graph, _ = knn_graph(x, n_neighbors=9)  # every pair: the full similarity matrix
    assert graph.nnz == 81
    sel = select("facility-location", x, budget=3, class_balanced=False, n_neighbors=9)
    assert sel.metadata["info"]["objective"] == pytest.approx(dense_objective(x, sel.indices))
    best = max(dense_objective(x, list(s)) for s in itertools.combinations(range(9), 3))
    assert sel.metadata["info"]["objective"] >= (1 - 1 / np.e) * best


def test_knn_graph_rows_hold_self_and_neighbours(blobs):
    x, _ = blobs
    graph, info = knn_graph(x, n_neighbors=5)
    assert np.all(np.diff(graph.indptr) == 5)
    np.testing.assert_allclose(graph.diagonal(), 1.0)
    exact = np.argsort(cdist(x, x, "cosine"), axis=1)[:, :5]
    overlap = np.mean([len(set(graph[i].indices) & set(exact[i])) for i in range(0, len(x), 20)])
    assert overlap >= 4.5 and info["knn_index"] == "flat"


def test_facility_location_graph_settings_are_method_parameters(blobs):
    """KNNGraphSettings' fields are facility-location's parameters; select() hands them on as one settings object."""
    x, _ = blobs
    spec = SELECTORS.get("facility-location")
    assert spec.params == {"n_neighbors": 16, "similarity": "cosine", "knn_index": "auto", "gamma": None,
                           "nprobe": 8, "progress": False}
    sel = select("facility-location", x, budget=7, class_balanced=False, seed=4, n_neighbors=5, similarity="rbf")
    seed = int(np.random.default_rng(4).integers(2**31))
    idx, gains, _, info = facility_location(x, 7, KNNGraphSettings(n_neighbors=5, similarity="rbf"), seed=seed)
    np.testing.assert_array_equal(sel.indices, idx)
    np.testing.assert_array_equal(sel.scores, gains)
    assert sel.metadata["info"]["n_neighbors"] == info["n_neighbors"] == 5
    with pytest.raises(ConfigError, match=r"knn_graph got unknown setting\(s\) \['neighbours'\]"):
        knn_graph(x, neighbours=5)
    with pytest.raises(ConfigError, match=r"unknown parameter\(s\) \['graph'\]"):
        select("facility-location", x, budget=3, graph=KNNGraphSettings())


def test_facility_location_weights_are_cluster_sizes(blobs):
    x, _ = blobs
    sel = select("facility-location", x, budget=5, class_balanced=False, n_neighbors=50)
    assert sel.weights.sum() <= len(x) and sel.weights.min() >= 1
    assert sel.metadata["info"]["represented_fraction"] == pytest.approx(sel.weights.sum() / len(x))


# --------------------------------------------------------------------------------------------- herding


def test_herding_mean_error_decreases_and_beats_random(blobs):
    x, _ = blobs
    sel = select("herding", x, budget=30, class_balanced=False)
    err = running_mean_error(x, sel.indices)
    np.testing.assert_allclose(sel.scores, err, rtol=1e-6)
    assert err[-1] < 0.2 * err[0] and err[-1] < err[9]
    rng = np.random.default_rng(0)
    random_err = [running_mean_error(x, rng.choice(len(x), 30, replace=False))[-1] for _ in range(30)]
    assert err[-1] < min(random_err)
    legacy = select("herding", x, budget=30, class_balanced=False, mode="deepcore")
    assert running_mean_error(x, legacy.indices)[-1] > err[-1]


# --------------------------------------------------------------------------------------------- scores


def test_uncertainty_direction():
    probs = np.array([[0.98, 0.01, 0.01], [0.34, 0.33, 0.33], [0.6, 0.39, 0.01]])
    for kind in ("least-confidence", "entropy", "margin"):
        s = uncertainty_scores(probs, kind)
        assert s[1] > s[2] > s[0], kind
        sel = select("uncertainty", probs=probs, budget=1, kind=kind)
        assert sel.indices.tolist() == [1]
        assert select("uncertainty", probs=probs, budget=1, kind=kind, prefer="certain").indices.tolist() == [0]


def test_uncertainty_from_logits_matches_probs():
    logits = np.random.default_rng(0).normal(size=(20, 4))
    probs = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    a = select("uncertainty", logits=logits, budget=5, kind="margin")
    b = select("uncertainty", probs=probs, budget=5, kind="margin")
    np.testing.assert_array_equal(a.indices, b.indices)


def test_forgetting_counts_transitions():
    correct = np.array([[1, 0, 1, 0], [0, 0, 1, 1], [1, 0, 1, 0], [0, 0, 0, 1]], dtype=bool)  # [epochs, n]
    np.testing.assert_array_equal(forgetting_scores(correct, "zero"), [2, 0, 1, 1])
    np.testing.assert_array_equal(forgetting_scores(correct, "max"), [2, 3, 1, 1])  # never learned ranks first
    sel = select("forgetting", correct=correct, budget=2)
    assert sel.indices.tolist() == [1, 0]


def test_el2n_and_aum_values():
    probs = np.array([[0.9, 0.1], [0.2, 0.8]])
    y = np.array([0, 0])
    np.testing.assert_allclose(el2n_scores(probs, y), [np.sqrt(0.02), np.sqrt(1.28)])
    np.testing.assert_allclose(aum_scores(np.stack([probs, probs]), y), [0.8, -0.6])
    assert select("el2n", probs=probs, labels=y, budget=1, class_balanced=False).indices.tolist() == [1]


def test_grand_closed_form_matches_autograd():
    torch.manual_seed(0)
    emb = torch.randn(6, 5)
    head = torch.nn.Linear(5, 3)
    y = torch.tensor([0, 1, 2, 0, 1, 2])
    norms = []
    for i in range(6):  # autograd oracle, one sample at a time
        head.zero_grad()
        torch.nn.functional.cross_entropy(head(emb[i : i + 1]), y[i : i + 1]).backward()
        norms.append(torch.cat([head.weight.grad.flatten(), head.bias.grad]).norm().item())
    probs = torch.softmax(head(emb), -1).detach().numpy()
    np.testing.assert_allclose(grand_scores(probs, y.numpy(), emb.numpy()), norms, rtol=1e-5)


def test_ccs_stratification():
    rng = np.random.default_rng(0)
    scores = np.concatenate([np.linspace(0, 0.9, 900), np.linspace(9.1, 10, 100)])  # strata [0,1) .. [9,10]
    picked, info = ccs_sample(scores, 100, rng, beta=0.0, n_strata=10)
    assert picked.size == np.unique(picked).size == 100
    # Stratified: both dense regions get equal shares although one holds 9x more items.
    assert (scores[picked] > 5).sum() == 50
    assert sum(info["strata_budgets"]) == 100 and info["strata_sizes"][0] == 900
    assert all(b <= s for b, s in zip(info["strata_budgets"], info["strata_sizes"]))
    cut, info = ccs_sample(scores, 100, rng, beta=0.1, hard="high", n_strata=10)
    assert scores[cut].max() < 9 and info["n_cut"] == 100  # the 10% highest (hardest) were dropped
    low, _ = ccs_sample(scores, 50, rng, beta=0.5, hard="low", n_strata=10)
    assert scores[low].min() >= np.sort(scores)[500]


def test_ccs_rejects_budget_above_kept_pool():
    with pytest.raises(ValueError, match="left after the hard cut"):
        select("ccs", scores=np.arange(10.0), budget=8, beta=0.5)


def test_longest_from_texts():
    texts = ["a", "abcd", "ab", "abcdef"]
    assert select("longest", texts=texts, budget=2).indices.tolist() == [3, 1]
    assert select("longest", lengths=[3, 1, 2], budget=1, prefer="low").indices.tolist() == [1]


# --------------------------------------------------------------------------------------------- SAE selection


def test_sae_greedy_coverage_beats_random_subsets():
    rng = np.random.default_rng(0)
    acts = sp.random(400, 256, density=0.03, random_state=1, format="csr", dtype=np.float32)
    sel = select("sae-greedy", activations=acts, budget=20)
    coverage = sel.metadata["info"]["coverage"]
    assert coverage == coverage_of(acts, sel.indices)
    assert sel.metadata["info"]["coverage_curve"][-1] == coverage
    random_cov = [coverage_of(acts, rng.choice(400, 20, replace=False)) for _ in range(50)]
    assert coverage >= max(random_cov)


def test_sae_greedy_from_trained_sae_and_threshold():
    from datacomp.selectors import train_sae

    x = np.random.default_rng(0).normal(size=(300, 8)).astype(np.float32)
    sae = train_sae(x, n_latents=32, k=4, steps=20, batch_size=100, progress=False)
    sel = select("sae-greedy", x, budget=10, sae=sae)
    direct = select("sae-greedy", activations=sae.activations(x), budget=10)
    np.testing.assert_array_equal(sel.indices, direct.indices)
    assert sel.metadata["cost"]["sae_train"]["steps"] == 20
    high = select("sae-greedy", activations=sae.activations(x), budget=10, threshold=1e9)
    assert high.metadata["info"]["coverage"] == 0


def brute_scan(unit_dense, order, delta, budget):
    chosen = []
    for i in order:
        if all(unit_dense[i] @ unit_dense[j] < delta for j in chosen):
            chosen.append(i)
        if len(chosen) == budget:
            break
    return chosen


@pytest.mark.parametrize("delta", [0.05, 0.3, 0.7])
def test_diverse_scan_matches_pairwise_loop(delta):
    rng = np.random.default_rng(2)
    dense = rng.random((200, 30)) * (rng.random((200, 30)) < 0.15)
    unit = dense / np.maximum(np.linalg.norm(dense, axis=1, keepdims=True), 1e-12)
    order = rng.permutation(200)
    picked, sims, _ = diverse_scan(sp.csr_matrix(unit), order, delta, 40, block=16)
    assert picked.tolist() == brute_scan(unit, order, delta, 40)
    assert np.all(sims < delta)


def test_sae_simscale_hits_budget_exactly_with_bisection():
    acts = sp.random(300, 64, density=0.08, random_state=3, format="csr", dtype=np.float32)
    sel = select("sae-simscale", activations=acts, budget=25)
    info = sel.metadata["info"]
    assert len(sel) == 25 and info["exact"] and info["filled"] == 0
    unit = acts.toarray() / np.maximum(np.linalg.norm(acts.toarray(), axis=1, keepdims=True), 1e-12)
    gram = unit[sel.indices] @ unit[sel.indices].T
    assert gram[np.triu_indices(25, 1)].max() < info["delta"]
    # At a slightly smaller delta the same scan cannot reach the budget (bisection bracket).
    order = np.lexsort((np.arange(300), -np.asarray(acts.sum(axis=1)).ravel(), -np.diff(acts.indptr)))
    assert len(brute_scan(unit, order, info["delta"] - 2e-4, 25)) < 25


def test_sae_simscale_fills_when_exact_is_impossible():
    acts = sp.csr_matrix(np.repeat(np.eye(3, dtype=np.float32), 4, axis=0))  # 3 directions, 4 copies each
    sel = select("sae-simscale", activations=acts, budget=5)
    info = sel.metadata["info"]
    assert not info["exact"] and info["filled"] == 2 and len(sel) == 5 == np.unique(sel.indices).size
    assert sel.scores[-2:].tolist() == [1.0, 1.0]


def test_sae_simscale_orders_topk_ties_by_activation_mass():
    # Every row has exactly 2 active latents (as a TopK SAE gives); mass decides the scan order.
    acts = sp.csr_matrix(np.array([[1, 1, 0, 0], [0, 0, 5, 5], [3, 0, 3, 0], [0, 2, 0, 2]], dtype=np.float32))
    sel = select("sae-simscale", activations=acts, budget=2, delta=0.99)
    assert sel.indices.tolist() == [1, 2]


def test_sae_threshold_quantile_makes_activated_sets_vary():
    acts = sp.csr_matrix(np.array([[1, 2, 0, 0], [0, 0, 5, 6], [4, 0, 3, 0], [0, 7, 0, 8]], dtype=np.float32))
    sel = select("sae-simscale", activations=acts, budget=2, threshold_quantile=0.5)
    assert sel.metadata["prepare"]["threshold"] == pytest.approx(4.5)
    greedy = select("sae-greedy", activations=acts, budget=2, threshold_quantile=0.5)
    assert greedy.metadata["prepare"]["mean_active"] == pytest.approx(1.0)
    with pytest.raises(ValueError, match="threshold_quantile must be in"):
        select("sae-greedy", activations=acts, budget=2, threshold_quantile=1.5)


def test_sae_simscale_order_by_length():
    acts = sp.csr_matrix(np.eye(4, dtype=np.float32))
    sel = select("sae-simscale", activations=acts, budget=2, order_by="length", lengths=[1, 5, 3, 2])
    assert sel.indices.tolist() == [1, 2]
