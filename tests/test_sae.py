"""TopK SAE: training decreases the loss, AuxK revives dead latents, save/load, sparse outputs."""

import numpy as np
import pytest
import scipy.sparse as sp
import torch

from datacomp.selectors.sae import TopKSAE, default_lr, geometric_median, train_sae


def sparse_mixture(n=1500, d=16, m=24, active=2, sample_seed=0):
    """Items are sums of `active` random unit directions out of `m` (a dictionary an SAE can recover)."""
    dirs = np.random.default_rng(0).normal(size=(m, d))
    dirs /= np.linalg.norm(dirs, axis=1, keepdims=True)
    rng = np.random.default_rng(100 + sample_seed)
    codes = np.zeros((n, m))
    for _ in range(active):
        codes[np.arange(n), rng.integers(m, size=n)] += rng.uniform(1.0, 3.0, size=n)
    return (codes @ dirs + 0.01 * rng.normal(size=(n, d))).astype(np.float32)


@pytest.fixture(scope="module")
def data():
    return sparse_mixture()


@pytest.fixture(scope="module")
def trained(data):
    return train_sae(data, n_latents=32, k=2, steps=150, batch_size=256, seed=0, progress=False)


def test_loss_decreases(trained):
    fvu = np.array(trained.history["fvu"])
    assert len(fvu) == 150 and trained.history["steps"] == 150
    assert fvu[-20:].mean() < 0.5 * fvu[:5].mean()
    assert trained.reconstruction_fvu(sparse_mixture(n=300, sample_seed=1)) < 0.5  # held-out items


def test_recipe_invariants(trained, data):
    norms = torch.linalg.vector_norm(trained.W_dec, dim=0)
    torch.testing.assert_close(norms, torch.ones_like(norms), atol=1e-5, rtol=0)
    assert trained.config["lr"] == pytest.approx(default_lr(32))
    assert default_lr(131_072) == pytest.approx(7.07e-5, rel=1e-3)
    scaled = torch.as_tensor(data) * trained.input_scale
    assert float(torch.linalg.vector_norm(scaled, dim=1).mean()) == pytest.approx(4.0, rel=1e-4)  # sqrt(16)


def test_init_ties_encoder_to_decoder():
    sae = TopKSAE(8, 20, 3)
    sae.init_weights(torch.Generator().manual_seed(0))
    torch.testing.assert_close(sae.W_enc.data, sae.W_dec.data.T)
    torch.testing.assert_close(torch.linalg.vector_norm(sae.W_dec, dim=0), torch.ones(20))


def test_geometric_median_resists_outliers():
    pts = torch.cat([torch.zeros(50, 2), torch.full((5, 2), 100.0)])
    assert float(torch.linalg.vector_norm(geometric_median(pts))) < 1.0
    assert float(torch.linalg.vector_norm(pts.mean(0))) > 10.0


def test_auxk_revives_dead_latents(data):
    """Cripple half of the encoder rows so those latents never win the top-k: without AuxK they stay dead."""
    alive_counts = {}
    for alpha in (0.0, 1 / 32):
        base = train_sae(data, n_latents=32, k=2, steps=1, batch_size=256, seed=1, progress=False)
        with torch.no_grad():
            base.W_enc[16:] *= 0.02
        sae = train_sae(data, n_latents=32, k=2, steps=100, batch_size=256, seed=1, progress=False,
                        auxk_alpha=alpha, sae=base, dead_after=512)
        assert max(sae.history["dead_fraction"]) >= 0.4  # the crippled half was detected as dead
        alive_counts[alpha] = np.unique(sae.activations(data).indices).size
    assert alive_counts[0.0] <= 17
    assert alive_counts[1 / 32] >= alive_counts[0.0] + 6


def test_activations_are_sparse_topk(trained, data):
    acts = trained.activations(data[:100], batch_size=33)
    assert sp.isspmatrix_csr(acts) and acts.shape == (100, 32) and acts.dtype == np.float32
    assert np.diff(acts.indptr).max() <= 2 and acts.data.min() > 0
    dense = acts.toarray()
    pre = trained.pre_activations(torch.as_tensor(data[:100])).detach().numpy()
    top = np.sort(pre, axis=1)[:, -2:]
    np.testing.assert_allclose(np.sort(dense, axis=1)[:, -2:], np.maximum(top, 0), rtol=1e-5, atol=1e-6)
    sets = trained.activated_sets(data[:100], threshold=float(np.median(acts.data)))
    assert sets.dtype == bool and 0 < sets.nnz < acts.nnz


def test_save_load_roundtrip(trained, data, tmp_path):
    path = tmp_path / "sae.safetensors"
    trained.save(path)
    loaded = TopKSAE.load(path)
    assert loaded.config == {**trained.config, "d_in": 16, "n_latents": 32, "k": 2}
    assert loaded.history["fvu"] == pytest.approx(trained.history["fvu"])
    assert (loaded.activations(data[:50]) != trained.activations(data[:50])).nnz == 0
    assert [p.name for p in tmp_path.iterdir()] == ["sae.safetensors"]  # no temp file left behind


def test_load_rejects_foreign_file(tmp_path):
    from safetensors.torch import save_file

    save_file({"w": torch.zeros(2)}, str(tmp_path / "other.safetensors"))
    with pytest.raises(ValueError, match="not a datacomp TopKSAE"):
        TopKSAE.load(tmp_path / "other.safetensors")


def test_seed_determinism(data):
    a = train_sae(data[:400], n_latents=16, k=2, steps=10, batch_size=64, seed=3, progress=False)
    b = train_sae(data[:400], n_latents=16, k=2, steps=10, batch_size=64, seed=3, progress=False)
    torch.testing.assert_close(a.W_dec, b.W_dec)


@pytest.mark.parametrize(
    ("x", "kwargs", "match"),
    [
        (np.full((10, 4), np.nan), {}, "NaN or inf"),
        (np.zeros(10), {}, "2-D"),
        (np.zeros((1, 4)), {}, "at least 2 rows"),
        (np.zeros((10, 4)), {"steps": 5, "epochs": 1}, "either steps= or epochs="),
        (np.zeros((10, 4)), {"steps": 0}, "at least one step"),
        (np.zeros((10, 4)), {"k": 9}, "k must be in"),
    ],
)
def test_train_rejects_bad_input(x, kwargs, match):
    args = {"n_latents": 8, "k": 2, "steps": 2, "progress": False, **kwargs}
    with pytest.raises(ValueError, match=match):
        train_sae(x, **args)


def test_activations_reject_wrong_width(trained):
    with pytest.raises(ValueError, match="d_in=16"):
        trained.activations(np.zeros((3, 5)))
