"""NCFM (Wang et al., CVPR 2025): dataset distillation by matching neural characteristic functions, as a min-max.

One iteration (:meth:`NCFMDistiller.step`):

1. Clamp the stored pixel-space images to ``[0, 1]``; pick a pool member and ``lam ~ U(0, 1)`` and blend its initial
   and trained weights into the matching network.
2. Draw the frequencies ``t`` from the sampler (Gaussian, or psi's scale mixture).
3. For every class: a real batch and the decoded synthetic images (multi-formation) go through one *shared*
   augmentation draw (same seed for both: siamese). Real features of all classes come from one batched forward
   without autograd (32 images at a time, see ``features_no_grad``); synthetic images go through the network in groups of classes of at
   most ``SYN_CHUNK`` decoded images, each group's loss backpropagated at once (the loss is a sum over classes, so
   the accumulated gradient is exactly the full one, with one group's activations alive at a time).
4. Loss per class = ``loss_scale * NCFD(normalize(f_real), normalize(f_syn), t)``. The backward passes give the
   images' gradient (descent, the min player) and, through a detached copy of ``t``, psi's gradient, which psi
   *ascends* with its own optimiser (the max player; gradients summed over processes first).
5. Image step(s): ``per-class`` (one step per class over the whole tensor, as the released code) or ``joint``.
6. Optional calibration: cross-entropy of the trained pool member on the augmented decoded images, one more step.
"""

from __future__ import annotations

from typing import Any, Callable

import torch
import torch.nn.functional as F
from torch import Tensor

from datacomp.augment import DiffAug
from datacomp.cost import CostLedger
from datacomp.distillers.base import Distiller, Job, autocast_bf16, draw_seed, features_no_grad
from datacomp.distillers.configs import NCFMConfig
from datacomp.distillers.multiformation import decode, encode_mosaic
from datacomp.distillers.ncfd import ncfd, ncfm_loss
from datacomp.distillers.pool import FeaturePool, PoolSpec, build_pool
from datacomp.distillers.samplers import FrequencySampler, create_sampler
from datacomp.errors import ConfigError
from datacomp.models import create_model

__all__ = ["ncfd", "ncfm_loss", "NCFMDistiller", "SYN_CHUNK"]

# Decoded synthetic images per forward/backward group (bounds the autograd activations kept alive at once). Small
# groups are also faster on CPU (activations stay in cache): ConvNet-3 forward+backward of 160 CIFAR images takes
# ~1.5x as long in one batch as in groups of 40.
SYN_CHUNK = 64


