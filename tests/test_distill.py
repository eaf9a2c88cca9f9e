"""Distillers in-process: presets, multi-formation, pool, NCFM/DM iterations, outputs, rejection paths, NaN stop."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from datacomp.data import load_dataset
from datacomp.distillers import dm as dm_module
from datacomp.distillers import ncfm as ncfm_module
from datacomp.distillers.base import Job
from datacomp.distillers.multiformation import decode, encode_mosaic, resolve_factor
from datacomp.distillers.ncfm import NCFMDistiller, ncfm_loss
from datacomp.distillers.pool import PoolSpec, build_pool
from datacomp.distillers.presets import (PRESETS, config_dict, config_from_dict, get_config, preset_differences,
                                        resolve_native_bf16)
from datacomp.distillers import DistillResult, distill
from datacomp.distillers.loop import DistillationDiverged
from datacomp.errors import ConfigError, RunDirError
from datacomp.models import create_model
from datacomp.synset import SyntheticSet

NUM_CLASSES = 4
TINY_NCFM = {"pool_size": 1, "pool_epochs": 1, "pool_min_steps": 0, "real_batch": 12, "num_freqs": 64, "factor": 2}


def write_tiny_npz(folder: Path) -> str:
    """A 4-class 8x8 grey dataset whose classes differ by a bright quadrant; returns its ``npz:PATH`` name."""
    rng = np.random.default_rng(0)

    def split(per_class: int) -> tuple[np.ndarray, np.ndarray]:
        x = rng.integers(0, 60, size=(NUM_CLASSES * per_class, 8, 8), dtype=np.uint8)
        y = np.repeat(np.arange(NUM_CLASSES), per_class)
        for c in range(NUM_CLASSES):
            r, q = divmod(c, 2)
            x[y == c, 4 * r : 4 * r + 4, 4 * q : 4 * q + 4] += 150
        order = rng.permutation(len(y))
        return x[order], y[order]

    x_train, y_train = split(24)
    x_test, y_test = split(8)
    path = folder / "tiny.npz"
    np.savez(path, x_train=x_train, y_train=y_train, x_test=x_test, y_test=y_test)
    return f"npz:{path}"


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> tuple[str, str]:
    folder = tmp_path_factory.mktemp("tiny")
    return write_tiny_npz(folder), str(folder / "pool")


def run_tiny(tiny, out: Path, method: str = "ncfm", **kwargs):
    name, pool_dir = tiny
    overrides = {"ncfm": dict(TINY_NCFM), "dm": {"real_batch": 12}}.get(method, {})
    overrides.update(kwargs.pop("overrides", {}))
    args = dict(method=method, ipc=1, preset="cpu-quick", out=out, overrides=overrides, eval_runs=0,
                checkpoint_every=2, pool_dir=pool_dir, quiet=True, device="cpu")
    args.update(kwargs)
    return distill(name, **args)


# ---------------------------------------------------------------------------------------------------- presets
def test_presets_encode_paper_and_released_code() -> None:
    paper, official = PRESETS["ncfm"]["paper"], PRESETS["ncfm"]["official"]
    assert (paper.sampler, paper.num_freqs, paper.real_sampling) == ("learned", 1024, "random")
    assert (official.sampler, official.num_freqs, official.real_sampling, official.real_batch) == ("gaussian", 4096, "first", 1024)
    for cfg in (paper, official):
        assert (resolve_factor(cfg.factor, (32, 32)), cfg.optimizer, cfg.lr_img, cfg.weight_decay, cfg.loss_scale, cfg.pool_size) == (2, "adamw", 1e-3, 5e-4, 300.0, 20)
        assert cfg.calibration and cfg.init == "mosaic" and cfg.augment == "color_crop_cutout"
    dm = PRESETS["dm"]["paper"]
    assert (dm.lr_img, dm.momentum, dm.real_batch, dm.iterations) == (1.0, 0.5, 256, 20000)
    assert set(preset_differences("ncfm")["official"]) == {"sampler", "num_freqs", "real_sampling"}


def test_cpu_quick_image_step_is_adjusted_per_dataset_and_overridable() -> None:
    assert get_config("ncfm", "cpu-quick").lr_img == 1e-3
    assert get_config("ncfm", "cpu-quick", dataset="cifar10").lr_img == 1e-3
    assert get_config("ncfm", "cpu-quick", dataset="digits").lr_img == 1e-2
    assert get_config("ncfm", "cpu-quick", dataset="digits", ipc=10).lr_img == 1e-2
    assert get_config("ncfm", "cpu-quick", dataset="digits", ipc=1).lr_img == 5e-3  # per (dataset, IPC)
    assert get_config("ncfm", "cpu-quick", dataset="digits", ipc=1, lr_img=0.02).lr_img == 0.02
    assert get_config("ncfm", "cpu-quick", dataset="cifar10", ipc=1).lr_img == 1e-3
    assert get_config("ncfm", "cpu-quick", dataset="digits", lr_img="0.005").lr_img == 0.005
    assert get_config("ncfm", "paper", dataset="digits").lr_img == 1e-3


def test_get_config_parses_cli_strings() -> None:
    cfg = get_config("ncfm", "cpu-quick", iterations="7", calibration="false", alpha="0.9", sampler="gaussian")
    assert (cfg.iterations, cfg.calibration, cfg.alpha, cfg.sampler) == (7, False, 0.9, "gaussian")


@pytest.mark.parametrize(
    ("method", "preset", "overrides", "match"),
    [
        ("mtt", "paper", {}, "unknown distillation method .mtt.; choose one of ncfm, dm, random"),
        ("ncfm", "fast", {}, "unknown preset"),
        ("ncfm", "paper", {"temperature": 1}, "unknown ncfm setting"),
        ("ncfm", "paper", {"alpha": 1.5}, "alpha must lie in"),
        ("ncfm", "paper", {"num_freqs": 40}, "multiple of 16"),
        ("ncfm", "paper", {"sampler": "uniform"}, "sampler must be"),
        ("ncfm", "paper", {"iterations": "2.5"}, "iterations must be a int"),
        ("ncfm", "paper", {"calibration": "maybe"}, "calibration must be a boolean"),
        ("ncfm", "paper", {"views": 0}, "views must be >= 1"),
        ("ncfm", "paper", {"cf_bf16": "maybe"}, "cf_bf16 must be auto, on or off"),
        ("ncfm", "paper", {"views": 2, "augment": "none"}, "needs augmentation"),
        ("dm", "paper", {"momentum": 1.0}, "momentum must be in"),
    ],
)
def test_get_config_rejects(method: str, preset: str, overrides: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        get_config(method, preset, **overrides)


# ---------------------------------------------------------------------------------------------------- multi-formation
def test_mosaic_round_trip_recovers_downsampled_images() -> None:
    gen = torch.Generator().manual_seed(0)
    real = torch.rand(8, 3, 16, 16, generator=gen)
    mosaics = encode_mosaic(real, 2)
    assert mosaics.shape == (2, 3, 16, 16)
    decoded = decode(mosaics, 2)
    assert decoded.shape == (8, 3, 16, 16)
    # Tile k of mosaic 0 is real image k downsampled: decoding gives back a blurred copy of it, in order.
    errors = (decoded[:, None] - real[None]).abs().mean(dim=(2, 3, 4))
    assert torch.equal(errors.argmin(dim=1), torch.arange(8))
    torch.testing.assert_close(encode_mosaic(real, 1), real)


@pytest.mark.parametrize(("factor", "size", "expected"), [(0, (32, 32), 2), (0, (28, 28), 2), (0, (8, 8), 1),
                                                      (0, (15, 16), 1), (2, (8, 8), 2), (1, (32, 32), 1)])
def test_auto_factor_keeps_tiles_of_eight_pixels(factor: int, size: tuple, expected: int) -> None:
    assert resolve_factor(factor, size) == expected


def test_encode_mosaic_rejects_bad_factor() -> None:
    with pytest.raises(ValueError, match="does not fit"):
        encode_mosaic(torch.rand(9, 1, 8, 8), 3)
    with pytest.raises(ValueError, match="multiple of factor"):
        encode_mosaic(torch.rand(3, 1, 8, 8), 2)


# ---------------------------------------------------------------------------------------------------- loss
def test_ncfm_loss_scales_and_normalises() -> None:
    gen = torch.Generator().manual_seed(1)
    real, syn, freqs = torch.randn(10, 6, generator=gen), torch.randn(4, 6, generator=gen), torch.randn(32, 6, generator=gen)
    base = ncfm_loss(real, syn, freqs, scale=1.0)
    torch.testing.assert_close(ncfm_loss(real, syn, freqs, scale=300.0), 300 * base)
    torch.testing.assert_close(ncfm_loss(5 * real, 0.1 * syn, freqs, scale=1.0), base)  # scale-free features


# ---------------------------------------------------------------------------------------------------- pool
def test_pool_is_cached_and_blends(tiny) -> None:
    name, pool_dir = tiny
    ds = load_dataset(name)
    spec = PoolSpec("convnet-3-in", epochs=1, min_steps=0, lr=0.01, batch=128)
    pool = build_pool(ds, spec, 1, root=pool_dir, progress=False)
    again = build_pool(ds, spec, 1, root=pool_dir, progress=False)
    assert again.infos[0]["cached"]
    for k in pool.finals[0]:
        torch.testing.assert_close(pool.finals[0][k], again.finals[0][k])
    assert "pool-training" in again.cost().names() and again.cost()["pool-training"].one_off
    net = create_model("convnet-3-in", 1, NUM_CLASSES, (8, 8))
    pool.blend_into(net, 0, 0.25)
    key = "features.0.weight"
    expected = 0.25 * pool.inits[0][key] + 0.75 * pool.finals[0][key]
    torch.testing.assert_close(net.state_dict()[key], expected)


def test_pool_cache_key_hashes_the_whole_training_split(tiny) -> None:
    """Swapping two training images keeps every sum; the pool trained on the old split must not be reused."""
    from dataclasses import replace

    from datacomp.distillers.pool import pool_folder

    ds = load_dataset(tiny[0])
    x = ds.train_x.clone()
    x[[0, 1]] = x[[1, 0]]
    spec = PoolSpec("convnet-3-in", epochs=1, min_steps=0, lr=0.01, batch=128)
    edited = replace(ds, train_x=x) if hasattr(ds, "__dataclass_fields__") else None
    if edited is None:
        edited = load_dataset(tiny[0])
        edited.train_x = x
    assert pool_folder("/p", ds, spec) != pool_folder("/p", edited, spec)
    assert pool_folder("/p", ds, spec) == pool_folder("/p", load_dataset(tiny[0]), spec)


# ---------------------------------------------------------------------------------------------------- distillers
def _distiller(tiny, **overrides) -> NCFMDistiller:
    name, pool_dir = tiny
    ds = load_dataset(name)
    cfg = get_config("ncfm", "cpu-quick", **{**TINY_NCFM, **overrides})
    pool = build_pool(ds, PoolSpec("convnet-3-in", 1, 0, 0.01, 128), 1, root=pool_dir, progress=False)
    return NCFMDistiller(cfg, Job(ds, list(range(NUM_CLASSES)), 2, "convnet-3-in", seed=0), pool)


@pytest.mark.parametrize("cf_bf16", [False, True])
def test_ncfm_step_updates_images_and_psi(tiny, cf_bf16: bool, monkeypatch) -> None:
    # One class per group (SYN_CHUNK = decoded images of one class): psi's gradient accumulates over several group
    # backwards, with cf_bf16 through one bfloat16 copy of the frequencies shared by every group.
    monkeypatch.setattr(ncfm_module, "SYN_CHUNK", 8)
    distiller = _distiller(tiny, sampler="learned", sampler_lr=1e-2, cf_bf16=cf_bf16)
    assert len(distiller._class_groups()) == NUM_CLASSES
    images = distiller.images.detach().clone()
    psi = [p.detach().clone() for p in distiller.sampler.parameters()]
    losses = distiller.step(0)
    assert losses.shape == (NUM_CLASSES,) and torch.isfinite(losses).all()
    assert not torch.equal(distiller.images.detach(), images)
    assert all(not torch.equal(a, b.detach()) for a, b in zip(psi, distiller.sampler.parameters()))
    assert distiller.images.shape == (NUM_CLASSES * 2, 1, 8, 8)


@pytest.mark.parametrize("views", [1, 3])
def test_ncfm_views_share_each_draw_between_a_real_chunk_and_the_synthetic_images(tiny, views: int) -> None:
    distiller = _distiller(tiny, sampler="gaussian", views=views)
    calls: list[tuple[int, int]] = []
    augment = distiller.augment

    def spy(x, seed):
        calls.append((len(x), seed))
        return augment(x, seed=seed)

    distiller.augment = spy
    sizes: list[int] = []
    forward_features = distiller.match_net.forward_features
    distiller.match_net.forward_features = lambda x: sizes.append(len(x)) or forward_features(x)
    distiller.config = distiller.config.__class__(**{**distiller.config.__dict__, "calibration": False})
    losses = distiller.step(0)
    assert losses.shape == (NUM_CLASSES,) and torch.isfinite(losses).all()
    decoded = 2 * 4  # ipc 2, factor 2
    real_calls, syn_calls = calls[: NUM_CLASSES * views], calls[NUM_CLASSES * views :]
    # Real: each class's batch of 12 in `views` chunks, one seed each; synthetic: every decoded image per seed.
    assert [n for n, _ in real_calls] == [len(c) for c in torch.arange(12).tensor_split(views)] * NUM_CLASSES
    assert syn_calls == [(decoded, s) for _, s in real_calls]
    assert len({s for _, s in real_calls}) == NUM_CLASSES * views
    assert sum(sizes) == NUM_CLASSES * (12 + views * decoded)  # real images once, synthetic once per view


def test_ncfm_rejects_more_views_than_real_images(tiny) -> None:
    with pytest.raises(ValueError, match="views=13 exceeds the real images per class per iteration"):
        _distiller(tiny, views=13)


def test_ncfm_init_is_real_mosaic(tiny) -> None:
    distiller = _distiller(tiny)
    ds = distiller.dataset
    first = ds.train_x[ds.train_y == 0][:8]  # init_sampling="first": first 4*ipc images of the class
    torch.testing.assert_close(distiller.images[:2].detach(), encode_mosaic(first, 2))


@pytest.mark.parametrize("step_mode", ["per-class", "joint"])
def test_class_split_matches_single_process(tiny, step_mode: str) -> None:
    """Processes that distil disjoint classes follow the single-process trajectory (gaussian sampler: no psi sync)."""
    name, pool_dir = tiny
    ds = load_dataset(name)
    cfg = get_config("ncfm", "cpu-quick", **{**TINY_NCFM, "sampler": "gaussian", "step_mode": step_mode})
    pool = build_pool(ds, PoolSpec("convnet-3-in", 1, 0, 0.01, 128), 1, root=pool_dir, progress=False)
    make = lambda classes: NCFMDistiller(cfg, Job(ds, classes, 1, "convnet-3-in", seed=3), pool)
    whole, part_a, part_b = make([0, 1, 2, 3]), make([0, 1]), make([2, 3])
    for it in range(3):
        losses = whole.step(it)
        torch.testing.assert_close(torch.cat([part_a.step(it), part_b.step(it)]), losses, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(torch.cat([part_a.images, part_b.images]).detach(), whole.images.detach(),
                               rtol=1e-4, atol=1e-5)


def test_chunked_and_bf16_real_features_match_one_batch() -> None:
    from datacomp.distillers.base import features_no_grad

    net = create_model("convnet-3-in", 1, NUM_CLASSES, (8, 8)).requires_grad_(False)
    x = torch.randn(13, 1, 8, 8)
    with torch.no_grad():
        whole = net.forward_features(x)
    torch.testing.assert_close(features_no_grad(net, x, chunk=5), whole, rtol=1e-4, atol=1e-5)
    half = features_no_grad(net, x, chunk=5, bf16=True)
    assert half.dtype == torch.float32
    assert (half - whole).norm() / whole.norm() < 0.05


@pytest.mark.parametrize("key", ["syn_bf16", "real_bf16"])
@pytest.mark.parametrize("method", ["ncfm", "dm"])
def test_bf16_passes_give_the_same_update_direction(tiny, method: str, key: str) -> None:
    """syn_bf16 / real_bf16 only change precision: the first image update points the same way as in float32."""
    name, pool_dir = tiny
    ds = load_dataset(name)
    job = Job(ds, list(range(NUM_CLASSES)), 1, "convnet-3-in", seed=3)
    updates = []
    for on in (False, True):
        switches = {"real_bf16": "off", "syn_bf16": "off", key: on}
        if method == "ncfm":
            cfg = get_config("ncfm", "cpu-quick", **{**TINY_NCFM, "sampler": "gaussian", "step_mode": "joint",
                                                     "optimizer": "sgd", "momentum": 0.0, **switches})
            pool = build_pool(ds, PoolSpec("convnet-3-in", 1, 0, 0.01, 128), 1, root=pool_dir, progress=False)
            distiller = NCFMDistiller(cfg, job, pool)
        else:
            cfg = get_config("dm", "cpu-quick", real_batch=12, **switches)
            distiller = dm_module.DMDistiller(cfg, job)
        before = distiller.images.detach().clone()
        assert torch.isfinite(distiller.step(0)).all()
        updates.append((distiller.images.detach() - before).flatten())
    cosine = torch.nn.functional.cosine_similarity(updates[0], updates[1], dim=0)
    assert cosine > 0.95, f"bf16 update direction differs from float32 (cosine {cosine:.3f})"


def test_dm_step_reduces_mean_embedding_distance(tiny) -> None:
    name, _ = tiny
    ds = load_dataset(name)
    cfg = get_config("dm", "cpu-quick", real_batch=24, augment="none", lr_img=0.1)
    distiller = dm_module.DMDistiller(cfg, Job(ds, list(range(NUM_CLASSES)), 2, "convnet-3-in", seed=0))
    assert distiller.space == "normalized"
    first = [float(distiller.step(i).sum()) for i in range(3)]
    later = [float(distiller.step(i).sum()) for i in range(3, 12)]
    assert np.mean(later[-3:]) < np.mean(first)


# ---------------------------------------------------------------------------------------------------- runner
@pytest.mark.parametrize("method", ["ncfm", "dm", "random"])
def test_run_writes_complete_run_directory(tiny, tmp_path: Path, method: str) -> None:
    result = run_tiny(tiny, tmp_path / method, method=method, overrides={"iterations": 0 if method == "random" else 3})
    assert isinstance(result, DistillResult) and result.out == tmp_path / method
    out = tmp_path / method
    for name in ("synset.safetensors", "grid.png", "loss.png", "log.json", "run.json"):
        assert (out / name).is_file(), name
    synset = SyntheticSet.load(out / "synset.safetensors")
    assert synset.images_per_class() == [1] * NUM_CLASSES
    meta = synset.metadata
    assert meta["method"] == method and meta["ipc"] == 1 and meta["seed"] == 0 and "versions" in meta
    assert meta["space"] == {"ncfm": "pixel", "dm": "normalized", "random": "pixel"}[method]
    assert meta["factor"] == (2 if method == "ncfm" else 1)
    run = json.loads((out / "run.json").read_text())
    assert run == json.loads(json.dumps(result.record.to_dict()))
    assert run["output_sha256"] == synset.content_digest() == result.synset.content_digest()
    assert run["kind"] == "distill" and run["num_items"] == NUM_CLASSES and run["full_train_size"] == 96
    phases = [p["name"] for p in run["cost"]["phases"]]
    if method != "random":
        assert "distillation" in phases
        assert len(json.loads((out / "log.json").read_text())["loss"]) == 3
    if method == "ncfm":
        assert "pool-training" in phases
        assert synset.training_tensors()[0].shape == (4 * NUM_CLASSES, 1, 8, 8)
        # cf_bf16 is recorded as what ran on this machine ("auto" resolved)
        assert run["config"]["config"]["cf_bf16"] == resolve_native_bf16(PRESETS["ncfm"]["cpu-quick"].cf_bf16, "cpu")


@pytest.mark.parametrize(("value", "expected"), [("auto", "auto"), (True, "on"), ("false", "off"), ("ON", "on"),
                                                 (0, "off")])
@pytest.mark.parametrize(("method", "key"), [("ncfm", "cf_bf16"), ("ncfm", "real_bf16"), ("ncfm", "syn_bf16"),
                                             ("dm", "real_bf16"), ("dm", "syn_bf16")])
def test_bf16_switches_accept_auto_on_off_and_booleans(method: str, key: str, value, expected: str) -> None:
    assert getattr(get_config(method, "cpu-quick", **{key: value}), key) == expected


@pytest.mark.parametrize(("method", "key", "default"), [("ncfm", "cf_bf16", "auto"), ("ncfm", "real_bf16", "auto"),
                                                        ("ncfm", "syn_bf16", "auto"), ("dm", "real_bf16", "auto"),
                                                        ("dm", "syn_bf16", "off")])
def test_bf16_switch_defaults_in_every_preset(method: str, key: str, default: str) -> None:
    assert all(getattr(get_config(method, preset), key) == default for preset in PRESETS[method])


@pytest.mark.parametrize("key", ["real_bf16", "syn_bf16"])
@pytest.mark.parametrize("method", ["ncfm", "dm"])
def test_bf16_switch_rejects_other_words(method: str, key: str) -> None:
    with pytest.raises(ConfigError, match=f"{key} must be auto, on or off"):
        get_config(method, "cpu-quick", **{key: "maybe"})


@pytest.mark.parametrize("key", ["real_bf16", "syn_bf16"])
@pytest.mark.parametrize("method", ["ncfm", "dm"])
def test_records_without_a_bf16_switch_or_with_a_bool_read_as_what_ran(method: str, key: str) -> None:
    stored = config_dict(get_config(method, "cpu-quick"))
    del stored[key]  # written before the field existed (or was a switch): those runs were float32 there
    assert getattr(config_from_dict(method, stored), key) == "off"
    assert getattr(config_from_dict(method, {**stored, key: False}), key) == "off"
    assert getattr(config_from_dict(method, {**stored, key: True}), key) == "on"


@pytest.mark.parametrize("key", ["real_bf16", "syn_bf16"])
@pytest.mark.parametrize("method", ["ncfm", "dm"])
def test_bf16_switches_are_recorded_resolved(monkeypatch, method: str, key: str) -> None:
    import datacomp.runtime

    for cpu_bf16 in (False, True):
        monkeypatch.setattr(datacomp.runtime, "_cpu_bf16", cpu_bf16)
        cfg = get_config(method, "cpu-quick", **{key: "auto"}).for_run((8, 8), "cpu")
        assert getattr(cfg, key) == ("on" if cpu_bf16 else "off")


@pytest.mark.parametrize("method", ["ncfm", "dm"])
def test_a_distiller_built_directly_resolves_real_bf16(tiny, monkeypatch, method: str) -> None:
    """Not only distill(): a Distiller made from an ``auto`` config runs (and reports) the resolved switch."""
    import datacomp.runtime

    monkeypatch.setattr(datacomp.runtime, "_cpu_bf16", True)
    name, pool_dir = tiny
    ds = load_dataset(name)
    job = Job(ds, list(range(NUM_CLASSES)), 1, "convnet-3-in", seed=0)
    if method == "ncfm":
        pool = build_pool(ds, PoolSpec("convnet-3-in", 1, 0, 0.01, 128), 1, root=pool_dir, progress=False)
        distiller = NCFMDistiller(get_config("ncfm", "cpu-quick", **TINY_NCFM), job, pool)
    else:
        distiller = dm_module.DMDistiller(get_config("dm", "cpu-quick", real_batch=12), job)
    assert distiller.config.real_bf16 == "on"


@pytest.mark.parametrize("cpu_bf16", [False, True])
def test_cf_bf16_auto_follows_native_bf16(monkeypatch, cpu_bf16: bool) -> None:
    import datacomp.runtime

    monkeypatch.setattr(datacomp.runtime, "_cpu_bf16", cpu_bf16)
    assert resolve_native_bf16("auto", "cpu") == ("on" if cpu_bf16 else "off")
    assert resolve_native_bf16("off", "cpu") == "off" and resolve_native_bf16("on", "cpu") == "on"


def test_run_evaluates_with_baseline(tiny, tmp_path: Path) -> None:
    result = run_tiny(tiny, tmp_path / "e", overrides={"iterations": 2}, eval_runs=1, eval_protocol="smoke")
    record = result.record.to_dict()
    assert record["eval"]["protocol"] == "smoke" and len(record["eval"]["accuracies"]) == 1
    # The random baseline holds the set's STORED images per class (DD-Ranking's same IPC), not factor**2 x ipc.
    assert record["baseline"]["num_train_images"] == NUM_CLASSES
    assert record["eval"]["num_train_images"] == 4 * NUM_CLASSES  # factor 2: four decoded images per stored one
    assert result.ior == pytest.approx(result.eval.mean - result.baseline.mean)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"ipc": 0}, "ipc must be an integer >= 1"),
        ({"ipc": 25}, "exceeds the smallest class"),
        ({"method": "kip"}, "unknown distillation method 'kip'"),
        ({"preset": "quick"}, "unknown preset"),
        ({"model": "convnet-5-in"}, "cannot take the 8x8 images"),
        ({"overrides": {"factor": 3}}, "factor=3 does not fit"),
        ({"checkpoint_every": 0}, "checkpoint_every must be"),
        ({"eval_runs": 1, "eval_protocol": "fast"}, "unknown protocol"),
        ({"overrides": {"iterations": 2.5}}, "iterations must be a int"),
        ({"overrides": {"alpha": True}}, "alpha must be a float"),
        ({"device": "cuda:99"}, "--device"),
        ({"colour": 1}, r"unknown run option\(s\) \['colour'\]"),
        ({"resume": True}, "no complete checkpoint"),
        ({"resume": True, "overwrite": True}, "exclude each other"),
    ],
)
def test_run_rejects_bad_input(tiny, tmp_path: Path, kwargs: dict, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        run_tiny(tiny, tmp_path / "bad", **kwargs)
    assert not (tmp_path / "bad" / "checkpoints").exists() or not any((tmp_path / "bad" / "checkpoints").iterdir())


def test_existing_run_needs_resume_or_overwrite(tiny, tmp_path: Path) -> None:
    run_tiny(tiny, tmp_path / "r", overrides={"iterations": 2})
    with pytest.raises(RunDirError, match="already holds a run"):
        run_tiny(tiny, tmp_path / "r", overrides={"iterations": 2})
    with pytest.raises(ConfigError, match="different settings"):
        run_tiny(tiny, tmp_path / "r", overrides={"iterations": 4, "alpha": 0.9}, resume=True)
    extended = run_tiny(tiny, tmp_path / "r", overrides={"iterations": 4}, resume=True)  # only iterations may change
    log = json.loads((tmp_path / "r" / "log.json").read_text())
    assert len(log["loss"]) == 4 and {"iteration": 2, "event": "resumed"} in log["events"]
    assert extended.record.config["config"]["iterations"] == 4
    run_tiny(tiny, tmp_path / "r", overrides={"iterations": 1}, overwrite=True)
    assert len(json.loads((tmp_path / "r" / "log.json").read_text())["loss"]) == 1


def test_resume_accepts_checkpoints_written_before_new_config_fields(tiny, tmp_path: Path) -> None:
    """A checkpoint from before ``views`` existed, with ``cf_bf16`` stored as a bool, still resumes."""
    from datacomp.distillers import checkpoints

    out = tmp_path / "old"
    run_tiny(tiny, out, overrides={"iterations": 2})
    settings = json.loads((out / "run.json").read_text())["config"]
    old = {**settings, "config": {k: v for k, v in settings["config"].items() if k != "views"}}
    old["config"]["cf_bf16"] = old["config"]["cf_bf16"] == "on"
    assert checkpoints.comparable(old) == checkpoints.comparable(settings)
    changed = {**settings, "config": {**settings["config"], "alpha": 0.9}}
    assert checkpoints.comparable(changed) != checkpoints.comparable(settings)


def test_resume_refuses_a_float32_checkpoint_from_before_cf_bf16_under_bf16(tiny, tmp_path: Path) -> None:
    """A checkpoint without ``cf_bf16`` ran the characteristic function in float32: it is ``off``, not the default."""
    from datacomp.distillers import checkpoints

    run_tiny(tiny, tmp_path / "r", overrides={"iterations": 1, "cf_bf16": "on"})
    settings = json.loads((tmp_path / "r" / "run.json").read_text())["config"]
    old = {**settings, "config": {k: v for k, v in settings["config"].items() if k != "cf_bf16"}}
    assert checkpoints.comparable(old) != checkpoints.comparable(settings)
    assert checkpoints.comparable(old) == checkpoints.comparable(
        {**settings, "config": {**settings["config"], "cf_bf16": "off"}})


@pytest.mark.parametrize("stored, expected", [
    ({}, {"cf_bf16": "off", "views": 1}),  # before either field existed: float32, one view
    ({"cf_bf16": True}, {"cf_bf16": "on"}),  # bool spelling
    ({"cf_bf16": "auto", "views": 2}, {"cf_bf16": "auto", "views": 2}),
])
def test_config_from_dict_reads_old_records_as_what_they_ran(stored, expected) -> None:
    from datacomp.distillers.presets import config_dict, config_from_dict, get_config

    record = {k: v for k, v in config_dict(get_config("ncfm", "cpu-quick")).items() if k not in ("cf_bf16", "views")}
    cfg = config_from_dict("ncfm", {**record, **stored})
    assert {k: getattr(cfg, k) for k in expected} == expected
    assert cfg.iterations == get_config("ncfm", "cpu-quick").iterations  # the record wins over the paper defaults


@pytest.mark.parametrize("record, match", [
    ({"method": "dm"}, "stored config is for method 'dm', not 'ncfm'"),
    ({"gamma": 1}, r"unknown ncfm setting\(s\) \['gamma'\]"),
])
def test_config_from_dict_rejects_foreign_records(record, match) -> None:
    from datacomp.distillers.presets import config_from_dict

    with pytest.raises(ValueError, match=match):
        config_from_dict("ncfm", record)


def test_nan_loss_stops_and_keeps_last_good_checkpoint(tiny, tmp_path: Path, monkeypatch) -> None:
    real_loss = dm_module.mean_embedding_loss
    calls = {"n": 0}

    def failing_loss(real, syn):
        calls["n"] += 1
        value = real_loss(real, syn)
        return value * float("nan") if calls["n"] >= 4 else value

    monkeypatch.setattr(dm_module, "mean_embedding_loss", failing_loss)
    out = tmp_path / "nan"
    with pytest.raises(DistillationDiverged, match=r"non-finite at iteration 4 \(synthetic images, loss; loss nan\): stopped; the last good "
                                                   r"checkpoint \(iteration 2\)"):
        run_tiny(tiny, out, method="dm", overrides={"iterations": 6})
    assert (out / "checkpoints" / "ckpt-r0of1-it2.pt").is_file()
    assert not (out / "synset.safetensors").exists()
    monkeypatch.setattr(dm_module, "mean_embedding_loss", real_loss)
    run_tiny(tiny, out, method="dm", overrides={"iterations": 6}, resume=True)
    assert SyntheticSet.load(out / "synset.safetensors").metadata["iterations"] == 6



# ------------------------------------------------------------------------------------------- reliability of the run
def _checkpoint_files(out: Path) -> list[str]:
    return sorted(p.name for p in (out / "checkpoints").glob("ckpt-*.pt"))


def test_huge_image_step_stops_at_once_without_writing_a_checkpoint(tiny, tmp_path: Path) -> None:
    """lr_img=1e30 makes the images (and psi) non-finite in the first iteration although the loss of that
    iteration is finite: the guard checks the images and the sampler, not only the loss."""
    out = tmp_path / "huge"
    with pytest.raises(DistillationDiverged, match=r"non-finite at iteration 1 \(synthetic images.*no checkpoint was "
                                                   r"written yet.*lr_img"):
        run_tiny(tiny, out, overrides={"iterations": 4, "lr_img": 1e30}, checkpoint_every=1)
    assert _checkpoint_files(out) == []
    assert not (out / "synset.safetensors").exists()


@pytest.mark.parametrize("what", ["images", "sampler"])
def test_non_finite_state_with_finite_loss_keeps_the_last_finite_checkpoints(tiny, tmp_path: Path, monkeypatch,
                                                                             what: str) -> None:
    real_step = ncfm_module.NCFMDistiller.step

    def poisoned(self, iteration):
        losses = real_step(self, iteration)
        if iteration == 4:  # the fifth iteration: the loss stays finite, the state does not
            target = self.images if what == "images" else next(self.sampler.parameters())
            with torch.no_grad():
                target.view(-1)[0] = float("inf")
        return losses

    monkeypatch.setattr(ncfm_module.NCFMDistiller, "step", poisoned)
    out = tmp_path / what
    label = "synthetic images" if what == "images" else "frequency sampler parameters"
    with pytest.raises(DistillationDiverged, match=rf"iteration 5 \({label}.*checkpoint \(iteration 4\)"):
        run_tiny(tiny, out, overrides={"iterations": 8}, checkpoint_every=1)
    assert _checkpoint_files(out) == ["ckpt-r0of1-it3.pt", "ckpt-r0of1-it4.pt"]  # rotation kept the finite ones
    state = torch.load(out / "checkpoints" / "ckpt-r0of1-it4.pt", weights_only=True)
    assert torch.isfinite(state["distiller"]["images"]).all()
    assert all(torch.isfinite(v).all() for v in state["distiller"]["sampler"].values() if v.is_floating_point())


@pytest.mark.parametrize("damage", ["truncate", "garbage"])
def test_resume_falls_back_to_the_newest_readable_checkpoint(tiny, tmp_path: Path, capsys, damage: str) -> None:
    reference = run_tiny(tiny, tmp_path / "ref", method="dm", overrides={"iterations": 6})
    out = tmp_path / "r"
    run_tiny(tiny, out, method="dm", overrides={"iterations": 4})
    (out / "run.json").unlink()  # as if killed after the last checkpoint
    newest = out / "checkpoints" / "ckpt-r0of1-it4.pt"
    data = newest.read_bytes()
    newest.write_bytes(data[: len(data) // 2] if damage == "truncate" else b"not a checkpoint")
    capsys.readouterr()
    resumed = run_tiny(tiny, out, method="dm", overrides={"iterations": 6}, resume=True)
    err = capsys.readouterr().err
    assert "ckpt-r0of1-it4.pt is unreadable" in err and "resuming from iteration 2" in err
    log = json.loads((out / "log.json").read_text())
    assert {"iteration": 2, "event": "resumed"} in log["events"]
    assert resumed.synset.content_digest() == reference.synset.content_digest()


def test_resume_without_a_readable_checkpoint_is_a_clear_error(tiny, tmp_path: Path) -> None:
    from datacomp.errors import FormatError

    out = tmp_path / "r"
    run_tiny(tiny, out, method="dm", overrides={"iterations": 4})
    for path in (out / "checkpoints").glob("*.pt"):
        path.write_bytes(b"")
    with pytest.raises(FormatError, match=r"none of the checkpoints .* can be read \(iterations 4, 2\); start again "
                                          "with --overwrite"):
        run_tiny(tiny, out, method="dm", overrides={"iterations": 6}, resume=True)


def test_stale_temp_files_are_removed_and_a_killed_run_is_refused_without_resume(tiny, tmp_path: Path) -> None:
    out = tmp_path / "k"
    run_tiny(tiny, out, method="dm", overrides={"iterations": 2})
    (out / "run.json").unlink()  # a run killed after its checkpoint: only checkpoints/ remains
    stale = [out / "checkpoints" / ".ckpt-r0of1-it4.pt.x1y2.tmp", out / ".synset.safetensors.abc.tmp"]
    for path in stale:
        path.write_bytes(b"half")
    with pytest.raises(RunDirError, match="checkpoints of an unfinished run; pass --resume"):
        run_tiny(tiny, out, method="dm", overrides={"iterations": 4})
    run_tiny(tiny, out, method="dm", overrides={"iterations": 4}, resume=True)
    assert not any(path.exists() for path in stale)


def test_a_second_run_on_the_same_out_fails_fast(tiny, tmp_path: Path) -> None:
    from datacomp.io import RunDir

    with RunDir(tmp_path / "busy"):
        with pytest.raises(RunDirError, match="in use by another datacomp run"):
            run_tiny(tiny, tmp_path / "busy", method="dm", overrides={"iterations": 2})


@pytest.mark.parametrize("signum, code", [(2, 130), (15, 143)])
def test_signal_writes_a_checkpoint_and_names_the_resume_command(tiny, tmp_path: Path, monkeypatch, signum: int,
                                                                 code: int) -> None:
    import os

    from datacomp.distillers.loop import Interrupted

    reference = run_tiny(tiny, tmp_path / "ref", method="dm", overrides={"iterations": 6})
    real_step = dm_module.DMDistiller.step

    def interrupted(self, iteration):
        if iteration == 2:
            os.kill(os.getpid(), signum)
        return real_step(self, iteration)

    monkeypatch.setattr(dm_module.DMDistiller, "step", interrupted)
    out = tmp_path / "sig"
    with pytest.raises(Interrupted, match=r"received: stopped after iteration 3 of 6.*Continue with: RESUME") as info:
        run_tiny(tiny, out, method="dm", overrides={"iterations": 6}, checkpoint_every=4, resume_hint="RESUME")
    assert info.value.exit_code == code
    assert _checkpoint_files(out) == ["ckpt-r0of1-it3.pt"]  # written on the signal, between the regular ones
    monkeypatch.setattr(dm_module.DMDistiller, "step", real_step)
    resumed = run_tiny(tiny, out, method="dm", overrides={"iterations": 6}, checkpoint_every=4, resume=True)
    assert resumed.synset.content_digest() == reference.synset.content_digest()


def test_random_method_draws_the_subset_command_s_subset(tiny, tmp_path: Path) -> None:
    from datacomp.cli import main
    from datacomp.evaluation import random_subset

    result = run_tiny(tiny, tmp_path / "rand", method="random", seed=5, ipc=3)
    main(["subset", "random", "--dataset", tiny[0], "--ipc", "3", "--seed", "5", "--out", str(tmp_path / "s.safetensors")])
    subset = SyntheticSet.load(tmp_path / "s.safetensors")
    assert result.synset.content_digest() == subset.content_digest()
    assert result.synset.content_digest() == random_subset(load_dataset(tiny[0]), 3, seed=5).content_digest()
    assert result.record.output_sha256 == subset.content_digest()


def test_registry_holds_one_entry_per_method() -> None:
    from datacomp.distillers import DISTILLERS
    from datacomp.distillers.configs import DMConfig, NCFMConfig, RandomConfig

    assert DISTILLERS.names() == ["ncfm", "dm", "random"]
    for name, config in (("ncfm", NCFMConfig), ("dm", DMConfig), ("random", RandomConfig)):
        entry = DISTILLERS.entry(name)
        assert entry.description and entry.info["config"] is config and entry.obj.method == name
        assert set(entry.info["presets"]) == {"paper", "official", "cpu-quick"}
        assert all(isinstance(c, config) for c in entry.info["presets"].values())
