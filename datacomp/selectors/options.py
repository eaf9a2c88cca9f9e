"""Settings of a dataset-level selection (:func:`~datacomp.selectors.select_dataset`), grouped by what they steer.

:class:`SelectOptions` holds the run options (output folder, device, quiet, cache, class balance) and one group
each for the proxy of image methods (:class:`ProxyOptions`), text inputs (:class:`TextOptions`), the sparse
autoencoder of the sae-* methods (:class:`SAEOptions`) and the evaluation of the chosen subset
(:class:`EvalOptions`). Every field has the command line's default; ``datacomp select --help`` names the flag of each.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field
from typing import Any

from datacomp.errors import ConfigError, is_int

from .cache import Cache

__all__ = ["ProxyOptions", "TextOptions", "SAEOptions", "EvalOptions", "SelectOptions", "CCS_SCORES"]

CCS_SCORES = ("el2n", "forgetting", "aum", "uncertainty", "grand")


def _at_least(value: Any, minimum: int, flag: str) -> None:
    if not is_int(value) or value < minimum:
        raise ConfigError(f"{flag} must be >= {minimum} (an integer), got {value!r}")


@dataclass
class ProxyOptions:
    """The proxy model of image methods: features of ``model`` trained ``epochs`` epochs under ``protocol`` (herding,
    kcenter, facility-location, sae-*), or its training dynamics with DeepCore's recipe (forgetting, el2n, grand,
    uncertainty, ccs: ``runs``, ``lr``, ``batch_size``)."""

    model: str = "convnet-3-in"
    weights: str | os.PathLike | None = None
    seed: int | None = None  # default: the selection seed
    epochs: int = 10
    protocol: str = "quick"
    bf16: bool = False
    runs: int = 1
    lr: float = 0.05
    batch_size: int = 128
    ccs_score: str = "el2n"

    def check(self, needs_dynamics: bool, method: str) -> None:
        _at_least(self.epochs, 0, "--proxy-epochs")
        if needs_dynamics and self.epochs < 1:
            raise ConfigError(f"{method} needs training dynamics: --proxy-epochs must be >= 1")
        _at_least(self.runs, 1, "--proxy-runs")
        _at_least(self.batch_size, 1, "--proxy-batch-size")
        if isinstance(self.lr, bool) or not isinstance(self.lr, (int, float)) or not self.lr > 0:
            raise ConfigError(f"--proxy-lr must be > 0, got {self.lr!r}")
        if self.seed is not None:
            _at_least(self.seed, 0, "--features-seed")
        if self.ccs_score not in CCS_SCORES:
            raise ConfigError(f"--ccs-score must be one of {', '.join(CCS_SCORES)}, got {self.ccs_score!r}")


@dataclass
class TextOptions:
    """Text datasets: which fields make the text, labels for balancing, what ``longest`` measures, the embedder.

    ``embedder = "lm:NAME_OR_PATH"`` embeds with a causal language model's activations at ``lm_layer`` (-1 = the
    last layer; harvested ``lm_batch_size`` records at a time, truncated at ``max_length`` tokens); ``limit`` keeps
    only the first ``limit`` records of the pool (None: all). ``task`` (``alpaca``, ``gsm8k``, ``dialogsum``;
    :data:`datacomp.lm.tasks.TASKS`) sets the fields and the template a task's records use (explicit ``fields`` /
    ``template`` win) and the metric of in-context scoring (data-whisperer).
    """

    task: str | None = None
    fields: list[str] | None = None
    template: str | None = None
    label_field: str | None = None
    length_field: str = "output"
    allow_hub: bool = False
    embedder: str = "tfidf"
    embed_dim: int = 256
    embed_batch_size: int = 64
    max_length: int = 256
    lm_layer: int = -1
    lm_batch_size: int = 8
    limit: int | None = None

    def check(self) -> None:
        if self.task is not None:
            from datacomp.lm.tasks import get_task
            get_task(self.task)
        if self.length_field not in ("output", "instruction", "input", "text"):
            raise ConfigError(f"--length-field must be output, instruction, input or text, got {self.length_field!r}")
        _at_least(self.embed_dim, 1, "--embed-dim")
        _at_least(self.embed_batch_size, 1, "--embed-batch-size")
        _at_least(self.max_length, 1, "--max-length")
        _at_least(self.lm_batch_size, 1, "--lm-batch-size")
        if self.limit is not None:
            _at_least(self.limit, 1, "--limit")


@dataclass
class SAEOptions:
    """The TopK SAE of the sae-* methods: a trained file (``path``), or one trained (and cached) on the features."""

    path: str | os.PathLike | None = None
    latents: int = 2048
    k: int = 32
    epochs: int = 10
    batch_size: int = 256

    def check(self) -> None:
        if self.path is not None:
            return
        for flag, value in (("--sae-latents", self.latents), ("--sae-k", self.k), ("--sae-epochs", self.epochs),
                            ("--sae-batch-size", self.batch_size)):
            _at_least(value, 1, flag)
        if self.k > self.latents:
            raise ConfigError(f"--sae-k {self.k} exceeds --sae-latents {self.latents}")


@dataclass
class EvalOptions:
    """Evaluation of an image subset: ``runs`` fresh ``model``s under ``protocol`` (0 = none), and the random real
    subset with the same per-class counts when ``baseline``."""

    runs: int = 3
    protocol: str = "quick"
    model: str = "convnet-3-in"
    baseline: bool = True

    def check(self) -> None:
        _at_least(self.runs, 0, "--eval-runs")


@dataclass
class SelectOptions:
    """Everything of a dataset-level selection besides the method, size, seed and parameters.

    Attributes:
        out: run folder to write (None: nothing is written). A folder holding another run is refused unless
            ``overwrite``; a second run on the same folder at the same time fails at once.
        overwrite: replace what ``out`` holds.
        device: ``auto`` (cuda when available), ``cpu``, ``cuda`` or ``cuda:N``; checked before any work.
        quiet: no progress bars or summary lines.
        cache: feature/SAE cache: True (``$DATACOMP_CACHE``), False (neither read nor write) or a folder (SAEs go
            into its ``sae/`` folder).
        class_balanced: split the budget across classes (images, or text with ``text.label_field``).
        weighted: store selection weights (facility location's cluster sizes) in the image set.
        data_root, download: where image datasets are read from, and whether a missing one may be downloaded.
    """

    out: str | os.PathLike | None = None
    overwrite: bool = False
    device: str = "auto"
    quiet: bool = False
    cache: Cache = True
    class_balanced: bool = True
    weighted: bool = False
    data_root: str | None = None
    download: bool = False
    proxy: ProxyOptions = field(default_factory=ProxyOptions)
    text: TextOptions = field(default_factory=TextOptions)
    sae: SAEOptions = field(default_factory=SAEOptions)
    eval: EvalOptions = field(default_factory=EvalOptions)

    def to_dict(self) -> dict[str, Any]:
        return {k: (str(v) if isinstance(v, os.PathLike) else v) for k, v in asdict(self).items()}
