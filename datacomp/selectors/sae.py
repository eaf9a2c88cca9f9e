"""TopK sparse autoencoder (Gao et al. 2024) for any embedding matrix, with AuxK revival of dead latents.

Model (inputs are first multiplied by a fixed ``input_scale`` so that E||x|| = sqrt(d), as SAELens'
``expected_average_only_in`` does; thresholds on activations therefore refer to that scale)::

    pre = W_enc (x - b_pre) + b_enc
    z   = ReLU(TopK_k(pre))             (the k largest pre-activations, others 0)
    x^  = W_dec z + b_pre               (columns of W_dec unit-norm)

Training recipe (spec selection.md section 6; OpenAI ``sparse_autoencoder`` and EleutherAI ``sparsify``):
loss = FVU = ||x - x^||^2 / ||x - mean(x)||^2 over the batch, plus ``auxk_alpha`` times the AuxK loss in which the
top-``k_aux`` *dead* latents (no activation in the last ``dead_after`` samples) reconstruct the detached
residual, scaled by min(n_dead / k_aux, 1); b_pre initialised at the geometric median; W_enc initialised as
W_dec^T; decoder columns renormalised after each step, and the gradient component parallel to each column
removed before it; Adam (eps 6.25e-10) with lr = 2e-4 / sqrt(n_latents / 2^14) unless given, linear warm-up.

``activations`` returns a ``scipy.sparse.csr_matrix`` (items x latents, float32, only positive entries): it
feeds max-coverage and cosine scans directly and never materialises the dense ``n x n_latents`` matrix.
"""

from __future__ import annotations

import json
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import scipy.sparse as sp
import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from safetensors import safe_open
from safetensors.torch import save

from datacomp.cost import CostLedger
from datacomp.errors import ConfigError, DataError, FormatError, MissingInputError
from datacomp.io import atomic_write

from .settings import with_overrides

__all__ = ["TopKSAE", "SAETrainSettings", "train_sae", "default_lr", "geometric_median"]

_FORMAT = "datacomp.TopKSAE/v1"


def default_lr(n_latents: int) -> float:
    """sparsify's scaling law: 2e-4 / sqrt(n_latents / 2**14) (7.07e-5 for 131,072 latents)."""
    return 2e-4 / math.sqrt(n_latents / 2**14)


def geometric_median(x: torch.Tensor, iters: int = 50, eps: float = 1e-8) -> torch.Tensor:
    """Weiszfeld iterations for the geometric median of the rows of ``x`` (vectorised)."""
    median = x.mean(dim=0)
    for _ in range(iters):
        weights = 1.0 / torch.clamp(torch.linalg.vector_norm(x - median, dim=1), min=eps)
        new = (weights[:, None] * x).sum(0) / weights.sum()
        if torch.linalg.vector_norm(new - median) < 1e-6 * (1.0 + torch.linalg.vector_norm(median)):
            return new
        median = new
    return median


def _to_tensor(x: np.ndarray | torch.Tensor, name: str = "x") -> torch.Tensor:
    t = torch.as_tensor(np.asarray(x) if not isinstance(x, torch.Tensor) else x).detach()
    if t.ndim != 2:
        raise DataError(f"{name} must be a 2-D [n, d] matrix, got shape {tuple(t.shape)}")
    t = t.to(torch.float32).cpu()
    if not torch.isfinite(t).all():
        raise DataError(f"{name} contains NaN or inf values; clean or impute them before training the SAE")
    return t


