"""Plain-PyTorch restatements of the released DM and NCFM inner loops, the yardstick for datacomp's speed.

Nothing here imports datacomp: the network, the augmentation and both iterations are written with torch ops in the
pattern the released code uses (``../shared/specs/ncfm.md`` sections 3 and 4), so a benchmark can time datacomp's
iteration *in the same process* against what the released code would do on this machine and report a ratio that
does not depend on how fast the host happens to be that day.

- DM (DatasetCondensation ``main_DM.py``): a fresh random ConvNet-3 (instance norm) per iteration; for each class a
  fresh random batch of real images and the class's synthetic images go through DSA with one shared seed (mode "S":
  one op group per call, then ``.contiguous()``); ``embed(real).detach()`` under grad mode (as the released code:
  the parameters are frozen, so no graph is built) and ``embed(syn)``; the squared distance of the mean embeddings,
  summed over classes, takes one SGD step (lr 1, momentum 0.5).
- NCFM (``condenser/compute_loss.py``): per class a network blended from a pool member's initial and trained
  weights, the real batch and the decoded synthetic images (factor 2: 2x2 tiles upsampled) augmented together
  (DiffAug colour -> crop -> cutout, batch-shared), L2-normalised 2048-d features, the characteristic-function loss
  over 4096 Gaussian frequencies, one AdamW step per class; then the calibration pass (cross entropy of the trained
  network on the augmented synthetic images) and one more step per class.

The restatements keep the released code's batch shapes (one forward of the whole real batch per class, NCHW) because
the speed question is how datacomp's layout and chunking compare with them.
"""

from __future__ import annotations

import math
import random
import time

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["PlainConvNet", "plain_dsa", "plain_diffaug", "ReleasedDM", "ReleasedNCFM", "convnet_forward_flops",
           "matmul_peak_gflops"]

MEAN = torch.tensor([0.4914, 0.4822, 0.4465]).view(1, 3, 1, 1)
STD = torch.tensor([0.2023, 0.1994, 0.2010]).view(1, 3, 1, 1)


class PlainConvNet(nn.Module):
    """ConvNet-3 as the released code builds it: [conv3x3 128 -> GroupNorm(128, 128) -> ReLU -> AvgPool 2] x depth."""

    def __init__(self, channels: int = 3, num_classes: int = 10, width: int = 128, depth: int = 3,
                 size: int = 32) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        c = channels
        for _ in range(depth):
            layers += [nn.Conv2d(c, width, 3, padding=1), nn.GroupNorm(width, width, affine=True),
                       nn.ReLU(inplace=True), nn.AvgPool2d(2, 2)]
            c = width
            size //= 2
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Linear(width * size * size, num_classes)

    def embed(self, x: Tensor) -> Tensor:
        return self.features(x).flatten(1)

    def forward(self, x: Tensor) -> Tensor:
        return self.classifier(self.embed(x))


def convnet_forward_flops(size: int = 32, channels: int = 3, width: int = 128, depth: int = 3) -> float:
    """Multiply-add FLOPs (x2) of one image's ConvNet convolutions (norm, ReLU and pooling not counted)."""
    flops, c = 0.0, channels
    for _ in range(depth):
        flops += 2.0 * size * size * width * c * 9
        c, size = width, size // 2
    return flops


def matmul_peak_gflops(clock=time.perf_counter, dtype: torch.dtype = torch.float32, n: int = 2048) -> float:
    """The machine's measured matmul rate, the yardstick for achieved GFLOP/s: the best of three ``n``^3 products
    through ``torch.mm`` (the BLAS PyTorch was built with) and through a 1x1 convolution of ``n`` pixels (oneDNN, the
    library behind the CPU convolutions). Both are taken because either can be the slow one: on some CPUs the BLAS
    reaches half of oneDNN's float32 rate (see :func:`matmul_rates_gflops`)."""
    return max(matmul_rates_gflops(clock, dtype, n).values())


