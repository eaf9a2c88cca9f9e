"""A tiny randomly initialised Llama (2 layers, hidden 32) and a word-level tokenizer, built offline and saved as a
local Hugging Face folder: the language model of the tests (needs the [llm] extra)."""

from __future__ import annotations

from pathlib import Path

import torch

WORDS = ("the cat sat on a mat dog ran far away quick brown fox jumps over lazy red blue green tree house river "
         "and of to in is it was").split()


def tiny_tokenizer(bos: bool = True):
    """Word-level tokenizer over :data:`WORDS` with <unk>/<bos>/<eos>/<pad> (ids 0-3); ``bos`` adds <bos> first."""
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    vocab = {t: i for i, t in enumerate(["<unk>", "<bos>", "<eos>", "<pad>", *WORDS])}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    if bos:
        tok.post_processor = processors.TemplateProcessing(single="<bos> $A", special_tokens=[("<bos>", 1)])
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<bos>", eos_token="<eos>", pad_token="<pad>",
                                   unk_token="<unk>")


def save_tiny_llama(folder: Path, bos: bool = True) -> Path:
    """Save the tiny Llama (seed 0) and its tokenizer into ``folder``."""
    from transformers import LlamaConfig, LlamaForCausalLM

    tokenizer = tiny_tokenizer(bos)
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128,
                         bos_token_id=1, eos_token_id=2, pad_token_id=3)
    torch.manual_seed(0)
    LlamaForCausalLM(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder
