"""DM: dataset condensation with distribution matching (Zhao & Bilen, WACV 2023), reference ``main_DM.py``.

Per iteration: a *fresh randomly initialised* network (never trained, frozen); for every class a random real batch
and the class's synthetic images go through DSA with one shared seed (siamese); the loss of a class is the squared
L2 distance between the mean embeddings; the sum over classes takes one SGD step (lr 1, momentum 0.5). Images live
in the normalised space, unclamped, initialised from random real images (as the reference code).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from datacomp.augment import DSA, dsa_strategy_for
from datacomp.distillers.base import Distiller, Job, autocast_bf16, draw_seed, features_no_grad
from datacomp.distillers.configs import DMConfig
from datacomp.models import create_model

__all__ = ["DMDistiller", "mean_embedding_loss"]


def mean_embedding_loss(real_features: Tensor, syn_features: Tensor) -> Tensor:
    """``||mean f(real) - mean f(syn)||^2`` per leading batch entry: ``[..., N, d], [..., M, d] -> [...]``."""
    return (real_features.mean(dim=-2) - syn_features.mean(dim=-2)).square().sum(dim=-1)


class DMDistiller(Distiller):
    """Distribution matching on the classes of this process."""

    method = "dm"
    space = "normalized"

    def __init__(self, config: DMConfig, job: Job) -> None:
        config = config.for_run(job.dataset.image_size, job.ctx.device)  # real_bf16 "auto" resolved
        super().__init__(config, job)
        self.real_n = min(config.real_batch, self.real_count)
        strategy = dsa_strategy_for(self.dataset.name) if config.augment == "auto" else config.augment
        self.augment = DSA(strategy) if strategy != "none" else None
        self.images = self._initial_images().to(self.device).requires_grad_(True)
        self.optimizer = torch.optim.SGD([self.images], lr=config.lr_img, momentum=config.momentum)

    def _initial_images(self) -> Tensor:
        blocks = []
        for index in range(len(self.classes)):
            if self.config.init == "noise":
                shape = (self.ipc, self.dataset.in_channels, *self.dataset.image_size)
                blocks.append(torch.randn(shape, generator=self.class_generators[index]).to(self.device))
            else:
                real = self.initial_real_images(index, self.ipc, "random")
                blocks.append(self.dataset.normalize(real))
        return torch.cat(blocks).float()

    def _fresh_network(self) -> torch.nn.Module:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(draw_seed(self.generator))
            net = create_model(self.model_name, self.dataset.in_channels, self.dataset.num_classes,
                               self.dataset.image_size)
        net = net.to(self.device).train()
        net.requires_grad_(False)
        return net

    def step(self, iteration: int) -> Tensor:
        net = self._fresh_network()
        seeds = [draw_seed(g) for g in self.class_generators]
        syn_blocks = self.class_blocks(self.images, self.ipc)
        real_aug, syn_aug = [], []
        for index in range(len(self.classes)):
            real = self.real_batch(index, self.real_n, "random")
            syn = syn_blocks[index]
            if self.augment is not None:
                with torch.no_grad():
                    real = self.augment(real, seed=seeds[index])
                syn = self.augment(syn, seed=seeds[index])
            real_aug.append(real)
            syn_aug.append(syn)
        real_features = features_no_grad(net, torch.cat(real_aug), bf16=self.config.real_bf16 == "on")
        syn = torch.cat(syn_aug)
        with autocast_bf16(syn, self.config.syn_bf16 == "on"):
            syn_features = net.forward_features(syn).float()
        losses = mean_embedding_loss(self.class_blocks(real_features, self.real_n),
                                     self.class_blocks(syn_features, self.ipc))
        self.optimizer.zero_grad(set_to_none=True)
        losses.sum().backward()
        self.optimizer.step()
        return losses.detach().cpu()

    def describe(self) -> dict[str, Any]:
        return {"augment": self.augment.config() if self.augment is not None else None, "real_batch_used": self.real_n}