class TopKSAE(nn.Module):
    """TopK sparse autoencoder. Build with :func:`train_sae` or :meth:`load`.

    Attributes:
        d_in, n_latents, k: sizes. ``input_scale`` (buffer): multiplier applied to inputs.
        history: training record (loss curves, dead fraction, timing) filled by :func:`train_sae`.
        config: the hyper-parameters used for training (saved with the weights).
    """

    def __init__(self, d_in: int, n_latents: int, k: int, input_scale: float = 1.0) -> None:
        super().__init__()
        if not 1 <= k <= n_latents:
            raise ConfigError(f"k must be in [1, n_latents={n_latents}], got {k}")
        self.d_in, self.n_latents, self.k = int(d_in), int(n_latents), int(k)
        self.b_pre = nn.Parameter(torch.zeros(d_in))
        self.W_enc = nn.Parameter(torch.zeros(n_latents, d_in))
        self.b_enc = nn.Parameter(torch.zeros(n_latents))
        self.W_dec = nn.Parameter(torch.zeros(d_in, n_latents))
        self.register_buffer("input_scale", torch.tensor(float(input_scale)))
        self.history: dict = {}
        self.config: dict = {}

    def init_weights(self, generator: torch.Generator, b_pre: torch.Tensor | None = None) -> None:
        """Unit-norm random decoder columns, encoder = decoder transpose, b_enc = 0, b_pre as given."""
        with torch.no_grad():
            w = torch.randn(self.d_in, self.n_latents, generator=generator)
            w /= torch.linalg.vector_norm(w, dim=0, keepdim=True)
            self.W_dec.copy_(w)
            self.W_enc.copy_(w.T)
            self.b_enc.zero_()
            if b_pre is not None:
                self.b_pre.copy_(b_pre)

    def pre_activations(self, x: torch.Tensor) -> torch.Tensor:
        """W_enc (x * input_scale - b_pre) + b_enc for raw inputs ``x`` ``[B, d]``."""
        return F.linear(x * self.input_scale - self.b_pre, self.W_enc, self.b_enc)

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Returns ``(values [B, k] >= 0, latent indices [B, k], pre-activations [B, n_latents])``."""
        pre = self.pre_activations(x)
        values, indices = torch.topk(pre, self.k, dim=-1, sorted=False)
        return F.relu(values), indices, pre

    def decode(self, values: torch.Tensor, indices: torch.Tensor, bias: bool = True) -> torch.Tensor:
        """Sparse decode sum_j values_j W_dec[:, idx_j] (+ b_pre); O(B * k * d) via ``embedding_bag``."""
        out = F.embedding_bag(indices, self.W_dec.T, per_sample_weights=values, mode="sum")
        return out + self.b_pre if bias else out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Reconstruction of ``x`` in the scaled input space (compare with ``x * input_scale``)."""
        values, indices, _ = self.encode(x)
        return self.decode(values, indices)

    @torch.no_grad()
    def activations(self, x: np.ndarray | torch.Tensor, batch_size: int = 8192) -> sp.csr_matrix:
        """Latent activations as a ``scipy.sparse.csr_matrix`` ``[n, n_latents]`` float32 (positive entries only)."""
        xt = _to_tensor(x)
        if xt.shape[1] != self.d_in:
            raise DataError(f"x has {xt.shape[1]} features but the SAE expects d_in={self.d_in}")
        device = self.W_enc.device
        vals, idxs = [], []
        for lo in range(0, xt.shape[0], batch_size):
            v, i, _ = self.encode(xt[lo : lo + batch_size].to(device))
            vals.append(v.cpu().numpy())
            idxs.append(i.cpu().numpy())
        n = xt.shape[0]
        values = np.concatenate(vals) if vals else np.zeros((0, self.k), np.float32)
        latents = np.concatenate(idxs) if idxs else np.zeros((0, self.k), np.int64)
        indptr = np.arange(0, n * self.k + 1, self.k, dtype=np.int64)
        out = sp.csr_matrix((values.reshape(-1), latents.reshape(-1), indptr), shape=(n, self.n_latents))
        out.eliminate_zeros()
        out.sort_indices()
        return out

    def activated_sets(self, x: np.ndarray | torch.Tensor, threshold: float = 0.0, batch_size: int = 8192
                       ) -> sp.csr_matrix:
        """Binary item x latent matrix (CSR bool): latent j is in A(x) iff its activation > ``threshold``."""
        acts = self.activations(x, batch_size=batch_size)
        acts.data = acts.data > threshold
        acts.eliminate_zeros()
        return acts.astype(bool)

    def reconstruction_fvu(self, x: np.ndarray | torch.Tensor) -> float:
        """Fraction of variance unexplained on ``x`` (in the scaled space)."""
        xt = _to_tensor(x).to(self.W_enc.device)
        with torch.no_grad():
            xs = xt * self.input_scale
            err = (self(xt) - xs).pow(2).sum()
            return float(err / (xs - xs.mean(0)).pow(2).sum().clamp_min(1e-12))

    def save(self, path: str | os.PathLike) -> None:
        """Atomic safetensors write; config and history go into the file's JSON metadata."""
        tensors = {name: p.detach().cpu().contiguous() for name, p in self.state_dict().items()}
        meta = {"format": _FORMAT, "config": json.dumps({**self.config, "d_in": self.d_in,
                "n_latents": self.n_latents, "k": self.k}), "history": json.dumps(self.history)}
        atomic_write(path, save(tensors, metadata=meta))

    @classmethod
    def load(cls, path: str | os.PathLike, device: str = "cpu") -> TopKSAE:
        """Load and validate a file written by :meth:`save`."""
        if not Path(path).is_file():
            raise MissingInputError(f"--sae {path} does not exist (a TopKSAE .safetensors file)")
        try:
            f_ctx = safe_open(str(path), framework="pt")
        except Exception as err:  # safetensors raises its own error types for malformed files
            raise FormatError(f"{path} is not a readable safetensors file ({err})") from err
        with f_ctx as f:
            meta = f.metadata() or {}
            if meta.get("format") != _FORMAT:
                raise FormatError(f"{path} is not a datacomp TopKSAE file (format={meta.get('format')!r})")
            tensors = {name: f.get_tensor(name) for name in f.keys()}
        cfg = json.loads(meta["config"])
        sae = cls(cfg["d_in"], cfg["n_latents"], cfg["k"])
        expected = {name: tuple(t.shape) for name, t in sae.state_dict().items()}
        got = {name: tuple(t.shape) for name, t in tensors.items()}
        if expected != got:
            raise FormatError(f"{path}: tensors {got} do not match the config's shapes {expected}")
        if not all(torch.isfinite(t).all() for t in tensors.values()):
            raise FormatError(f"{path}: weights contain NaN/inf")
        sae.load_state_dict(tensors)
        sae.config = cfg
        sae.history = json.loads(meta.get("history", "{}"))
        return sae.to(device)


