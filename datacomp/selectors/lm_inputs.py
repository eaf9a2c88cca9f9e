"""Text selection on a causal language model's activations: ``--embedder lm:NAME_OR_PATH``.

* ``kcenter`` / ``facility-location`` / ``herding`` (every method reading features): the embedding of a record is the
  mean of its content-token residual-stream vectors at ``--lm-layer`` (default the last layer), not normalised
  (:func:`datacomp.lm.lm_embeddings`, cached in ``$DATACOMP_CACHE/lm/activations``).
* ``sae-greedy`` / ``sae-simscale``: the TopK SAE (:func:`~datacomp.selectors.sae.train_sae`, AuxK and dead-latent
  revival, cached like every SAE) is trained on the **token** activations of the pool
  (:func:`datacomp.lm.token_activations`; the trainer draws its batches through a seeded permutation of all tokens, so
  the stream's longest-first order does not reach training). When the tokenizer adds no BOS token (SmolLM2), the
  first content token of every record plays its role: an attention sink whose residual norm is several times that of
  any other token (7x on SmolLM2-135M's last layer) and whose vector is the same in every record of a shared
  template; like BOS in the paper it is left out of the SAE's training data, the threshold and A(x)
  (:class:`datacomp.lm.ActivationConfig` ``drop_first``), and out of the mean-pooled embeddings too.
  The activated set of a record is

      A(x) = { j : max over content tokens t of x of z_{t,j} > tau }

  (a latent that exceeds tau on at least one token), with ``z_t`` the SAE's TopK activations of token t. The
  threshold tau is ``--set threshold=V`` when given; otherwise the ``threshold_quantile`` (default
  :data:`DEFAULT_QUANTILE` = 0.9) quantile of all positive token-level activations of the pool (the paper's fixed
  JumpReLU tau = 10 belongs to its own SAE's scale; a quantile carries over between models). The quantile trades
  |A(x)|'s tracking of length against coverage saturation; measured on the first 200 Alpaca records (SmolLM2-135M,
  last layer, 2048 latents, k = 32): q = 0.5 gives r = 0.93 but sae-greedy covers every latent after 23 picks;
  q = 0.9: r = 0.85, 1250 of 1574 reachable latents covered by 50 picks; q = 0.99: r = 0.20, saturated after 42.
  The record-level matrix of max-pooled activations goes to the unchanged sae-greedy / sae-simscale runners with
  ``threshold = tau``, so sae-greedy covers exactly the sets A(x), and |A(x)| is the complexity sae-simscale orders
  by.

The run record gets ``extra["lm"]`` (model name, digest, layer, activation settings) and, for sae-*, ``extra["sae"]``
(token count, SAE config, threshold and its rule, mean |A(x)|, and r(length, |A(x)|): Pearson r between a record's
content-token count and |A(x)|, beside the 0.92 of Yang et al. 2025).
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp

from datacomp.cost import CostLedger
from datacomp.errors import ConfigError, is_int
from datacomp.io import atomic_write
from datacomp.lm import (LM_REGISTRY, ActivationConfig, LanguageModel, layer_index, load_lm, parse_lm_embedder,
                         record_activations, resolve_lm, token_activations)

from .cache import Cache, cache_args
from .job import Job
from .options import TextOptions

__all__ = ["DEFAULT_QUANTILE", "PAPER_R", "lm_model_name", "check_lm_options", "activation_config", "adds_bos",
           "max_pool_tokens", "token_threshold", "pearson_r", "lm_inputs"]

DEFAULT_QUANTILE = 0.9
PAPER_R = 0.92  # r(length, |A(x)|) reported by Yang et al. 2025 (arXiv 2502.14050)


def lm_model_name(options: TextOptions) -> str | None:
    """The model of an ``lm:`` embedder, or None for any other embedder."""
    return parse_lm_embedder(options.embedder)


def check_lm_options(options: TextOptions) -> str | None:
    """Refuse bad LM settings before any work: the ``lm:`` spec, ``--lm-layer``, ``--lm-batch-size`` and a model
    that does not exist (MissingInputError) or is not local (ConfigError). Returns the model name or None."""
    name = lm_model_name(options)
    if name is None:
        return None
    if not is_int(options.lm_layer):
        raise ConfigError(f"--lm-layer must be an integer (-1 = last layer), got {options.lm_layer!r}")
    activation_config(options).check()
    _, source = resolve_lm(name)
    n_layers = _declared_layers(name, source)
    if n_layers is not None and not -n_layers <= options.lm_layer < n_layers:
        raise ConfigError(f"--lm-layer must be an integer in {-n_layers}..{n_layers - 1} ({name} has {n_layers} "
                          f"decoder layers, -1 = last), got {options.lm_layer}")
    return name


def _declared_layers(name: str, source: Path) -> int | None:
    """The decoder layer count a model declares without loading it (registry facts or ``config.json``), or None."""
    if name in LM_REGISTRY:
        return LM_REGISTRY.entry(name).info.get("num_layers")
    try:
        value = json.loads((Path(source) / "config.json").read_text()).get("num_hidden_layers")
    except (OSError, ValueError, AttributeError):
        return None  # load_lm reports what is wrong with the folder
    return value if is_int(value) else None


def activation_config(options: TextOptions) -> ActivationConfig:
    """The harvest settings of ``options``: ``--lm-layer``, ``--lm-batch-size``, ``--max-length``."""
    return ActivationConfig(layer=options.lm_layer, batch_size=options.lm_batch_size, max_length=options.max_length)


def _activation_cache(cache: Cache) -> bool | Path:
    enabled, folder = cache_args(cache)
    return Path(folder) / "lm" if enabled and folder is not None else enabled


def max_pool_tokens(acts: sp.csr_matrix, records: np.ndarray, n_records: int) -> sp.csr_matrix:
    """Record x latent matrix of the maximum activation of each latent over the record's tokens.

    Args:
        acts: token x latent activations (non-negative, CSR).
        records: record index of each token row.
        n_records: number of records (rows of the result).
    """
    coo = sp.coo_matrix(acts)
    rows = np.asarray(records, dtype=np.int64)[coo.row]
    order = np.lexsort((-coo.data, coo.col, rows))  # per (record, latent): the largest value first
    rows, cols, vals = rows[order], coo.col[order], coo.data[order]
    first = np.ones(len(rows), dtype=bool)
    first[1:] = (rows[1:] != rows[:-1]) | (cols[1:] != cols[:-1])
    out = sp.csr_matrix((vals[first], (rows[first], cols[first])), shape=(n_records, acts.shape[1]),
                        dtype=np.float32)
    out.sort_indices()
    return out


def token_threshold(acts: sp.csr_matrix, params: dict) -> tuple[float, float | None, str]:
    """``(tau, quantile, rule)``: ``params["threshold"]`` when given, else the ``threshold_quantile`` (default
    :data:`DEFAULT_QUANTILE`) quantile of the positive token-level activations."""
    if params.get("threshold") is not None and params.get("threshold_quantile") is None:
        return float(params["threshold"]), None, "given (--set threshold=)"
    q = params.get("threshold_quantile")
    q = DEFAULT_QUANTILE if q is None else q
    if isinstance(q, bool) or not isinstance(q, (int, float)) or not 0.0 <= q < 1.0:
        raise ConfigError(f"threshold_quantile must be in [0, 1), got {q!r}")
    positive = acts.data[acts.data > 0]
    tau = float(np.quantile(positive, q)) if positive.size else 0.0
    return tau, float(q), f"quantile {q} of the positive token-level SAE activations"


def pearson_r(x: np.ndarray, y: np.ndarray) -> float | None:
    """Pearson correlation of ``x`` and ``y``, or None when either is constant."""
    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    if len(x) < 2 or np.ptp(x) == 0 or np.ptp(y) == 0:
        return None
    return float(np.corrcoef(x, y)[0, 1])


def adds_bos(lm: LanguageModel) -> bool:
    """Whether the tokenizer starts every text with a special token (BOS), which the harvest already drops."""
    ids = lm.tokenizer("a")["input_ids"]
    return bool(ids) and ids[0] in set(lm.tokenizer.all_special_ids)


def _model_info(lm: LanguageModel, acts: Any, cfg: ActivationConfig) -> dict:
    return {"name": lm.name, "model_sha256": lm.digest, "layer": int(acts.layer), "layer_requested": cfg.layer,
            "num_layers": lm.num_layers, "hidden_size": lm.hidden_size, "batch_size": cfg.batch_size,
            "max_length": cfg.max_length, "bf16": bool(acts.config.get("bf16")), "first_token_dropped": cfg.drop_first,
            "n_tokens": int(acts.counts.sum()), "truncated_records": int(np.asarray(acts.truncated).sum()),
            "from_cache": acts.from_cache, "cache_key": acts.key, "seconds": round(acts.seconds, 4),
            "load_seconds": round(lm.load_seconds, 4)}


def _sae_inputs(job: Job, lm: LanguageModel, texts: list[str], cfg: ActivationConfig, config: dict) -> dict:
    tok = token_activations(lm, texts, cfg, cache=_activation_cache(job.options.cache), ledger=job.ledger)
    config["lm"] = _model_info(lm, tok, cfg)
    sae, config["sae"] = job.sae_for(tok.vectors)
    if sae.history.get("cost"):  # select() sees only the pooled activations: the SAE's one-off cost is added here
        job.ledger.merge(CostLedger.from_dict(sae.history["cost"]))
    acts = sae.activations(tok.vectors)
    tau, quantile, rule = token_threshold(acts, job.params)
    pooled = max_pool_tokens(acts, tok.records, len(texts))
    sizes = np.diff(sp.csr_matrix(pooled > tau).indptr)
    config["sae_tokens"] = {
        "lm": lm.name, "model_sha256": lm.digest, "layer": int(tok.layer), "n_tokens": int(len(tok.records)),
        "first_token_dropped": cfg.drop_first, "sae": config["sae"], "threshold": tau, "threshold_quantile": quantile,
        "threshold_rule": rule,
        "activated_set": "latents whose activation exceeds the threshold on at least one content token",
        "mean_active": float(sizes.mean()), "min_active": int(sizes.min()), "max_active": int(sizes.max()),
        "r_length_active": pearson_r(tok.counts, sizes), "length": "content tokens per record",
        "paper_r_length_active": PAPER_R}
    if job.out is not None:
        active = sp.csr_matrix(pooled > tau, dtype=bool)
        atomic_write(job.out / "activated_sets.npz", lambda fh: np.savez(
            fh, indptr=active.indptr, indices=active.indices, shape=np.array(active.shape), threshold=tau))
        config["sae_tokens"]["activated_sets"] = "activated_sets.npz"
    job.params.pop("threshold_quantile", None)  # resolved at token level: the runner applies tau as given
    job.params["threshold"] = tau
    return {"activations": pooled}


def lm_inputs(job: Job, texts: list[str], config: dict) -> dict:
    """select() inputs from the LM named by ``job.options.text.embedder`` (module docstring); records what was
    used in ``config`` (``lm``, ``embedding``, and ``sae`` / ``sae_tokens`` for sae-* methods)."""
    opts = job.options.text
    lm = load_lm(lm_model_name(opts), device=job.device)
    cfg = replace(activation_config(opts), drop_first=not adds_bos(lm))
    layer_index(lm.model, cfg.layer)  # out of range: ConfigError before any forward pass
    if job.method.startswith("sae-"):
        return _sae_inputs(job, lm, texts, cfg, config)
    rec = record_activations(lm, texts, cfg, cache=_activation_cache(job.options.cache), ledger=job.ledger)
    config["lm"] = _model_info(lm, rec, cfg)
    config["embedding"] = {"embedder": opts.embedder, "pooling": "mean over content tokens", "normalised": False,
                           "dim": int(rec.mean.shape[1]), "from_cache": rec.from_cache, "cache_key": rec.key}
    return job.feature_inputs(rec.mean, config)
