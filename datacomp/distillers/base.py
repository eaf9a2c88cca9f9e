"""What every distiller shares: synthetic images of some classes, seeded randomness, real batches, checkpoint state.

Randomness is organised so that a run split over several processes (classes divided between ranks) follows the same
trajectory as a single-process run: one *global* generator (same seed on every rank) draws everything shared by all
classes (feature extractor, blend weight, frequencies, fresh networks), and one generator *per class* draws that
class's real batch and augmentation seeds. Every generator state is part of the checkpoint.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from datacomp.cost import CostLedger
from datacomp.data import ImageDataset
from datacomp.distillers.distributed import Context
from datacomp.errors import ConfigError

__all__ = ["Distiller", "Job", "draw_seed", "features_no_grad", "REAL_CHUNK"]

_SEED_LIMIT = 2**62


def draw_seed(generator: torch.Generator) -> int:
    """A fresh non-negative int seed from ``generator`` (for seeded augmentation and network creation)."""
    return int(torch.randint(0, _SEED_LIMIT, (1,), generator=generator))


def _class_seed(seed: int, c: int) -> int:
    return (seed * 1_000_003 + 7919 * (c + 1)) % (2**63 - 1)


@dataclass(frozen=True)
class Job:
    """What a distiller is built for: the data, this process's classes and where it runs.

    Attributes:
        dataset: The real dataset.
        classes: Global class indices this process distils (all classes for a single process).
        ipc: Stored images per class.
        model: Registered model name used for matching.
        ctx: The process context (rank, world size, device, collectives); default: one process on the CPU.
        seed: Run seed (shared by all ranks).
        pool_dir: Feature-pool cache folder (None: ``$DATACOMP_CACHE/pool``).
        progress: Show progress bars (pool training).
    """

    dataset: ImageDataset
    classes: list[int]
    ipc: int
    model: str
    ctx: Context = field(default_factory=Context)
    seed: int = 0
    pool_dir: str | None = None
    progress: bool = False


class Distiller:
    """Base class: the synthetic images of the classes ``classes`` and the state to checkpoint them.

    Args:
        config: The method's config dataclass.
        job: The data, this process's classes, ipc, matching model, seed and process context (device, collectives).
    """

    method = "base"
    space = "pixel"

    def __init__(self, config: Any, job: Job) -> None:
        dataset, seed = job.dataset, job.seed
        self.config = config
        self.dataset = dataset
        self.classes = list(job.classes)
        self.num_classes = dataset.num_classes
        self.ipc = job.ipc
        self.model_name = job.model
        self.ctx = job.ctx
        self.device = torch.device(job.ctx.device)
        self.seed = seed
        self.generator = torch.Generator().manual_seed(seed)
        self.class_generators = [torch.Generator().manual_seed(_class_seed(seed, c)) for c in self.classes]
        # The training split itself (no copy on CPU) plus per-class indices in dataset order; batches are gathered
        # and normalised when drawn (a class-sorted copy would cost another 600 MB on CIFAR-10).
        self.train_x = dataset.train_x.to(self.device)
        self.class_index = [torch.nonzero(dataset.train_y == c).flatten() for c in range(self.num_classes)]
        # One real-batch size for every class (the smallest class bounds it), so batches stack into [C, n, ...].
        self.real_count = int(dataset.class_counts.min())
        self.images: Tensor  # stored synthetic images of self.classes, class-major [len(classes) * ipc, C, H, W]
        self.optimizer: torch.optim.Optimizer | None = None  # the images' optimiser (checkpointed with them)

    @classmethod
    def build(cls, config: Any, job: Job) -> "Distiller":
        """The distiller for ``job`` (subclasses that need more, e.g. a feature pool, prepare it here)."""
        return cls(config, job)

    @staticmethod
    def class_unit(config: Any, ipc: int) -> int:
        """Classes that must stay on one process for a class-parallel run to compute exactly what one process does
        (consecutive blocks of this many classes are never split between ranks when the class count allows)."""
        return 1

    # ------------------------------------------------------------------------------------------------ helpers
    def labels(self) -> Tensor:
        """Labels of :attr:`images` (class-major)."""
        return torch.tensor(self.classes, dtype=torch.long).repeat_interleave(self.ipc)

    def class_blocks(self, x: Tensor, per_class: int) -> Tensor:
        """View a class-major batch as ``[len(classes), per_class, ...]``."""
        return x.reshape(len(self.classes), per_class, *x.shape[1:])

    def real_batch(self, index: int, n: int, mode: str = "random") -> Tensor:
        """``n`` normalised real images of local class ``index`` (random draw from its generator, or the first n)."""
        members = self.class_index[self.classes[index]]
        if mode == "first":
            picks = members[:n]
        else:
            picks = members[torch.randperm(len(members), generator=self.class_generators[index])[:n]]
        return self.dataset.normalize(self.train_x[picks.to(self.train_x.device)])

    def initial_real_images(self, index: int, n: int, mode: str) -> Tensor:
        """``n`` pixel-space real images of local class ``index`` (repeating the class when it has fewer)."""
        members = self.class_index[self.classes[index]]
        count = len(members)
        if mode == "first":
            order = torch.arange(count)
        else:
            order = torch.randperm(count, generator=self.class_generators[index])
        picks = members[order[torch.arange(n) % count]]
        return self.train_x[picks.to(self.train_x.device)].clone()

    # ------------------------------------------------------------------------------------------------ interface
    def step(self, iteration: int) -> Tensor:
        """Run one iteration; return the per-class losses ``[len(classes)]`` (detached, on CPU)."""
        raise NotImplementedError

    def after_step(self, mean_loss: float) -> None:
        """Hook called with the mean loss over *all* classes (all ranks) after every iteration."""

    def current_lr(self) -> float:
        """Current image learning rate (of :attr:`optimizer`; 0 without one)."""
        return float(self.optimizer.param_groups[0]["lr"]) if self.optimizer is not None else 0.0

    def stored_images(self) -> Tensor:
        """The stored synthetic images of this process's classes (detached, CPU, in :attr:`space`)."""
        return self.images.detach().cpu().clone()

    def state_dict(self) -> dict[str, Any]:
        """Everything needed to continue exactly where the run stopped."""
        state = {
            "images": self.images.detach().cpu().clone(),
            "generator": self.generator.get_state(),
            "class_generators": [g.get_state() for g in self.class_generators],
            "classes": list(self.classes),
        }
        if self.optimizer is not None:
            state["optimizer"] = self.optimizer.state_dict()
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if list(state["classes"]) != self.classes:
            raise ConfigError(
                f"checkpoint holds classes {list(state['classes'])} but this process distils {self.classes}; "
                "resume with the same number of processes as the interrupted run"
            )
        if tuple(state["images"].shape) != tuple(self.images.shape):
            raise ConfigError(f"checkpoint images {tuple(state['images'].shape)} do not match this run's "
                             f"{tuple(self.images.shape)} (different --ipc, dataset or factor?)")
        with torch.no_grad():
            self.images.copy_(state["images"].to(self.images.device))
        self.generator.set_state(state["generator"])
        for g, s in zip(self.class_generators, state["class_generators"], strict=True):
            g.set_state(s)
        if self.optimizer is not None:
            self.optimizer.load_state_dict(state["optimizer"])

    def describe(self) -> dict[str, Any]:
        """JSON-ready extra metadata (e.g. the feature pool)."""
        return {}

    def nonfinite(self) -> list[str]:
        """Names of the learned tensors holding NaN or infinite values (empty when all are finite)."""
        return [] if bool(torch.isfinite(self.images).all()) else ["synthetic images"]

    def extra_cost(self) -> CostLedger | None:
        """Cost paid outside the iterations (e.g. training the feature pool), merged into the run's ledger."""
        return None

    def source_indices(self) -> Tensor | None:
        """Training-split indices of the stored images when they are real images (None for synthetic ones)."""
        return None


