"""Fine-tuning tasks: how a record becomes a prompt and a reference response, and how an answer is scored.

A task names the record fields, the prompt template and the metric, so that selection (Data Whisperer's in-context
scoring) and fine-tuning evaluation (``datacomp finetune``) read the data the same way:

==========  ==============================  ==========================================================
task        fields (instruction, output)    metric
==========  ==============================  ==========================================================
alpaca      instruction [+ input], output   ROUGE-L F1 (``rouge-score``, stemming on)
gsm8k       question, answer                exact match of the final number (the text after ``####``,
                                            else the last number of the answer)
dialogsum   dialogue, summary               ROUGE-L F1
==========  ==============================  ==========================================================

Every text is ``prompt + response``; the prompt ends with ``"### Response:\\n"`` (Alpaca's format), so the
response tokens of a fine-tuning example are exactly the tokens after the prompt.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from datacomp.errors import ConfigError
from datacomp.registry import Registry

__all__ = ["Task", "TASKS", "get_task", "rouge_l", "final_number", "final_number_match", "split_prompt_response",
           "RESPONSE_MARKER"]

RESPONSE_MARKER = "### Response:\n"
_NUMBER = re.compile(r"-?\d[\d,]*(?:\.\d+)?")


def final_number(text: str) -> str | None:
    """The answer number of a GSM8K-style text: what follows the last ``####``, else the last number in the text.

    Commas are dropped and a trailing ``.0`` is removed, so ``"1,000.0"`` and ``"1000"`` compare equal.
    """
    tail = text.rsplit("####", 1)[1] if "####" in text else text
    found = _NUMBER.findall(tail)
    if not found:
        return None
    value = found[0] if "####" in text else found[-1]
    value = value.replace(",", "")
    if "." in value:
        value = value.rstrip("0").rstrip(".")
    return value


def final_number_match(predictions: Sequence[str], references: Sequence[str]) -> np.ndarray:
    """1.0 where the prediction's final number equals the reference's, else 0.0 (per pair)."""
    _same_length(predictions, references)
    out = np.zeros(len(predictions), dtype=np.float64)
    for i, (p, r) in enumerate(zip(predictions, references)):
        ref = final_number(r)
        out[i] = float(ref is not None and final_number(p) == ref)
    return out


def rouge_l(predictions: Sequence[str], references: Sequence[str]) -> np.ndarray:
    """ROUGE-L F1 of each prediction against its reference (``rouge-score``, Porter stemming), in [0, 1]."""
    _same_length(predictions, references)
    try:
        from rouge_score import rouge_scorer
    except ImportError as err:  # pragma: no cover - part of the [llm] extra
        raise ConfigError("ROUGE-L needs the rouge-score package: pip install -e \".[llm]\"") from err
    scorer = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=True)
    return np.array([scorer.score(r, p)["rougeL"].fmeasure for p, r in zip(predictions, references)],
                    dtype=np.float64)


def _same_length(predictions: Sequence[str], references: Sequence[str]) -> None:
    if len(predictions) != len(references):
        raise ConfigError(f"{len(predictions)} predictions for {len(references)} references")


@dataclass(frozen=True)
class Task:
    """A fine-tuning task (module docstring).

    Attributes:
        name: registered name (``--task``).
        fields: record fields as ``(instruction, input, output)``; ``None`` for a field the task has not.
        template: ``str.format`` template over ``{instruction}``, ``{input}``, ``{output}`` ending with
            ``"### Response:\\n{output}"``; ``None``: Alpaca's (the input block only when the input is non-empty).
        metric: ``"rouge-l"`` or ``"final-number"``.
        description: one line for listings.
    """

    name: str
    fields: tuple[str | None, str | None, str | None]
    template: str | None
    metric: str
    description: str

    def score(self, predictions: Sequence[str], references: Sequence[str]) -> np.ndarray:
        """Per-pair metric values in [0, 1]."""
        return METRICS[self.metric](predictions, references)


METRICS: dict[str, Callable[[Sequence[str], Sequence[str]], np.ndarray]] = {
    "rouge-l": rouge_l, "final-number": final_number_match}

TASKS: Registry = Registry("task", option="--task")


def _register(task: Task) -> None:
    TASKS.add(task.name, task, task.description)


_register(Task("alpaca", ("instruction", "input", "output"), None, "rouge-l",
               "Alpaca instruction records; ROUGE-L of the response"))
_register(Task("gsm8k", ("question", None, "answer"),
               "### Instruction:\nSolve the math problem step by step. End with '#### ' and the final number.\n\n"
               "### Input:\n{instruction}\n\n" + RESPONSE_MARKER + "{output}",
               "final-number", "GSM8K grade-school maths (Data Whisperer's split); exact match of the final number"))
_register(Task("dialogsum", ("dialogue", None, "summary"),
               "### Instruction:\nSummarize the following dialogue.\n\n### Input:\n{instruction}\n\n"
               + RESPONSE_MARKER + "{output}",
               "rouge-l", "DialogSum dialogue summaries (Data Whisperer's split); ROUGE-L of the summary"))


def get_task(name: str) -> Task:
    """The registered task ``name`` (``alpaca``, ``gsm8k``, ``dialogsum``)."""
    return TASKS.get(name)


def split_prompt_response(texts: Sequence[str]) -> tuple[list[str], list[str]]:
    """Split rendered texts at their last :data:`RESPONSE_MARKER`: ``(prompts ending with it, responses)``."""
    prompts, responses = [], []
    for i, text in enumerate(texts):
        cut = text.rfind(RESPONSE_MARKER)
        if cut < 0:
            raise ConfigError(f"text {i} has no {RESPONSE_MARKER.strip()!r} line: a fine-tuning text needs a response "
                              "part (use a task, or a template ending with '### Response:\\n{output}')")
        prompts.append(text[:cut + len(RESPONSE_MARKER)])
        responses.append(text[cut + len(RESPONSE_MARKER):])
    return prompts, responses
