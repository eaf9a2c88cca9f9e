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

Both are cached as ``.npz`` (``allow_pickle=False``, written atomically) under :func:`default_cache_dir`, keyed by
a SHA-256 of everything that determines the result: dataset name, split and size, a fingerprint of the labels and of
a strided sample of pixels, the model spec, the weights file's SHA-256 (or the seed), and the proxy configuration.

Costs: phases ``feature-extraction`` (FLOPs sampled, one ``ph.step()`` per batch) and ``proxy-training`` (features'
proxy, via ``train_classifier``) go into the caller's ``CostLedger``; the dynamics carry their own ledger
(``ProxyDynamics.ledger``), which :func:`datacomp.selectors.select` merges into the selection's cost. A cache hit
replays the ledger recorded when the arrays were computed (the cost of producing them) and says so in ``from_cache``.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from datacomp.cost import CostLedger
from datacomp.data import ImageDataset
from datacomp.models import create_model
from datacomp.synset import atomic_write

from .proxy_training import ProxyDynamics, train_proxy

__all__ = [
    "ImageFeatures",
    "default_cache_dir",
    "config_key",
    "dataset_fingerprint",
    "file_sha256",
    "save_npz_atomic",
    "load_npz",
    "cached_arrays",
    "image_features",
    "proxy_dynamics",
]

CACHE_VERSION = 1


# --------------------------------------------------------------------------------------------- cache helpers


def default_cache_dir() -> Path:
    """``$DATACOMP_CACHE/features``, or ``~/.cache/datacomp/features``."""
    return Path(os.environ.get("DATACOMP_CACHE", Path.home() / ".cache" / "datacomp")).expanduser() / "features"


def config_key(config: dict) -> str:
    """SHA-256 (first 24 hex digits) of the canonical JSON of ``config``."""
    blob = json.dumps(config, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:24]