# Images per real-feature chunk. Small chunks keep each layer's activations in the CPU caches: a ConvNet-3 forward of
# 2560 CIFAR images is ~3x faster in chunks of 32 (channels-last) than in one batch, which is bound by memory traffic.
REAL_CHUNK = 32


def autocast_bf16(x: Tensor, enabled: bool) -> torch.autocast:
    """bfloat16 autocast on ``x``'s device when ``enabled`` (a no-op context otherwise)."""
    return torch.autocast(x.device.type, dtype=torch.bfloat16, enabled=enabled)


@torch.no_grad()
def features_no_grad(net: torch.nn.Module, x: Tensor, chunk: int = REAL_CHUNK, bf16: bool = False) -> Tensor:
    """``net.forward_features(x)`` without autograd, ``chunk`` images at a time (float32 result).

    Same result as one batched call (instance-norm networks treat images independently) to float32 rounding, while
    only ``chunk`` images' activations are alive at once. Each chunk runs channels-last (oneDNN's fastest layout for
    inference; forward results agree to ~1e-6, and no gradient flows here, where channels-last backward through
    group norm is less accurate). ``bf16=True`` runs the convolutions under bfloat16 autocast (features differ by
    ~0.5 % relative): only worth it on hardware with native bf16 (AVX-512-BF16/AMX CPUs, GPUs); on AVX2-only CPUs it
    is ~20x *slower*.
    """
    with autocast_bf16(x, bf16):
        return torch.cat([net.forward_features(part.contiguous(memory_format=torch.channels_last)).float()
                          for part in x.split(chunk)])
