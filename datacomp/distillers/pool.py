"""Feature-extractor pool for NCFM: P networks trained on the real data, each kept at its initial and final weights.

Every distillation iteration NCFM picks one pool member and blends ``theta = lam * theta_init + (1 - lam) *
theta_final`` with ``lam ~ U(0, 1)`` (paper section 4.2.3; released code ``pretrain_script.py``). Training follows the
released pretraining script: SGD 0.01, momentum 0.9, weight decay 5e-4, batch 128, learning rate x0.2 at 2/3 and 5/6
of the epochs, per-sample DiffAug ``color_crop`` and CutMix (p 0.5, Beta(1, 1)).

Trained pools are cached on disk, one safetensors file per member (``init.*`` and ``final.*`` tensors, JSON metadata
with the training config, test accuracy and cost ledger), in a folder keyed by dataset, model and training config,
so later runs (other IPCs, seeds, methods) reuse them. Default cache: ``$DATACOMP_CACHE/pool`` or
``~/.cache/datacomp/pool``.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save
from torch import Tensor, nn

from datacomp.augment import DiffAug, cutmix
from datacomp.cost import CostLedger
from datacomp.data import ImageDataset
from datacomp.distillers.distributed import Context
from datacomp.errors import ConfigError, MissingInputError
from datacomp.io import atomic_write, cache_dir, sha256_arrays
from datacomp.models import create_model
from datacomp.training import batch_backward, fit, micro_batch_size, test_accuracy

__all__ = ["PoolSpec", "FeaturePool", "default_pool_dir", "pool_folder", "build_pool", "train_pool_member"]

POOL_FORMAT = 1


def default_pool_dir() -> Path:
    """``$DATACOMP_CACHE/pool`` or ``~/.cache/datacomp/pool``."""
    return cache_dir("pool")


@dataclass(frozen=True)
class PoolSpec:
    """What determines a pool member's weights (the cache key)."""

    model: str
    epochs: int
    min_steps: int
    lr: float
    batch: int
    seed: int = 0

    def to_dict(self) -> dict:
        return {"model": self.model, "epochs": self.epochs, "min_steps": self.min_steps, "lr": self.lr,
                "batch": self.batch, "seed": self.seed, "format": POOL_FORMAT}

    def resolved(self, num_train: int) -> "PoolSpec":
        """The same training with ``min_steps`` turned into epochs for a training split of ``num_train`` images
        (so two specs that train identically share one cache entry)."""
        steps_per_epoch = math.ceil(num_train / self.batch)
        epochs = max(self.epochs, math.ceil(self.min_steps / steps_per_epoch)) if self.min_steps else self.epochs
        return PoolSpec(self.model, epochs, 0, self.lr, self.batch, self.seed)


def _dataset_fingerprint(dataset: ImageDataset) -> dict:
    # The full content of the training split (every byte hashed: an edited image gives another pool folder).
    return {
        "name": dataset.name,
        "source": dataset.source,
        "train_shape": list(dataset.train_x.shape),
        "train_sha256": sha256_arrays([dataset.train_x, dataset.train_y]),
    }


def pool_folder(root: str | os.PathLike, dataset: ImageDataset, spec: PoolSpec) -> Path:
    """Cache folder of the pool for ``dataset`` and ``spec``."""
    key = json.dumps({"dataset": _dataset_fingerprint(dataset), "spec": spec.to_dict()}, sort_keys=True)
    digest = hashlib.sha256(key.encode()).hexdigest()[:16]
    slug = re.sub(r"[^A-Za-z0-9_.-]+", "_", dataset.name)[-40:]
    return Path(root).expanduser() / f"{slug}-{spec.model}-{digest}"


def _member_path(folder: Path, index: int) -> Path:
    return folder / f"member{index:03d}.safetensors"


def train_pool_member(
    dataset: ImageDataset, spec: PoolSpec, index: int, device: torch.device, progress: bool = False
) -> tuple[dict[str, Tensor], dict[str, Tensor], dict]:
    """Train one pool member; returns ``(init_state, final_state, info)`` with ``info`` holding accuracy and cost."""
    seed = spec.seed * 100_003 + index
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = create_model(spec.model, dataset.in_channels, dataset.num_classes, dataset.image_size)
    model = model.to(device)
    init_state = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
    x = dataset.normalize(dataset.train_x).to(device)
    y = dataset.train_y.to(device)
    gen = torch.Generator().manual_seed(seed)
    aug = DiffAug("color_crop", batch_shared=False, generator=torch.Generator().manual_seed(seed + 1))
    epochs = spec.resolved(len(x)).epochs
    opt = torch.optim.SGD(model.parameters(), lr=spec.lr, momentum=0.9, weight_decay=5e-4)
    milestones = sorted({max(1, round(epochs * 2 / 3)), max(1, round(epochs * 5 / 6))})
    sched = torch.optim.lr_scheduler.MultiStepLR(opt, milestones=milestones, gamma=0.2)
    ledger = CostLedger()
    micro = micro_batch_size(model, device)  # micro-batches: same gradient, faster on CPU
    model.train()

    def step(idx: Tensor) -> Tensor:
        idx = idx.to(device)
        xb, ya, yb, lam = cutmix(aug(x[idx]), y[idx], prob=0.5, generator=gen)
        opt.zero_grad(set_to_none=True)
        loss = batch_backward(model, xb, [(lam, ya), (1 - lam, yb)], None, False, micro)
        opt.step()
        return loss

    with ledger.phase("pool-training", flops="sampled", device=str(device), one_off=True) as ph:
        fit(step, len(x), spec.batch, epochs, gen, phase=ph, after_epoch=lambda epoch, loss: sched.step(),
            progress=f"pool member {index}" if progress else None)
        ph.extra.update(samples_seen=epochs * len(x), epochs=epochs, pool_member=index)
    accuracy = test_accuracy(model, dataset.normalize(dataset.test_x), dataset.test_y)
    final_state = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
    info = {"index": index, "epochs": epochs, "test_accuracy": accuracy, "cost": ledger.to_dict()}
    return init_state, final_state, info


