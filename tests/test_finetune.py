"""Fine-tuning evaluation (datacomp.lm.finetune, datacomp.lm.heldout_eval, ``datacomp finetune``) on the tiny Llama,
and the task metrics."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from datacomp.errors import ConfigError, DataError, MissingInputError

pytest.importorskip("transformers", reason='needs the [llm] extra: pip install -e ".[llm]"')
pytest.importorskip("peft", reason='needs the [llm] extra: pip install -e ".[llm]"')

from datacomp import lm as dlm  # noqa: E402
from datacomp.cli import main  # noqa: E402
from datacomp.lm import finetune as ft  # noqa: E402
from datacomp.lm import heldout_eval as ev  # noqa: E402
from datacomp.lm.tasks import final_number, final_number_match, get_task, rouge_l, split_prompt_response  # noqa
from datacomp.record import RunRecord  # noqa: E402

RECORDS = [
    {"instruction": "the cat", "input": "", "output": "sat on a mat"},
    {"instruction": "a dog", "input": "", "output": "ran far away"},
    {"instruction": "the fox", "input": "quick brown", "output": "jumps over the lazy dog"},
    {"instruction": "a tree", "input": "", "output": "is green"},
    {"instruction": "the river", "input": "", "output": "was blue and it ran"},
    {"instruction": "a house", "input": "", "output": "is red"},
    {"instruction": "the mat", "input": "", "output": "was in the house"},
    {"instruction": "a cat", "input": "", "output": "sat in the tree"},
]
TASK = get_task("alpaca")
FAST = ft.FinetuneConfig(steps=12, batch_size=4, lr=5e-3, bf16=False)
EVAL = ev.EvalConfig(batch_size=4, generate=2, max_new_tokens=4, bf16=False)


@pytest.fixture(scope="module")
def pairs():
    from datacomp.selectors.text import render_records

    return split_prompt_response(render_records(RECORDS, {"instruction": "instruction", "input": "input",
                                                          "output": "output"}))


@pytest.fixture()
def files(tmp_path):
    train, held = tmp_path / "train.json", tmp_path / "held.json"
    train.write_text(json.dumps(RECORDS))
    held.write_text(json.dumps(RECORDS[:4]))
    return train, held


# ---------------------------------------------------------------------------------------------------- metrics
@pytest.mark.parametrize("text, number", [("so 10 * 2 = 20\n#### 1,000", "1000"), ("x is 3 and then 7.50", "7.5"),
                                          ("#### -4", "-4"), ("no digits here", None), ("2.0 apples", "2")])
def test_final_number(text, number):
    assert final_number(text) == number


def test_task_metrics():
    np.testing.assert_array_equal(final_number_match(["it is 5", "#### 6", "none"], ["#### 5", "#### 7", "#### 1"]),
                                  [1.0, 0.0, 0.0])
    scores = rouge_l(["the cat sat", "a dog"], ["the cat sat", "the cat sat"])
    assert scores[0] == pytest.approx(1.0) and scores[1] == 0.0
    with pytest.raises(ConfigError, match="2 predictions for 1 references"):
        rouge_l(["a", "b"], ["a"])


def test_split_prompt_response_needs_the_marker():
    prompts, responses = split_prompt_response(["### Instruction:\nhi\n\n### Response:\nyes"])
    assert prompts == ["### Instruction:\nhi\n\n### Response:\n"] and responses == ["yes"]
    with pytest.raises(ConfigError, match="no '### Response:' line"):
        split_prompt_response(["just text"])


# ---------------------------------------------------------------------------------------------------- encoding / NLL
def test_encode_examples_marks_the_response(tiny, pairs):
    ex = ft.encode_examples(tiny.tokenizer, *pairs, max_length=64)
    for ids, start, prompt, resp in zip(ex.ids, ex.starts, *pairs):
        assert ids[:start] == tiny.tokenizer(prompt)["input_ids"]
        assert ids[start:] == tiny.tokenizer(resp, add_special_tokens=False)["input_ids"] + [tiny.tokenizer.eos_token_id]
    # too long: the response keeps its start (at most half the length), the prompt loses its start (BOS stays)
    short = ft.encode_examples(tiny.tokenizer, *pairs, max_length=6)
    assert short.truncated == sum(len(i) > 6 for i in ex.ids)
    for ids, start, full, full_start in zip(short.ids, short.starts, ex.ids, ex.starts):
        assert len(ids) <= 6 and ids[0] == tiny.tokenizer.bos_token_id and len(ids) - start >= 3
        assert ids[start:] == full[full_start:][:len(ids) - start]
        assert ids[1:start] == full[full_start - (start - 1):full_start]
    with pytest.raises(ConfigError, match="--max-length must be an integer >= 4"):
        ft.encode_examples(tiny.tokenizer, *pairs, max_length=3)


def test_response_nll_counts_response_tokens_only(tiny, pairs):
    ex = ft.encode_examples(tiny.tokenizer, *pairs, max_length=64)
    mean, sums = ev.response_nll(tiny.model, ex, batch_size=3, bf16=False, pad_id=tiny.tokenizer.pad_token_id)
    # hand computation: one unpadded forward per example, cross-entropy of the response tokens
    hand = []
    for ids, start in zip(ex.ids, ex.starts):
        with torch.no_grad():
            logits = tiny.model(input_ids=torch.tensor([ids])).logits[0]
        target = torch.tensor(ids[start:])
        hand.append(torch.nn.functional.cross_entropy(logits[start - 1:-1], target, reduction="sum").item())
    np.testing.assert_allclose(sums, hand, rtol=1e-5)
    assert mean == pytest.approx(sum(hand) / ex.response_tokens.sum(), rel=1e-5)
    # changing a prompt changes the context but a response-free prompt token is never a target
    assert ex.response_tokens.sum() == sum(len(i) - s for i, s in zip(ex.ids, ex.starts))


# ---------------------------------------------------------------------------------------------------- fine-tuning
@pytest.mark.parametrize("method", ["lora", "full"])
def test_finetune_lowers_the_loss_and_leaves_the_model_alone(tiny, pairs, method):
    weights = {k: v.clone() for k, v in tiny.model.state_dict().items()}
    cfg = ft.FinetuneConfig(**{**FAST.__dict__, "method": method, "lr": 5e-3 if method == "lora" else 1e-3})
    res = ft.finetune(tiny, pairs, pairs, TASK, cfg, eval_config=EVAL, progress=False)
    assert res.after.nll < res.before.nll - 0.1
    assert res.losses[-1] < res.losses[0]
    assert res.steps == 12 and res.epochs == pytest.approx(12 * 4 / 8)
    if method == "lora":
        assert 0 < res.trainable_params < res.total_params / 2
    else:
        assert res.trainable_params == res.total_params
    assert all(torch.equal(v, tiny.model.state_dict()[k]) for k, v in weights.items())
    assert res.after.generated == 2 and res.after.metric == "rouge-l" and 0 <= res.after.metric_mean <= 1


def test_epochs_become_steps_and_reused_baseline(tiny, pairs):
    cfg = ft.FinetuneConfig(steps=None, epochs=2, batch_size=3, bf16=False)
    assert cfg.num_steps(8) == 6
    first = ft.finetune(tiny, pairs, pairs, TASK, ft.FinetuneConfig(steps=1, bf16=False), eval_config=EVAL,
                        progress=False)
    again = ft.finetune(tiny, pairs, pairs, TASK, ft.FinetuneConfig(steps=1, bf16=False), eval_config=EVAL,
                        before=first.before, progress=False)
    assert again.before is first.before and again.after.nll == pytest.approx(first.after.nll, rel=1e-6)


@pytest.mark.parametrize("kwargs, match", [
    ({"method": "qlora"}, "method must be one of"),
    ({"steps": 0}, "--steps must be a positive integer"),
    ({"steps": None, "epochs": None}, "give the fine-tune length"),
    ({"steps": None, "epochs": -1}, "--epochs must be a positive number"),
    ({"batch_size": 0}, "--batch-size must be a positive integer"),
    ({"lr": 2.0}, "--lr must be a number in"),
])
def test_bad_finetune_config(kwargs, match):
    with pytest.raises(ConfigError, match=match):
        ft.FinetuneConfig(**kwargs).check()


def test_bad_eval_config():
    with pytest.raises(ConfigError, match="--generate must be an integer >= 0"):
        ev.EvalConfig(generate=-1).check()


# ---------------------------------------------------------------------------------------------------- CLI
def _cli(files, tiny_dir, out, *extra):
    train, held = files
    return main(["finetune", "--subset", str(train), "--heldout", str(held), "--lm", str(tiny_dir), "--steps", "3",
                 "--batch-size", "4", "--lr", "0.005", "--no-bf16", "--generate", "1", "--max-new-tokens", "3",
                 "--device", "cpu", "--quiet", "--out", str(out), *extra])


def test_cli_writes_the_run_record(files, tiny_dir, tmp_path, capsys):
    out = tmp_path / "run"
    assert _cli(files, tiny_dir, out) == 0
    assert "held-out response NLL:" in capsys.readouterr().out
    rec = RunRecord.read(out)
    doc = json.loads((out / "run.json").read_text())
    assert rec.kind == "finetune" and rec.method == "lora" and rec.num_items == 8
    assert doc["nll_after"] < doc["nll_before"] and doc["heldout_overlap"] == 4
    assert doc["finetune"]["steps"] == 3 and len(doc["finetune"]["losses"]) == 3
    assert {"eval-before", "finetune", "eval-after"} <= {p["name"] for p in doc["cost"]["phases"]}
    assert _cli(files, tiny_dir, out) == 2
    assert "already holds a run" in capsys.readouterr().err


def test_cli_reads_a_select_folder_and_saves_the_adapter(files, tiny_dir, tmp_path):
    sel = tmp_path / "sel"
    assert main(["select", "--method", "longest", "--dataset", str(files[0]), "--budget", "4", "--quiet",
                 "--out", str(sel)]) == 0
    out = tmp_path / "ft"
    assert _cli(files, tiny_dir, out, "--save") == 0
    doc = json.loads((out / "run.json").read_text())
    assert doc["num_items"] == 8 and (out / "model" / "adapter_model.safetensors").is_file()
    out2 = tmp_path / "ft2"
    train, held = files
    assert _cli((sel, held), tiny_dir, out2) == 0
    doc2 = json.loads((out2 / "run.json").read_text())
    assert doc2["num_items"] == 4 and doc2["subset"]["method"] == "longest"


@pytest.mark.parametrize("args, match", [
    (["--subset", "/nonexistent/sel"], "--subset /nonexistent/sel does not exist"),
    (["--heldout", "/nonexistent/h.json"], "--heldout /nonexistent/h.json does not exist"),
    (["--heldout-limit", "0"], "--heldout-limit must be a positive integer"),
    (["--steps", "0"], "--steps must be a positive integer"),
    (["--save", "--out", ""], None),
])
def test_cli_errors(files, tiny_dir, tmp_path, capsys, args, match):
    train, held = files
    base = {"--subset": str(train), "--heldout": str(held), "--lm": str(tiny_dir), "--steps": "1"}
    extra = []
    it = iter(args)
    for flag in it:
        if flag in base:
            base[flag] = next(it)
        elif flag == "--save":
            extra.append(flag)
        else:
            extra += [flag, next(it)]
    if match is None:  # --save without a run folder
        extra = ["--save"]
        match = "--save needs --out"
    argv = ["finetune", "--quiet", "--device", "cpu", *[x for kv in base.items() for x in kv], *extra]
    assert main(argv) == 2
    assert match in capsys.readouterr().err


def test_missing_subset_file_error_type(tmp_path):
    from datacomp.lm.finetune_run import finetune_subset

    with pytest.raises(MissingInputError, match="no selected.jsonl"):
        finetune_subset(tmp_path, tmp_path / "h.json")
