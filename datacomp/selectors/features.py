"""Selection inputs for image datasets: model features and proxy training dynamics, cached on disk.

* :func:`image_features`: penultimate features (``model.forward_features``) of any registered model
  (:func:`datacomp.models.create_model`) on the dataset's *normalised* images. The model is randomly initialised with
  ``seed`` (as DM's feature extractors), optionally loaded from a safetensors state dict, and optionally trained as a
  proxy for ``proxy_epochs`` epochs with :func:`datacomp.evaluation.train_classifier` under an evaluation protocol
  (``quick`` by default: SGD 0.01, batch 256, no augmentation). Extraction runs in batches under
  ``torch.inference_mode()`` with a progress bar.
* :func:`proxy_dynamics`: :func:`datacomp.selectors.train_proxy` (DeepCore's ``EarlyTrain``: SGD 0.05, Nesterov,
  cosine) on the training split, giving the per-epoch probabilities, final probabilities and embeddings that
  forgetting / EL2N / GraNd / uncertainty / CCS use.

Both are cached as ``.npz`` (``allow_pickle=False``, written atomically) under :func:`datacomp.selectors.cache.default_cache_dir`, keyed by
a SHA-256 of everything that determines the result: dataset name, split and size, a SHA-256 of the full content of
the images and labels (:func:`datacomp.selectors.cache.data_digest`), the model spec, the weights file's SHA-256 (or the seed), and the proxy configuration.

Costs: phases ``feature-extraction`` (FLOPs sampled, one ``ph.step()`` per batch) and ``proxy-training`` (features'
proxy, via ``train_classifier``) go into the caller's ``CostLedger``; the dynamics carry their own ledger
(``ProxyDynamics.ledger``), which :func:`datacomp.selectors.select` merges into the selection's cost. A cache hit
replays the ledger recorded when the arrays were computed (the cost of producing them) and says so in ``from_cache``.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from datacomp.cost import CostLedger
from datacomp.data import ImageDataset
from datacomp.errors import ConfigError, DataError, MissingInputError, is_int
from datacomp.evaluation import TrainingRun, get_protocol, train_classifier
from datacomp.io import sha256_file
from datacomp.models import create_model

from .cache import Cache, cache_args, cached_arrays, data_digest
from .settings import with_overrides
from .proxy_training import ProxyDynamics, ProxySettings, train_proxy

__all__ = ["FeatureSettings", "ImageFeatures", "image_features", "proxy_dynamics"]



# --------------------------------------------------------------------------------------------- image features
@dataclass(frozen=True)
class FeatureSettings:
    """What produces the features: the model, its weights or seed, and an optional proxy training.

    Attributes:
        weights: optional safetensors state dict loaded into the model (strict).
        seed: seed of the initialisation and of the proxy's batch order.
        proxy_epochs: train the model on the training split for this many epochs first (0 = no training).
        proxy_protocol: :data:`datacomp.evaluation.PROTOCOLS` name (or Protocol) for that training (its epochs are
            overridden).
        batch_size: extraction batch size.
        model_kwargs: architecture options passed to ``create_model``.
    """

    weights: str | os.PathLike | None = None
    seed: int = 0
    proxy_epochs: int = 0
    proxy_protocol: Any = "quick"
    batch_size: int = 512
    model_kwargs: dict | None = None


@dataclass
class ImageFeatures:
    """Features of one dataset split.

    Attributes:
        features: ``float32 [N, D]`` penultimate features.
        labels: ``int64 [N]`` labels of the split.
        config: what produced them (dataset, model spec, weights, seed, proxy protocol); goes into run metadata.
        key: cache key.
        cache_path: the ``.npz`` file (``None`` with ``cache=False``).
        from_cache: whether the arrays were read from the cache.
        cost: the ledger dict of the computation (replayed from the cache on a hit).
    """

    features: np.ndarray
    labels: np.ndarray
    config: dict
    key: str
    cache_path: Path | None
    from_cache: bool
    cost: dict = field(default_factory=dict)


def _split(dataset: ImageDataset, split: str) -> tuple[torch.Tensor, torch.Tensor]:
    if split == "train":
        return dataset.train_x, dataset.train_y
    if split == "test":
        return dataset.test_x, dataset.test_y
    raise ConfigError(f"split must be 'train' or 'test', got {split!r}")


def _check_nonneg_int(value: Any, name: str) -> int:
    if not is_int(value) or value < 0:
        raise ConfigError(f"{name} must be an integer >= 0, got {value!r}")
    return int(value)


def _load_weights(model: torch.nn.Module, path: Path) -> None:
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        state = load_file(str(path))
    except (SafetensorError, OSError) as err:
        raise DataError(f"weights {path} is not a readable safetensors state dict: {err}") from err
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as err:
        first_line = str(err).strip().splitlines()[0] if str(err).strip() else "state dict mismatch"
        raise DataError(f"weights {path} do not fit model {model.spec['name']}: {first_line}") from err


@torch.inference_mode()
def _extract(model: torch.nn.Module, dataset: ImageDataset, x: torch.Tensor, batch_size: int, device: str,
             ledger: CostLedger, progress: bool) -> np.ndarray:
    model.eval()
    n = len(x)
    out = np.empty((n, int(model.feature_dim)), dtype=np.float32)
    with ledger.phase("feature-extraction", flops="sampled", device=device) as ph:
        for lo in tqdm(range(0, n, batch_size), desc="features", disable=not progress, leave=False):
            with ph.step():
                xb = dataset.normalize(x[lo : lo + batch_size]).to(device)  # normalised per batch: no full copy
                out[lo : lo + len(xb)] = model.forward_features(xb).flatten(1).float().cpu().numpy()
        ph.extra.update(samples_seen=n, model=model.spec["name"], feature_dim=int(out.shape[1]))
    return out


def image_features(dataset: ImageDataset, model: str = "convnet-3-in", *, split: str = "train", device: str = "cpu",
                   ledger: CostLedger | None = None, progress: bool = True, cache: Cache = True,
                   **settings: Any) -> ImageFeatures:
    """Penultimate features of ``model`` on ``dataset``'s ``split`` (module docstring).

    Args:
        dataset: the image dataset.
        model: registered model name (:func:`datacomp.models.list_models`).
        split: ``"train"`` (the selection pool) or ``"test"``.
        device: torch device.
        ledger: receives ``proxy-training`` and ``feature-extraction`` phases (replayed on a cache hit).
        progress: show progress bars.
        cache: True (``$DATACOMP_CACHE/features``), False (neither read nor write) or a cache folder.
        **settings: :class:`FeatureSettings` fields (``weights``, ``seed``, ``proxy_epochs``, ``proxy_protocol``,
            ``batch_size``, ``model_kwargs``).

    Raises:
        ConfigError: unknown model, split or setting, bad epochs/batch size.
        DataError: unreadable or mismatching weights. MissingInputError: ``weights`` does not exist.
    """
    s = with_overrides(FeatureSettings, None, settings, "image_features")
    proxy_epochs = _check_nonneg_int(s.proxy_epochs, "proxy_epochs")
    seed = _check_nonneg_int(s.seed, "seed")
    if _check_nonneg_int(s.batch_size, "batch_size") < 1:
        raise ConfigError("batch_size must be >= 1")
    x, y = _split(dataset, split)
    kwargs = dict(s.model_kwargs or {})
    probe = create_model(model, dataset.in_channels, dataset.num_classes, dataset.image_size, **kwargs)
    if not hasattr(probe, "forward_features"):
        raise ConfigError(f"model {model!r} has no forward_features; register it on datacomp.models.ClassifierBase")
    weights_path = Path(s.weights).expanduser() if s.weights is not None else None
    if weights_path is not None and not weights_path.is_file():
        raise MissingInputError(f"weights file {weights_path} does not exist (expected a safetensors state dict)")
    protocol = get_protocol(s.proxy_protocol, epochs=proxy_epochs) if proxy_epochs else None
    config = {
        "dataset": dataset.name,
        "split": split,
        "n": len(x),
        "data_sha256": data_digest(x, y),
        "model": probe.spec,
        "weights": str(weights_path) if weights_path else None,
        "weights_sha256": sha256_file(weights_path) if weights_path else None,
        "seed": seed,
        "proxy": {"epochs": proxy_epochs, "protocol": protocol.to_dict(), "trainer": "datacomp.evaluation."
                  "train_classifier", "train_split": "train"} if protocol else None,
        "input": "normalised images (dataset mean/std)",
    }

    def compute(own: CostLedger) -> dict[str, np.ndarray]:
        torch.manual_seed(seed)
        net = create_model(model, dataset.in_channels, dataset.num_classes, dataset.image_size, **kwargs)
        if weights_path is not None:
            _load_weights(net, weights_path)
        net = net.to(device)
        if protocol is not None:
            train_classifier(net, dataset.normalize(dataset.train_x), dataset.train_y, protocol,
                             dataset_name=dataset.name,
                             run=TrainingRun(torch.Generator().manual_seed(seed), own, "proxy-training", progress))
        feats = _extract(net, dataset, x, s.batch_size, device, own, progress)
        return {"features": feats, "labels": y.cpu().numpy().astype(np.int64)}

    arrays, meta, path, hit = cached_arrays("image-features", config, compute, *cache_args(cache))
    if ledger is not None:
        ledger.merge(CostLedger.from_dict(meta["cost"]))
    return ImageFeatures(arrays["features"], arrays["labels"], config, meta["key"], path, hit, meta["cost"])


# --------------------------------------------------------------------------------------------- proxy dynamics


def proxy_dynamics(dataset: ImageDataset, model: str = "convnet-3-in", *, device: str = "cpu", progress: bool = True,
                   cache: Cache = True, **settings: Any) -> ProxyDynamics:
    """Training dynamics of proxies trained on the normalised training split (:func:`train_proxy`).

    Args:
        dataset: the image dataset.
        model: registered model name.
        device: torch device.
        progress: progress bars.
        cache: True (``$DATACOMP_CACHE/features``), False or a cache folder.
        **settings: :class:`~datacomp.selectors.proxy_training.ProxySettings` fields (``epochs`` (default 10),
            ``runs``, ``seed``, ``batch_size``, ``lr``, ``record``, ``bf16``, ...).

    Returns:
        :class:`~datacomp.selectors.proxy_training.ProxyDynamics` whose ``ledger`` holds the proxy's cost
        (replayed from the cache on a hit; ``protocol["from_cache"]`` says which).
    """
    s = with_overrides(ProxySettings, None, settings, "proxy_dynamics")
    if _check_nonneg_int(s.epochs, "epochs") < 1 or _check_nonneg_int(s.runs, "runs") < 1:
        raise ConfigError(f"proxy epochs and runs must be >= 1, got epochs={s.epochs}, runs={s.runs}")
    _check_nonneg_int(s.seed, "seed")
    probe = create_model(model, dataset.in_channels, dataset.num_classes, dataset.image_size)
    config = {
        "dataset": dataset.name, "split": "train", "n": len(dataset.train_y),
        "data_sha256": data_digest(dataset.train_x, dataset.train_y), "model": probe.spec,
        "epochs": s.epochs, "runs": s.runs, "seed": s.seed, "batch_size": s.batch_size, "lr": s.lr,
        "record": s.record,
        **({"bf16": True} if s.bf16 else {}),  # absent when off: float32 caches keep their keys
        **({"momentum": s.momentum} if s.momentum != 0.9 else {}),
        **({"weight_decay": s.weight_decay} if s.weight_decay != 5e-4 else {}),
        "trainer": "datacomp.selectors.train_proxy", "input": "normalised images (dataset mean/std)",
    }

    def compute(own: CostLedger) -> dict[str, np.ndarray]:
        def factory() -> torch.nn.Module:
            return create_model(model, dataset.in_channels, dataset.num_classes, dataset.image_size)

        dyn = train_proxy(factory, dataset.normalize(dataset.train_x), dataset.train_y, s, device=device,
                          ledger=own, progress=progress)
        arrays = {"probs": dyn.probs, "final_probs": dyn.final_probs, "labels": dyn.labels,
                  "protocol": np.array(json.dumps(dyn.protocol))}
        if dyn.embeddings is not None:
            arrays["embeddings"] = dyn.embeddings
        return arrays

    arrays, meta, path, hit = cached_arrays("proxy-dynamics", config, compute, *cache_args(cache))
    protocol = json.loads(str(arrays["protocol"]))
    protocol.update(model_spec=probe.spec, from_cache=hit, cache_key=meta["key"])
    return ProxyDynamics(probs=arrays["probs"], final_probs=arrays["final_probs"],
                         embeddings=arrays.get("embeddings"), labels=arrays["labels"].astype(np.int64),
                         protocol=protocol, ledger=CostLedger.from_dict(meta["cost"]))