def _save_member(path: Path, init: dict[str, Tensor], final: dict[str, Tensor], info: dict, spec: PoolSpec,
                 dataset: ImageDataset) -> None:
    tensors = {f"init.{k}": v.contiguous() for k, v in init.items()}
    tensors.update({f"final.{k}": v.contiguous() for k, v in final.items()})
    meta = {"datacomp_pool": json.dumps({"spec": spec.to_dict(), "dataset": _dataset_fingerprint(dataset), **info})}
    atomic_write(path, save(tensors, metadata=meta))


def _load_member(path: Path) -> tuple[dict[str, Tensor], dict[str, Tensor], dict]:
    init, final = {}, {}
    with safe_open(str(path), framework="pt") as fh:
        info = json.loads(fh.metadata()["datacomp_pool"])
        for key in fh.keys():
            kind, name = key.split(".", 1)
            (init if kind == "init" else final)[name] = fh.get_tensor(key)
    return init, final, info


class FeaturePool:
    """Initial and final weights of P trained networks, and the per-iteration blend.

    Args:
        model_name: Registered model name of every member.
        inits: Per member, the initial ``state_dict``.
        finals: Per member, the trained ``state_dict``.
        infos: Per member, training info (test accuracy, epochs, cost, cached or not).
    """

    def __init__(self, model_name: str, inits: list[dict[str, Tensor]], finals: list[dict[str, Tensor]],
                 infos: list[dict]) -> None:
        if not inits or len(inits) != len(finals):
            raise ConfigError("a feature pool needs one initial and one final state per member (at least one member)")
        self.model_name = model_name
        self.inits, self.finals, self.infos = inits, finals, infos

    def __len__(self) -> int:
        return len(self.inits)

    def to(self, device: torch.device) -> "FeaturePool":
        self.inits = [{k: v.to(device) for k, v in s.items()} for s in self.inits]
        self.finals = [{k: v.to(device) for k, v in s.items()} for s in self.finals]
        return self

    @torch.no_grad()
    def blend_into(self, model: nn.Module, index: int, lam: float) -> None:
        """Load ``lam * init + (1 - lam) * final`` of member ``index`` into ``model`` (in place)."""
        init, final = self.inits[index], self.finals[index]
        for name, target in model.state_dict().items():
            if target.is_floating_point():
                target.copy_(torch.lerp(final[name], init[name], lam))
            else:
                target.copy_(final[name])

    @torch.no_grad()
    def load_final(self, model: nn.Module, index: int) -> None:
        """Load the trained weights of member ``index`` into ``model``."""
        model.load_state_dict(self.finals[index])

    def cost(self) -> CostLedger:
        """Merged training cost of all members (recorded when each was trained, also for cached members)."""
        ledger = CostLedger()
        for info in self.infos:
            ledger.merge(CostLedger.from_dict(info["cost"]))
        return ledger

    def summary(self) -> dict:
        """JSON-ready description for run metadata."""
        accs = [info["test_accuracy"] for info in self.infos]
        return {"model": self.model_name, "size": len(self), "test_accuracy": accs,
                "mean_test_accuracy": sum(accs) / len(accs), "epochs": [info["epochs"] for info in self.infos],
                "cached": [bool(info.get("cached")) for info in self.infos]}


def build_pool(
    dataset: ImageDataset,
    spec: PoolSpec,
    size: int,
    root: str | os.PathLike | None = None,
    ctx: Context | None = None,
    progress: bool = True,
) -> FeaturePool:
    """Load the pool from the cache, training the missing members first.

    ``root``: the cache folder (default :func:`default_pool_dir`); ``ctx``: the process context (device, rank, world
    size; default one process on the CPU). With several processes member ``i`` is trained by rank
    ``i % world_size``, and every rank waits at ``ctx.barrier()`` before loading the files.
    """
    if size < 1:
        raise ConfigError(f"pool size must be >= 1, got {size}")
    spec = spec.resolved(len(dataset.train_y))
    folder = pool_folder(root if root is not None else default_pool_dir(), dataset, spec)
    folder.mkdir(parents=True, exist_ok=True)
    ctx = ctx if ctx is not None else Context()
    device = torch.device(ctx.device)
    trained_here: set[int] = set()
    for index in range(size):
        path = _member_path(folder, index)
        if index % ctx.world_size != ctx.rank or path.is_file():
            continue
        init, final, info = train_pool_member(dataset, spec, index, device, progress=progress)
        _save_member(path, init, final, info, spec, dataset)
        trained_here.add(index)
    ctx.barrier()
    inits, finals, infos = [], [], []
    for index in range(size):
        path = _member_path(folder, index)
        if not path.is_file():
            raise MissingInputError(f"pool member {index} missing at {path} after training; is the cache writable?")
        init, final, info = _load_member(path)
        info["cached"] = index not in trained_here
        info["path"] = str(path)
        inits.append(init)
        finals.append(final)
        infos.append(info)
    return FeaturePool(spec.model, inits, finals, infos).to(device)