class NCFMDistiller(Distiller):
    """NCFM on the classes of this process (see the module docstring for one iteration).

    Args:
        config: :class:`NCFMConfig`.
        job: The data, classes, ipc, matching model, seed and process context (:class:`~datacomp.distillers.base.Job`).
        pool: Trained feature-extractor pool (:func:`datacomp.distillers.pool.build_pool`); None only when no
            iteration will run (the initialisation alone).
    """

    method = "ncfm"
    space = "pixel"

    def __init__(self, config: NCFMConfig, job: Job, pool: FeaturePool | None) -> None:
        dataset = job.dataset
        config = config.for_run(dataset.image_size, job.ctx.device)
        super().__init__(config, job)
        self.pool = pool
        make = lambda: create_model(job.model, dataset.in_channels, dataset.num_classes,
                                    dataset.image_size).to(self.device)
        with torch.random.fork_rng(devices=[]):  # weights are overwritten by the pool; keep the global RNG untouched
            self.match_net, self.calib_net = make(), make()
        for net in (self.match_net, self.calib_net):
            net.requires_grad_(False)
            net.train()
        self.feature_dim = int(self.match_net.feature_dim)
        self.real_n = min(config.real_batch, self.real_count)
        if config.views > self.real_n:
            raise ConfigError(f"views={config.views} exceeds the real images per class per iteration ({self.real_n}): "
                             "each view needs at least one real image; lower views")
        with torch.random.fork_rng(devices=[]):  # psi's initial weights: from the run seed, identical on every rank
            torch.manual_seed(draw_seed(self.generator))
            self.sampler: FrequencySampler = create_sampler(
                config.sampler, self.feature_dim, config.num_freqs, sigma=config.sigma,
                **({"lr": config.sampler_lr} if config.sampler == "learned" else {}),
            ).to(self.device)
        self.augment = DiffAug(config.augment, batch_shared=True) if config.augment != "none" else None
        self.images = self._initial_images().to(self.device).requires_grad_(True)
        if config.optimizer == "adamw":
            self.optimizer = torch.optim.AdamW([self.images], lr=config.lr_img, weight_decay=config.weight_decay)
        else:
            self.optimizer = torch.optim.SGD([self.images], lr=config.lr_img, momentum=config.momentum)
        self.scheduler = (torch.optim.lr_scheduler.ReduceLROnPlateau(self.optimizer, factor=0.5,
                                                                     patience=config.plateau_patience)
                          if config.plateau_patience else None)
        self._fixed_real: Tensor | None = None
        # Class-parallel runs: gathers every rank's per-group frequency gradients (see step); None for one process.
        self.all_gather: Callable[[Tensor], list[Tensor]] | None = (
            job.ctx.all_gather_rows if job.ctx.distributed else None)

    @classmethod
    def build(cls, config: NCFMConfig, job: Job) -> "NCFMDistiller":
        """Train (or load from the cache) the feature pool, then build the distiller."""
        pool = None
        if config.iterations > 0:  # the initialisation alone (iterations=0) needs no feature extractor
            spec = PoolSpec(model=job.model, epochs=config.pool_epochs, min_steps=config.pool_min_steps,
                            lr=config.pool_lr, batch=config.pool_batch)
            pool = build_pool(job.dataset, spec, config.pool_size, root=job.pool_dir, ctx=job.ctx,
                              progress=job.progress and job.ctx.is_main)
        return cls(config, job, pool)

    @staticmethod
    def class_unit(config: NCFMConfig, ipc: int) -> int:
        """With the learned sampler, psi's gradient sums one term per class group (:meth:`_class_groups`): ranks
        that hold whole groups reproduce a single process's sum exactly."""
        if config.sampler != "learned":
            return 1
        return max(1, SYN_CHUNK // (ipc * config.factor**2 * config.views))

    # ------------------------------------------------------------------------------------------------ setup
    def _initial_images(self) -> Tensor:
        cfg, per = self.config, self.config.factor**2
        blocks = []
        for index in range(len(self.classes)):
            if cfg.init == "noise":
                gen = self.class_generators[index]
                shape = (self.ipc, self.dataset.in_channels, *self.dataset.image_size)
                blocks.append((torch.randn(shape, generator=gen) / 4 + 0.5).clamp(0, 1).to(self.device))
            elif cfg.init == "mosaic":
                real = self.initial_real_images(index, self.ipc * per, cfg.init_sampling)
                blocks.append(encode_mosaic(real, cfg.factor))
            else:
                blocks.append(self.initial_real_images(index, self.ipc, cfg.init_sampling))
        return torch.cat(blocks).float()

    # ------------------------------------------------------------------------------------------------ iteration
    def _real_batches(self) -> list[Tensor]:
        if self.config.real_sampling == "first":
            if self._fixed_real is None:
                self._fixed_real = torch.stack(
                    [self.real_batch(i, self.real_n, "first") for i in range(len(self.classes))])
            return list(self._fixed_real)
        return [self.real_batch(i, self.real_n, "random") for i in range(len(self.classes))]

    def _apply_steps(self, closure_grad: Tensor) -> None:
        """Image update(s) from the gradient ``closure_grad`` (already computed for all local classes)."""
        if self.config.step_mode == "joint":
            self.images.grad = closure_grad
            self.optimizer.step()
            return
        # Per-class: one step per class of the *whole* dataset, in class order, each with only that class's gradient
        # (zero for classes of other processes), exactly as a single process stepping class by class would do.
        block = self.ipc
        local = {c: i for i, c in enumerate(self.classes)}
        for c in range(self.num_classes):
            grad = torch.zeros_like(self.images)
            if c in local:
                i = local[c]
                grad[i * block : (i + 1) * block] = closure_grad[i * block : (i + 1) * block]
            self.images.grad = grad
            self.optimizer.step()

    def _augment_views(self, real: Tensor, seeds: list[int]) -> Tensor:
        """One class's real batch, chunk ``v`` of ``len(seeds)`` augmented with ``seeds[v]`` (no copy for one view)."""
        if self.augment is None:
            return real
        if len(seeds) == 1:
            return self.augment(real, seed=seeds[0])
        return torch.cat([self.augment(chunk, seed=s) for chunk, s in zip(real.tensor_split(len(seeds)), seeds)])

    def _class_groups(self, views: int = 1) -> list[range]:
        """Local class indices in groups of at most ``SYN_CHUNK`` decoded (x ``views``) images, >= 1 class each."""
        per_group = max(1, SYN_CHUNK // (self.ipc * self.config.factor**2 * views))
        return [range(i, min(i + per_group, len(self.classes))) for i in range(0, len(self.classes), per_group)]

    def _decoded(self, group: range) -> Tensor:
        """Normalised decoded training images of the local classes in ``group`` (differentiable)."""
        rows = self.images[group.start * self.ipc : group.stop * self.ipc]
        return self.dataset.normalize(decode(rows, self.config.factor))

    def step(self, iteration: int) -> Tensor:
        cfg = self.config
        if self.pool is None:
            raise RuntimeError("NCFMDistiller.step needs a feature pool; it was built with pool=None")
        with torch.no_grad():
            self.images.clamp_(0.0, 1.0)
        member = int(torch.randint(len(self.pool), (1,), generator=self.generator))
        lam = float(torch.rand(1, generator=self.generator))
        self.pool.blend_into(self.match_net, member, lam)
        freqs = self.sampler.sample(self.generator, device=self.device)
        # One augmentation seed per class and view (views=1 draws exactly what it always drew).
        seeds = [[draw_seed(g) for _ in range(cfg.views)] for g in self.class_generators]
        decoded_per_class = self.ipc * cfg.factor**2

        # Real features: all classes at once, no autograd (each class and view augmented with its own seed; with
        # several views each takes an equal chunk of the class's real batch).
        real_batches = self._real_batches()
        with torch.no_grad():
            real_aug = [self._augment_views(r, seeds[i]) for i, r in enumerate(real_batches)]
        real_features = self.class_blocks(
            features_no_grad(self.match_net, torch.cat(real_aug), bf16=cfg.real_bf16 == "on"), self.real_n)

        # Synthetic side in class groups: the loss is a sum over classes, so accumulating each group's backward
        # gives exactly the full gradient while only one group's activations are alive. One backward per group
        # yields the images' gradient (descent) and, through a detached copy of the frequencies, psi's (ascent).
        freqs_leaf = freqs.detach().requires_grad_(self.sampler.learnable)
        # cf_bf16: the real side's projection (the largest matmul, no pixel gradient) in bfloat16, cast once here.
        real_freqs = freqs_leaf.to(torch.bfloat16) if cfg.cf_bf16 == "on" else None
        self.images.grad = None
        losses, group_grads = [], []
        gather = self.all_gather is not None and self.sampler.learnable
        for group in self._class_groups(cfg.views):
            syn = self._decoded(group)
            blocks = syn.reshape(len(group), decoded_per_class, *syn.shape[1:])
            syn_aug = torch.cat([self.augment(blocks[k], seed=s) if self.augment is not None else blocks[k]
                                 for k, i in enumerate(group) for s in seeds[i]])
            with autocast_bf16(syn_aug, cfg.syn_bf16 == "on"):
                syn_features = self.match_net.forward_features(syn_aug)
            syn_features = syn_features.float().reshape(len(group), cfg.views * decoded_per_class, -1)
            group_losses = ncfm_loss(real_features[group.start : group.stop], syn_features, freqs_leaf,
                                     alpha=cfg.alpha, scale=cfg.loss_scale, normalize=cfg.normalize_features,
                                     real_freqs=real_freqs)
            group_losses.sum().backward()
            losses.append(group_losses.detach())
            if gather:
                group_grads.append(freqs_leaf.grad)
                freqs_leaf.grad = None
        grad_images = self.images.grad
        self.images.grad = None
        if self.sampler.learnable:
            psi_params = [p for p in self.sampler.parameters() if p.requires_grad]
            freqs_grad = self._summed_groups(group_grads) if gather else freqs_leaf.grad
            psi_grads = list(torch.autograd.grad(freqs, psi_params, grad_outputs=freqs_grad))
            for p, g in zip(psi_params, psi_grads):
                p.grad = g
            self.sampler.ascent_step()
        self._apply_steps(grad_images)

        if cfg.calibration and cfg.calibration_weight > 0:
            self._calibration_step(member)
        return torch.cat(losses).cpu()

    def _summed_groups(self, local: list[Tensor]) -> Tensor:
        """The frequencies' gradient summed over the class groups of *all* ranks, in global group order, one group
        at a time: the same additions a single process's gradient accumulation makes (psi sees every class)."""
        parts = self.all_gather(torch.stack(local))
        total = None
        for grad in torch.cat([p.to(self.device) for p in parts]):
            total = grad.clone() if total is None else total + grad
        return total

    def _calibration_step(self, member: int) -> None:
        self.pool.load_final(self.calib_net, member)
        per = self.config.factor**2
        decoded_per_class = self.ipc * per
        seeds = [draw_seed(g) for g in self.class_generators]
        self.images.grad = None
        for group in self._class_groups():
            syn = self._decoded(group)
            blocks = syn.reshape(len(group), decoded_per_class, *syn.shape[1:])
            augmented = torch.cat([self.augment(blocks[k], seed=seeds[i]) if self.augment is not None else blocks[k]
                                   for k, i in enumerate(group)])
            labels = torch.tensor([self.classes[i] for i in group], device=self.device).repeat_interleave(
                decoded_per_class)
            # Sum over classes of the per-class mean CE (the released code's per-class loss), so it does not depend
            # on how classes are split between processes or groups.
            with autocast_bf16(augmented, self.config.syn_bf16 == "on"):
                logits = self.calib_net(augmented)
            loss = F.cross_entropy(logits.float(), labels, reduction="sum") / decoded_per_class
            (loss * self.config.calibration_weight).backward()
        grad = self.images.grad
        self.images.grad = None
        self._apply_steps(grad)

    def after_step(self, mean_loss: float) -> None:
        if self.scheduler is not None:
            self.scheduler.step(mean_loss)

    def stored_images(self) -> Tensor:
        return self.images.detach().clamp(0.0, 1.0).cpu().clone()

    # ------------------------------------------------------------------------------------------------ state
    def state_dict(self) -> dict[str, Any]:
        state = super().state_dict()
        state["sampler"] = self.sampler.state_dict()
        state["sampler_optimizer"] = self.sampler.optimizer_state()
        if self.scheduler is not None:
            state["scheduler"] = self.scheduler.state_dict()
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        self.sampler.load_state_dict(state["sampler"])
        self.sampler.load_optimizer_state(state["sampler_optimizer"])
        if self.scheduler is not None and "scheduler" in state:
            self.scheduler.load_state_dict(state["scheduler"])

    def nonfinite(self) -> list[str]:
        bad = super().nonfinite()
        if not all(bool(torch.isfinite(p).all()) for p in self.sampler.parameters()):
            bad.append("frequency sampler parameters")
        return bad

    def extra_cost(self) -> CostLedger | None:
        return self.pool.cost() if self.pool is not None else None

    def describe(self) -> dict[str, Any]:
        info: dict[str, Any] = {"pool": self.pool.summary() if self.pool is not None else None,
                                "feature_dim": self.feature_dim,
                                "real_batch_used": self.real_n, "decoded_per_class": self.ipc * self.config.factor**2}
        if self.sampler.learnable:
            info["sampler"] = {"name": "learned", "components": self.sampler.num_components,
                               "psi": "3 x [Linear(d,d) -> BatchNorm1d], LeakyReLU(0.2) between; "
                                      "scale = sigma * (1 + tanh)"}
        else:
            info["sampler"] = {"name": "gaussian"}
        return info