def _remove_parallel_grad(w_dec: nn.Parameter) -> None:
    """Project out the gradient component along each (unit) decoder column, so steps preserve its norm."""
    if w_dec.grad is not None:
        w_dec.grad -= (w_dec.grad * w_dec.data).sum(0, keepdim=True) * w_dec.data


def _train_step(sae: TopKSAE, batch: torch.Tensor, opt: torch.optim.Optimizer, since_fired: torch.Tensor,
                dead_after: int, auxk_alpha: float, k_aux: int, hist: dict) -> tuple[int, torch.Tensor]:
    """One optimiser step; appends loss/fvu/auxk to ``hist``; returns (n_dead before the step, fired mask)."""
    xs = batch * sae.input_scale
    total_var = (xs - xs.mean(0)).pow(2).sum().clamp_min(1e-12)
    values, indices, pre = sae.encode(batch)
    residual = xs - sae.decode(values, indices)
    fvu = residual.pow(2).sum() / total_var
    loss = fvu
    dead = since_fired >= dead_after
    n_dead = int(dead.sum())
    aux = torch.zeros((), device=batch.device)
    if auxk_alpha > 0 and n_dead:
        k_use = min(k_aux, n_dead)
        aux_vals, aux_idx = torch.topk(pre.masked_fill(~dead, -torch.inf), k_use, dim=-1, sorted=False)
        aux_recon = sae.decode(F.relu(aux_vals), aux_idx, bias=False)
        aux = (aux_recon - residual.detach()).pow(2).sum() / total_var
        loss = loss + auxk_alpha * min(n_dead / k_aux, 1.0) * aux
    opt.zero_grad(set_to_none=True)
    loss.backward()
    _remove_parallel_grad(sae.W_dec)
    opt.step()
    with torch.no_grad():
        sae.W_dec /= torch.linalg.vector_norm(sae.W_dec, dim=0, keepdim=True).clamp_min(1e-12)
        fired = torch.zeros(sae.n_latents, dtype=torch.bool, device=batch.device)
        fired[indices[values > 0]] = True
    hist["loss"].append(float(loss.detach()))
    hist["fvu"].append(float(fvu.detach()))
    hist["auxk_loss"].append(float(aux.detach()))
    return n_dead, fired


@dataclass(frozen=True)
class SAETrainSettings:
    """Training settings of :func:`train_sae` (see its docstring for each)."""

    steps: int | None = None
    epochs: int | None = None
    batch_size: int = 4096
    seed: int = 0
    lr: float | None = None
    lr_warmup_steps: int | None = None
    auxk_alpha: float = 1 / 32
    k_aux: int | None = None
    dead_after: int | None = None
    normalize: bool = True


def train_sae(
    x: np.ndarray | torch.Tensor,
    n_latents: int,
    k: int,
    *,
    device: str = "cpu",
    progress: bool = True,
    ledger=None,
    sae: TopKSAE | None = None,
    **settings,
) -> TopKSAE:
    """Train a TopK SAE on the rows of ``x``.

    Args:
        x: ``[n, d]`` finite embeddings.
        n_latents: dictionary size (e.g. 32 * d).
        k: active latents per item.
        **settings: :class:`SAETrainSettings` fields:
        steps: optimiser steps; alternatively ``epochs`` (one of the two; default 10 epochs).
        batch_size: items per step (capped at n).
        seed: seeds initialisation and batch order.
        lr: Adam learning rate; default :func:`default_lr` ``(n_latents)``.
        lr_warmup_steps: linear warm-up length; default ``min(1000, steps // 10)``.
        auxk_alpha: AuxK coefficient (OpenAI: 1/32); 0 disables AuxK.
        k_aux: dead latents used by AuxK; default ``d // 2`` (sparsify/SAELens).
        dead_after: a latent is dead after this many consecutive *samples* without activation; default
            ``min(n, 10_000_000)`` (one pass over the data, capped at OpenAI's 10M tokens).
        normalize: scale inputs so that E||x|| = sqrt(d) (stored in the SAE as ``input_scale``).
        device: torch device.
        progress: show a tqdm bar.
        ledger: optional ``datacomp.cost.CostLedger`` that receives the ``"sae-training"`` phase (a one-off capital
            cost, FLOPs sampled over the first steps); the same phase is always kept in ``history["cost"]``.
        sae: continue training this SAE instead of initialising a new one (its ``input_scale`` is kept).

    Returns:
        The trained :class:`TopKSAE` (eval mode) with ``history`` = ``{"loss", "fvu", "auxk_loss",
        "dead_fraction"}`` per step plus ``"seconds"``, ``"steps"`` and ``"cost"`` (ledger dict), and ``config`` =
        all arguments used.
    """
    cfg = with_overrides(SAETrainSettings, None, settings, "train_sae")
    steps, epochs, batch_size, seed = cfg.steps, cfg.epochs, cfg.batch_size, cfg.seed
    lr, lr_warmup_steps, auxk_alpha, k_aux, dead_after = cfg.lr, cfg.lr_warmup_steps, cfg.auxk_alpha, cfg.k_aux, \
        cfg.dead_after
    normalize = cfg.normalize
    xt = _to_tensor(x)
    n, d = xt.shape
    if n < 2:
        raise DataError(f"x needs at least 2 rows to train an SAE, got {n}")
    if steps is not None and epochs is not None:
        raise ConfigError("pass either steps= or epochs=, not both")
    batch_size = int(min(batch_size, n))
    per_epoch = math.ceil(n / batch_size)
    total_steps = int(steps) if steps is not None else int(epochs if epochs is not None else 10) * per_epoch
    if total_steps < 1:
        raise ConfigError(f"steps/epochs must give at least one step, got {total_steps}")
    lr = default_lr(n_latents) if lr is None else float(lr)
    warmup = min(1000, total_steps // 10) if lr_warmup_steps is None else int(lr_warmup_steps)
    k_aux = d // 2 if k_aux is None else int(k_aux)
    k_aux = max(1, min(k_aux, n_latents))
    dead_after = min(n, 10_000_000) if dead_after is None else int(dead_after)
    gen = torch.Generator().manual_seed(seed)

    if sae is None:
        scale = math.sqrt(d) / float(torch.linalg.vector_norm(xt, dim=1).mean().clamp_min(1e-12)) if normalize else 1.0
        sae = TopKSAE(d, n_latents, k, input_scale=scale)
        sample = xt[torch.randperm(n, generator=gen)[:32_768]] * scale
        sae.init_weights(gen, b_pre=geometric_median(sample))
    elif sae.d_in != d:
        raise ConfigError(f"sae expects d_in={sae.d_in}, x has {d} features")
    sae = sae.to(device).train()
    xt = xt.to(device)
    opt = torch.optim.Adam(sae.parameters(), lr=lr, eps=6.25e-10)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / max(1, warmup)))
    since_fired = torch.zeros(sae.n_latents, dtype=torch.long, device=device)
    hist = {"loss": [], "fvu": [], "auxk_loss": [], "dead_fraction": []}
    perm = torch.randperm(n, generator=gen)
    cursor = 0
    own_ledger = CostLedger()  # the SAE keeps its own cost in history["cost"]
    t0 = time.perf_counter()
    with own_ledger.phase("sae-training", flops="sampled", one_off=True, device=device) as phase:
        for _ in tqdm(range(total_steps), desc="SAE", disable=not progress, leave=False):
            if cursor + batch_size > n:
                perm, cursor = torch.randperm(n, generator=gen), 0
            batch = xt[perm[cursor : cursor + batch_size].to(device)]
            cursor += batch_size
            with phase.step():
                n_dead, fired = _train_step(sae, batch, opt, since_fired, dead_after, auxk_alpha, k_aux, hist)
            sched.step()
            since_fired += batch.shape[0]
            since_fired[fired] = 0
            hist["dead_fraction"].append(n_dead / sae.n_latents)
        phase.extra["samples_seen"] = total_steps * batch_size
    hist["seconds"] = time.perf_counter() - t0
    hist["steps"] = total_steps
    hist["cost"] = own_ledger.to_dict()
    if ledger is not None:
        ledger.merge(own_ledger)
    sae.history = hist
    sae.config = {"n_latents": n_latents, "k": k, "steps": total_steps, "batch_size": batch_size, "seed": seed,
                  "lr": lr, "lr_warmup_steps": warmup, "auxk_alpha": auxk_alpha, "k_aux": k_aux,
                  "dead_after": dead_after, "normalize": normalize, "input_scale": float(sae.input_scale),
                  "n_train": n, "adam_eps": 6.25e-10}
    return sae.eval()
