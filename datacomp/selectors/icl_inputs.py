"""Data Whisperer scores for a text selection (``source="icl"``): the causal LM, the task metric, the settings.

The model is ``--embedder lm:NAME_OR_PATH`` (loaded with eager attention), :data:`DEFAULT_MODEL` when the embedder
is left at its default; any other embedder is refused (the scores come from generation, not from embeddings). The
texts are split into prompt and reference response at their last ``"### Response:\\n"``
(:func:`datacomp.lm.tasks.split_prompt_response`) and answers are scored with the metric of ``--task`` (default
``alpaca``: ROUGE-L). Settings: the method parameters (``--set n_demos= n_queries= folds= max_new_tokens= layer=
max_length=``), ``--lm-batch-size`` (prompts per generation call) and ``--seed``. The run record gets
``extra["whisperer"]``: the settings, episodes, generated tokens, seconds and the model.

The scores are cached (:func:`datacomp.lm.whisperer_cache.cached_whisper_scores`) under
``$DATACOMP_CACHE/lm/whisperer``, or ``FOLDER/lm`` for ``cache=FOLDER`` (``cache=False``: neither read nor written), so
another budget or another selection rule on the same pool reuses them: the block then says ``from_cache: true`` and
the run's cost keeps the original ``lm-icl-scoring`` phase (its seconds and FLOPs), since the scores cost that to
make.
"""

from __future__ import annotations

from pathlib import Path

from datacomp.errors import ConfigError
from datacomp.lm import load_lm, parse_lm_embedder, resolve_lm
from datacomp.lm.tasks import get_task, split_prompt_response
from datacomp.lm.whisperer_plan import WhispererConfig, check_pool
from datacomp.lm.whisperer_cache import cached_whisper_scores

from .cache import Cache, cache_args
from .job import Job
from .methods_icl import WHISPERER_PARAMS
from .options import TextOptions

__all__ = ["DEFAULT_MODEL", "DEFAULT_TASK", "icl_model_name", "whisperer_config", "check_icl_job", "icl_inputs",
           "whisperer_cache"]

DEFAULT_MODEL = "smollm2-135m-instruct"
DEFAULT_TASK = "alpaca"


def icl_model_name(options: TextOptions) -> str:
    """The scoring LM: the model of an ``lm:`` embedder, or :data:`DEFAULT_MODEL` for the default embedder."""
    name = parse_lm_embedder(options.embedder)
    if name is not None:
        return name
    if options.embedder != TextOptions().embedder:
        raise ConfigError(f"data-whisperer scores with a causal LM: give --embedder lm:NAME_OR_PATH (default "
                          f"lm:{DEFAULT_MODEL}), not {options.embedder!r}")
    return DEFAULT_MODEL


def whisperer_config(job: Job) -> WhispererConfig:
    """The :class:`~datacomp.lm.WhispererConfig` of ``job`` (module docstring), checked."""
    defaults = job.spec.prepare_params
    values = {k: job.params.get(k, defaults[k]) for k in WHISPERER_PARAMS}
    config = WhispererConfig(**values, batch_size=job.options.text.lm_batch_size, seed=job.seed)
    config.check()
    return config


def check_icl_job(job: Job) -> None:
    """Refuse bad settings and a missing model before any work."""
    whisperer_config(job)
    resolve_lm(icl_model_name(job.options.text))


def whisperer_cache(cache: Cache) -> bool | Path:
    """The ``cache`` argument of :func:`~datacomp.lm.whisperer_cache.cached_whisper_scores` for a run's cache
    setting."""
    enabled, folder = cache_args(cache)
    return Path(folder) / "lm" if enabled and folder is not None else enabled


def icl_inputs(job: Job, texts: list[str], config: dict) -> dict:
    """``{"scores": ...}`` of :func:`datacomp.lm.whisper_scores` on ``texts``; records ``config["whisperer"]``."""
    opts = job.options.text
    settings = whisperer_config(job)
    check_pool(len(texts), settings)  # before the model is loaded
    prompts, responses = split_prompt_response(texts)
    task = get_task(opts.task or DEFAULT_TASK)
    lm = load_lm(icl_model_name(opts), device=job.device, attn_implementation="eager")
    job.say(f"data-whisperer: scoring {len(texts)} records with {lm.name} ({task.name}, {task.metric})")
    result = cached_whisper_scores(lm, prompts, responses, task, settings, cache=whisperer_cache(job.options.cache),
                                   ledger=job.ledger, progress=job.progress)
    if result.from_cache:
        job.say(f"data-whisperer: scores read from the cache ({result.cache_path})")
    config["whisperer"] = {**result.config, "task": task.name, "metric": task.metric, "model": lm.describe(),
                           "score_mean": float(result.scores.mean()), "score_max": float(result.scores.max()),
                           "from_cache": result.from_cache, "cache_key": result.key}
    return {"scores": result.scores}