def as_conv1x1(a: Tensor, b: Tensor) -> tuple[Tensor, Tensor]:
    """Input and weight of the 1x1 convolution that computes ``a @ b`` for ``a`` [n, k] and ``b`` [k, m] (``a``'s
    rows as pixels, channels-last): the convolution's output [1, m, 32, n / 32], reshaped to [m, n] and transposed, is
    the product. ``n`` must be a multiple of 32."""
    rows, inner = a.shape
    if rows % 32 or b.shape[0] != inner:
        raise ValueError(f"as_conv1x1: a must be [n, k] with n a multiple of 32 and b [k, m]; got a {list(a.shape)}, "
                         f"b {list(b.shape)}: use n = 2048 (the default size) or another multiple of 32")
    x = a.t().reshape(1, inner, 32, rows // 32).contiguous(memory_format=torch.channels_last)
    w = b.t().reshape(b.shape[1], inner, 1, 1).contiguous(memory_format=torch.channels_last)
    return x, w


def matmul_rates_gflops(clock=time.perf_counter, dtype: torch.dtype = torch.float32, n: int = 2048
                        ) -> dict[str, float]:
    """GFLOP/s of an ``n`` x ``n`` x ``n`` product (best of three) through ``torch.mm`` (``"blas"``) and through a
    1x1 convolution of ``n`` channels over ``n`` pixels, channels-last (``"onednn"``)."""
    a, b = torch.randn(n, n).to(dtype), torch.randn(n, n).to(dtype)
    x, w = as_conv1x1(a, b)
    calls = {"blas": lambda: a @ b, "onednn": lambda: torch.nn.functional.conv2d(x, w)}
    rates = {}
    for name, call in calls.items():
        call()
        best = float("inf")
        for _ in range(3):
            t0 = clock()
            call()
            best = min(best, clock() - t0)
        rates[name] = 2.0 * n**3 / best / 1e9
    return rates


# ----------------------------------------------------------------------------------------------- augmentation
def _shared_uniform(gen: torch.Generator, low: float = 0.0, high: float = 1.0) -> float:
    return low + (high - low) * float(torch.rand(1, generator=gen))


def _color(x: Tensor, gen: torch.Generator, brightness=1.0, saturation=2.0, contrast=0.5) -> Tensor:
    x = x + (_shared_uniform(gen) - 0.5) * brightness
    m = x.mean(dim=1, keepdim=True)
    x = (x - m) * (_shared_uniform(gen) * saturation) + m
    m = x.mean(dim=[1, 2, 3], keepdim=True)
    return (x - m) * (_shared_uniform(gen) + contrast) + m


def _crop(x: Tensor, gen: torch.Generator, ratio=0.125) -> Tensor:
    # Integer translation through a padded gather in NHWC order, as the reference builds it.
    n, c, h, w = x.shape
    sy, sx = int(h * ratio + 0.5), int(w * ratio + 0.5)
    ty = int(torch.randint(-sy, sy + 1, (1,), generator=gen))
    tx = int(torch.randint(-sx, sx + 1, (1,), generator=gen))
    b, gy, gx = torch.meshgrid(torch.arange(n), torch.arange(h), torch.arange(w), indexing="ij")
    gy = (gy + ty + 1).clamp(0, h + 1)
    gx = (gx + tx + 1).clamp(0, w + 1)
    padded = F.pad(x, [1, 1, 1, 1])
    return padded.permute(0, 2, 3, 1).contiguous()[b, gy, gx].permute(0, 3, 1, 2)


def _cutout(x: Tensor, gen: torch.Generator, ratio=0.5) -> Tensor:
    n, _, h, w = x.shape
    ch, cw = int(h * ratio + 0.5), int(w * ratio + 0.5)
    oy = int(torch.randint(0, h + (1 - ch % 2), (1,), generator=gen))
    ox = int(torch.randint(0, w + (1 - cw % 2), (1,), generator=gen))
    mask = torch.ones(n, h, w, dtype=x.dtype)
    mask[:, max(oy - ch // 2, 0): max(oy - ch // 2 + ch, 0), max(ox - cw // 2, 0): max(ox - cw // 2 + cw, 0)] = 0
    return x * mask.unsqueeze(1)


def _flip(x: Tensor, gen: torch.Generator, prob=0.5) -> Tensor:
    return x.flip(3) if _shared_uniform(gen) < prob else x


def _affine(x: Tensor, theta: Tensor) -> Tensor:
    grid = F.affine_grid(theta.expand(x.shape[0], 2, 3), list(x.shape), align_corners=True)
    return F.grid_sample(x, grid, align_corners=True)


def _scale(x: Tensor, gen: torch.Generator, ratio=1.2) -> Tensor:
    sx, sy = _shared_uniform(gen, 1 / ratio, ratio), _shared_uniform(gen, 1 / ratio, ratio)
    return _affine(x, torch.tensor([[[sx, 0.0, 0.0], [0.0, sy, 0.0]]], dtype=x.dtype))


def _rotate(x: Tensor, gen: torch.Generator, degrees=15.0) -> Tensor:
    a = (_shared_uniform(gen) - 0.5) * 2 * degrees / 180 * math.pi
    return _affine(x, torch.tensor([[[math.cos(a), -math.sin(a), 0.0], [math.sin(a), math.cos(a), 0.0]]],
                                   dtype=x.dtype))


_DSA_GROUPS = {"color": _color, "crop": _crop, "cutout": _cutout, "flip": _flip, "scale": _scale, "rotate": _rotate}


def plain_dsa(x: Tensor, seed: int, strategy: str = "color_crop_cutout_flip_scale_rotate") -> Tensor:
    """DSA mode "S" with one parameter draw for the whole batch: one op group chosen by ``seed``, then contiguous."""
    gen = torch.Generator().manual_seed(seed)
    groups = strategy.split("_")
    group = groups[int(torch.randint(len(groups), (1,), generator=gen))]
    return _DSA_GROUPS[group](x, gen).contiguous()


def plain_diffaug(x: Tensor, seed: int) -> Tensor:
    """NCFM's batch-shared DiffAug: colour, then crop, then cutout, every call."""
    gen = torch.Generator().manual_seed(seed)
    return _cutout(_crop(_color(x, gen), gen), gen).contiguous()


# ----------------------------------------------------------------------------------------------- the loops
class ReleasedDM:
    """One DM iteration per ``step()``, as ``main_DM.py`` runs it (ConvNet-3, instance norm, DSA, 256 real/class)."""

    def __init__(self, real_by_class: list[Tensor], ipc: int, real_batch: int = 256, seed: int = 0) -> None:
        self.real = real_by_class  # normalised images per class
        self.ipc, self.real_batch = ipc, real_batch
        self.rng = random.Random(seed)
        torch.manual_seed(seed)
        self.images = torch.cat([r[:ipc] for r in real_by_class]).clone().requires_grad_(True)
        self.optimizer = torch.optim.SGD([self.images], lr=1.0, momentum=0.5)
        c, h, w = real_by_class[0].shape[1:]
        self.shape = (c, h)

    def step(self) -> float:
        c, size = self.shape
        net = PlainConvNet(c, len(self.real), size=size).train()
        for p in net.parameters():
            p.requires_grad = False
        loss = torch.tensor(0.0)
        for k, real in enumerate(self.real):
            idx = torch.randperm(real.shape[0])[: self.real_batch]
            img_real = real[idx]
            img_syn = self.images[k * self.ipc:(k + 1) * self.ipc]
            seed = self.rng.randrange(100000)
            img_real = plain_dsa(img_real, seed)
            img_syn = plain_dsa(img_syn, seed)
            out_real = net.embed(img_real).detach()
            out_syn = net.embed(img_syn)
            loss = loss + ((out_real.mean(0) - out_syn.mean(0)) ** 2).sum()
        self.optimizer.zero_grad()
        loss.backward()
        self.optimizer.step()
        return float(loss.detach())


def _decode(images: Tensor, factor: int, size: int) -> Tensor:
    """Multi-formation: cut each image into factor x factor tiles, upsample each tile to the full size."""
    n, c, h, w = images.shape
    th, tw = h // factor, w // factor
    tiles = images.view(n, c, factor, th, factor, tw).permute(0, 2, 4, 1, 3, 5).reshape(n * factor * factor, c, th, tw)
    return F.interpolate(tiles, size=(size, size), mode="bilinear", align_corners=False)


def _cf_loss(real_f: Tensor, syn_f: Tensor, t: Tensor, alpha: float = 0.5, beta: float = 0.5) -> Tensor:
    real_proj, syn_proj = real_f @ t.T, syn_f @ t.T
    r_re, r_im = real_proj.cos().mean(0), real_proj.sin().mean(0)
    s_re, s_im = syn_proj.cos().mean(0), syn_proj.sin().mean(0)
    r_amp, s_amp = (r_re ** 2 + r_im ** 2).sqrt(), (s_re ** 2 + s_im ** 2).sqrt()
    amp = (r_amp - s_amp) ** 2
    pha = (2 * (r_amp * s_amp - r_re * s_re - r_im * s_im)).clamp(min=1e-12)
    return 300 * (alpha * amp + beta * pha).sqrt().mean()


class ReleasedNCFM:
    """One NCFM iteration per ``step()`` as ``compute_loss.py`` runs it with ``sampling_net: False``."""

    def __init__(self, real_by_class: list[Tensor], ipc: int, pool: list[tuple[dict, dict]], real_batch: int = 256,
                 num_freqs: int = 4096, factor: int = 2, calibration: bool = True, seed: int = 0) -> None:
        self.real = [r[:real_batch] for r in real_by_class]  # the first images of each class, raw [0, 1]
        self.ipc, self.factor, self.num_freqs, self.calibration = ipc, factor, num_freqs, calibration
        self.pool = pool  # (initial state, trained state) pairs
        self.rng = random.Random(seed)
        torch.manual_seed(seed)
        c, size = real_by_class[0].shape[1], real_by_class[0].shape[2]
        self.size = size
        small = [F.interpolate(r[: ipc * factor * factor], size=(size // factor, size // factor), mode="bilinear",
                               align_corners=False) for r in real_by_class]
        mosaics = []
        for s in small:
            s = s.view(ipc, factor, factor, c, size // factor, size // factor).permute(0, 3, 1, 4, 2, 5)
            mosaics.append(s.reshape(ipc, c, size, size))
        self.images = torch.cat(mosaics).clone().requires_grad_(True)
        self.optimizer = torch.optim.AdamW([self.images], lr=1e-3, weight_decay=5e-4)
        self.net = PlainConvNet(c, len(real_by_class), size=size)
        self.trained = PlainConvNet(c, len(real_by_class), size=size)

    def step(self) -> float:
        init, final = self.pool[self.rng.randrange(len(self.pool))]
        lam = self.rng.random()
        self.net.load_state_dict({k: lam * init[k] + (1 - lam) * final[k] for k in init})
        self.trained.load_state_dict(final)
        self.net.eval()
        self.trained.eval()
        with torch.no_grad():
            self.images.clamp_(0, 1)
        total = 0.0
        n_cls = len(self.real)
        for k in range(n_cls):
            syn = _decode(self.images[k * self.ipc:(k + 1) * self.ipc], self.factor, self.size)
            both = torch.cat([self.real[k], syn])
            both = plain_diffaug((both - MEAN) / STD, self.rng.randrange(100000))
            real_aug, syn_aug = both[: self.real[k].shape[0]], both[self.real[k].shape[0]:]
            with torch.no_grad():
                real_f = F.normalize(self.net.embed(real_aug), dim=1)
            syn_f = F.normalize(self.net.embed(syn_aug), dim=1)
            t = torch.randn(self.num_freqs, syn_f.shape[1])
            loss = _cf_loss(real_f, syn_f, t)
            self.optimizer.zero_grad()
            loss.backward()
            self.optimizer.step()
            total += float(loss.detach())
        if self.calibration:
            for k in range(n_cls):
                syn = _decode(self.images[k * self.ipc:(k + 1) * self.ipc], self.factor, self.size)
                syn = plain_diffaug((syn - MEAN) / STD, self.rng.randrange(100000))
                target = torch.full((syn.shape[0],), k, dtype=torch.long)
                loss = F.cross_entropy(self.trained(syn), target)
                self.optimizer.zero_grad()
                loss.backward()
                self.optimizer.step()
        return total / n_cls