def file_sha256(path: str | os.PathLike, chunk: int = 1 << 22) -> str:
    """SHA-256 of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def dataset_fingerprint(x: torch.Tensor, y: torch.Tensor, samples: int = 256) -> str:
    """SHA-256 of all labels plus ``samples`` evenly strided images: cheap, and changes when the data does."""
    digest = hashlib.sha256()
    digest.update(np.ascontiguousarray(y.cpu().numpy().astype(np.int64)).tobytes())
    picks = torch.linspace(0, len(x) - 1, steps=min(samples, len(x))).long()
    digest.update(np.ascontiguousarray(x[picks].cpu().numpy().astype(np.float32)).tobytes())
    digest.update(str(tuple(x.shape)).encode())
    return digest.hexdigest()[:24]


def save_npz_atomic(path: str | os.PathLike, arrays: dict[str, np.ndarray], meta: dict) -> Path:
    """Write ``arrays`` plus ``meta`` (as a JSON string under ``__meta__``) to ``path`` atomically."""
    return atomic_write(path, lambda fh: np.savez(fh, __meta__=np.array(json.dumps(meta, default=str)), **arrays))


def load_npz(path: str | os.PathLike) -> tuple[dict[str, np.ndarray], dict] | None:
    """Arrays and metadata of a file written by :func:`save_npz_atomic`; ``None`` if absent or unreadable."""
    path = Path(path)
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as f:
            arrays = {k: f[k] for k in f.files if k != "__meta__"}
            meta = json.loads(str(f["__meta__"]))
    except (OSError, ValueError, KeyError, json.JSONDecodeError):
        return None  # a corrupt cache entry is recomputed (and overwritten), never trusted
    return arrays, meta


def cached_arrays(
    kind: str,
    config: dict,
    compute: Callable[[CostLedger], dict[str, np.ndarray]],
    cache: bool = True,
    cache_dir: str | os.PathLike | None = None,
) -> tuple[dict[str, np.ndarray], dict, Path | None, bool]:
    """Return cached arrays for ``config`` or compute, store and return them.

    Args:
        kind: file-name prefix (``image-features``, ``proxy-dynamics``, ``text-embeddings``).
        config: everything that determines the result (hashed into the key).
        compute: ``compute(ledger) -> arrays``; records its cost into ``ledger``.
        cache: read and write the cache.
        cache_dir: folder (default :func:`default_cache_dir`).

    Returns:
        ``(arrays, meta, path, from_cache)``; ``meta["cost"]`` is the ledger (dict) of the computation.
    """
    full_config = {"kind": kind, "cache_version": CACHE_VERSION, **config}
    key = config_key(full_config)
    folder = Path(cache_dir).expanduser() if cache_dir else default_cache_dir()
    path = folder / f"{kind}-{key}.npz"
    if cache:
        hit = load_npz(path)
        if hit is not None and hit[1].get("config") == json.loads(json.dumps(full_config, default=str)):
            return hit[0], hit[1], path, True
    ledger = CostLedger()
    t0 = time.perf_counter()
    arrays = compute(ledger)
    meta = {"config": full_config, "key": key, "seconds": time.perf_counter() - t0, "cost": ledger.to_dict(),
            "created": time.strftime("%Y-%m-%dT%H:%M:%S")}
    if cache:
        save_npz_atomic(path, arrays, meta)
    return arrays, meta, (path if cache else None), False


# --------------------------------------------------------------------------------------------- image features


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
    raise ValueError(f"split must be 'train' or 'test', got {split!r}")


def _check_nonneg_int(value, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 0:
        raise ValueError(f"{name} must be an integer >= 0, got {value!r}")
    return int(value)


def _load_weights(model: torch.nn.Module, path: Path) -> None:
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        state = load_file(str(path))
    except (SafetensorError, OSError) as err:
        raise ValueError(f"weights {path} is not a readable safetensors state dict: {err}") from err
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as err:
        first_line = str(err).strip().splitlines()[0] if str(err).strip() else "state dict mismatch"
        raise ValueError(f"weights {path} do not fit model {model.spec['name']}: {first_line}") from err


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


def image_features(
    dataset: ImageDataset,
    model: str = "convnet-3-in",
    *,
    split: str = "train",
    weights: str | os.PathLike | None = None,
    seed: int = 0,
    proxy_epochs: int = 0,
    proxy_protocol: str = "quick",
    batch_size: int = 512,
    device: str = "cpu",
    model_kwargs: dict | None = None,
    cache: bool = True,
    cache_dir: str | os.PathLike | None = None,
    ledger: CostLedger | None = None,
    progress: bool = True,
) -> ImageFeatures:
    """Penultimate features of ``model`` on ``dataset``'s ``split`` (module docstring).

    Args:
        dataset: the image dataset.
        model: registered model name (:func:`datacomp.models.list_models`).
        split: ``"train"`` (the selection pool) or ``"test"``.
        weights: optional safetensors state dict loaded into the model (strict).
        seed: seed of the initialisation and of the proxy's batch order.
        proxy_epochs: train the model on the training split for this many epochs first (0 = no training).
        proxy_protocol: :data:`datacomp.evaluation.PROTOCOLS` name for that training (its epochs are overridden).
        batch_size: extraction batch size.
        device: torch device.
        model_kwargs: architecture options passed to ``create_model``.
        cache, cache_dir: on-disk cache (default ``$DATACOMP_CACHE/features``).
        ledger: receives ``proxy-training`` and ``feature-extraction`` phases (replayed on a cache hit).
        progress: show progress bars.

    Returns:
        :class:`ImageFeatures`.

    Raises:
        ValueError: unknown model or split, bad epochs/batch size, unreadable or mismatching weights.
        FileNotFoundError: ``weights`` does not exist.
    """
    from datacomp.evaluation import get_protocol, train_classifier

    proxy_epochs = _check_nonneg_int(proxy_epochs, "proxy_epochs")
    seed = _check_nonneg_int(seed, "seed")
    if _check_nonneg_int(batch_size, "batch_size") < 1:
        raise ValueError("batch_size must be >= 1")
    x, y = _split(dataset, split)
    kwargs = dict(model_kwargs or {})
    probe = create_model(model, dataset.in_channels, dataset.num_classes, dataset.image_size, **kwargs)
    if not hasattr(probe, "forward_features"):
        raise ValueError(f"model {model!r} has no forward_features; register it on datacomp.models.ClassifierBase")
    weights_path = Path(weights).expanduser() if weights is not None else None
    if weights_path is not None and not weights_path.is_file():
        raise FileNotFoundError(f"weights file {weights_path} does not exist (expected a safetensors state dict)")
    protocol = get_protocol(proxy_protocol, epochs=proxy_epochs) if proxy_epochs else None
    config = {
        "dataset": dataset.name,
        "split": split,
        "n": len(x),
        "data_fingerprint": dataset_fingerprint(x, y),
        "model": probe.spec,
        "weights": str(weights_path) if weights_path else None,
        "weights_sha256": file_sha256(weights_path) if weights_path else None,
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
                             dataset_name=dataset.name, generator=torch.Generator().manual_seed(seed), ledger=own,
                             phase="proxy-training", progress=progress)
        feats = _extract(net, dataset, x, batch_size, device, own, progress)
        return {"features": feats, "labels": y.cpu().numpy().astype(np.int64)}

    arrays, meta, path, hit = cached_arrays("image-features", config, compute, cache, cache_dir)
    if ledger is not None:
        ledger.merge(CostLedger.from_dict(meta["cost"]))
    return ImageFeatures(arrays["features"], arrays["labels"], config, meta["key"], path, hit, meta["cost"])


# --------------------------------------------------------------------------------------------- proxy dynamics


def proxy_dynamics(
    dataset: ImageDataset,
    model: str = "convnet-3-in",
    *,
    epochs: int = 10,
    runs: int = 1,
    seed: int = 0,
    batch_size: int = 128,
    lr: float = 0.05,
    record: str = "minibatch",
    device: str = "cpu",
    model_kwargs: dict | None = None,
    cache: bool = True,
    cache_dir: str | os.PathLike | None = None,
    progress: bool = True,
    bf16: bool = False,
) -> ProxyDynamics:
    """Training dynamics of ``runs`` proxies trained for ``epochs`` epochs on the normalised training split.

    Args:
        dataset: the image dataset.
        model: registered model name.
        epochs, runs, seed, batch_size, lr, record: :func:`datacomp.selectors.train_proxy` settings.
        device: torch device.
        model_kwargs: architecture options.
        cache, cache_dir: on-disk cache (default ``$DATACOMP_CACHE/features``).
        progress: progress bars.
        bf16: proxy training under bfloat16 autocast (part of the cache key).

    Returns:
        :class:`~datacomp.selectors.proxy_training.ProxyDynamics` whose ``ledger`` holds the proxy's cost
        (replayed from the cache on a hit; ``protocol["from_cache"]`` says which).
    """
    if _check_nonneg_int(epochs, "epochs") < 1 or _check_nonneg_int(runs, "runs") < 1:
        raise ValueError(f"proxy epochs and runs must be >= 1, got epochs={epochs}, runs={runs}")
    seed = _check_nonneg_int(seed, "seed")
    kwargs = dict(model_kwargs or {})
    probe = create_model(model, dataset.in_channels, dataset.num_classes, dataset.image_size, **kwargs)
    config = {
        "dataset": dataset.name, "split": "train", "n": len(dataset.train_y),
        "data_fingerprint": dataset_fingerprint(dataset.train_x, dataset.train_y), "model": probe.spec,
        "epochs": epochs, "runs": runs, "seed": seed, "batch_size": batch_size, "lr": lr, "record": record,
        **({"bf16": True} if bf16 else {}),  # absent when off: float32 caches keep their keys
        "trainer": "datacomp.selectors.train_proxy", "input": "normalised images (dataset mean/std)",
    }

    def compute(own: CostLedger) -> dict[str, np.ndarray]:
        def factory() -> torch.nn.Module:
            return create_model(model, dataset.in_channels, dataset.num_classes, dataset.image_size, **kwargs)

        dyn = train_proxy(factory, dataset.normalize(dataset.train_x), dataset.train_y, epochs=epochs, runs=runs,
                          batch_size=batch_size, lr=lr, record=record, seed=seed, device=device, ledger=own,
                          progress=progress, bf16=bf16)
        arrays = {"probs": dyn.probs, "final_probs": dyn.final_probs, "labels": dyn.labels,
                  "protocol": np.array(json.dumps(dyn.protocol))}
        if dyn.embeddings is not None:
            arrays["embeddings"] = dyn.embeddings
        return arrays

    arrays, meta, path, hit = cached_arrays("proxy-dynamics", config, compute, cache, cache_dir)
    protocol = json.loads(str(arrays["protocol"]))
    protocol.update(model_spec=probe.spec, from_cache=hit, cache_key=meta["key"])
    return ProxyDynamics(probs=arrays["probs"], final_probs=arrays["final_probs"],
                         embeddings=arrays.get("embeddings"), labels=arrays["labels"].astype(np.int64),
                         protocol=protocol, ledger=CostLedger.from_dict(meta["cost"]))
