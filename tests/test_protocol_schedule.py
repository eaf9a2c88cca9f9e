"""The DC/DSA/DM reference's evaluation schedule (``evaluate_synset`` in VICO-UoE/DatasetCondensation), restated by
hand in plain PyTorch and compared with :func:`datacomp.evaluation.train_classifier` under the protocols that name it.

The reference, for ``Epoch`` = ``protocol.epochs``: ``for ep in range(Epoch + 1)``: train one epoch; then, if
``ep == Epoch // 2 + 1``, ``lr *= 0.1`` and a new ``SGD(lr, momentum=0.9, weight_decay=5e-4)`` replaces the optimiser.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from datacomp.cost import CostLedger
from datacomp.errors import ConfigError
from datacomp.evaluation import PROTOCOLS, Protocol, TrainingRun, get_protocol, train_classifier

N, BATCH, EPOCHS, LR, SEED = 40, 16, 6, 0.05, 3


def _data() -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(0)
    return torch.randn(N, 1, 4, 4, generator=gen), torch.randint(0, 3, (N,), generator=gen)


def _model() -> nn.Module:
    torch.manual_seed(1)
    return nn.Sequential(nn.Flatten(), nn.Linear(16, 8), nn.Tanh(), nn.Linear(8, 3))


def _weights(model: nn.Module) -> torch.Tensor:
    return torch.cat([p.detach().flatten() for p in model.parameters()])


def _sgd(model: nn.Module, lr: float) -> torch.optim.SGD:
    return torch.optim.SGD(model.parameters(), lr, momentum=0.9, weight_decay=0.0005)


def _hand_loop(epochs: int, decay_after: int, fresh_optimizer: bool) -> tuple[torch.Tensor, list[float]]:
    """Plain SGD training: ``epochs`` epochs; after epoch ``decay_after`` the lr is multiplied by 0.1, with a new
    optimiser (``fresh_optimizer``) or by changing the old one's lr (momentum kept).

    The batch order mirrors ``datacomp.training.fit``: the run's generator first draws the augmentation seed (one
    ``randint``), then one ``randperm`` per epoch, cut into consecutive batches.
    """
    x, y = _data()
    net = _model()
    gen = torch.Generator().manual_seed(SEED)
    torch.randint(0, 2**31 - 1, (1,), generator=gen)
    lr = LR
    opt = _sgd(net, lr)
    lrs = []
    for ep in range(epochs):
        order = torch.randperm(N, generator=gen)
        for start in range(0, N, BATCH):
            idx = order[start : start + BATCH]
            opt.zero_grad()
            F.cross_entropy(net(x[idx]), y[idx]).backward()
            opt.step()
        lrs.append(lr)
        if ep == decay_after:
            lr *= 0.1
            if fresh_optimizer:
                opt = _sgd(net, lr)
            else:
                for group in opt.param_groups:
                    group["lr"] = lr
    return _weights(net), lrs


def _reference(fresh_optimizer: bool = True) -> tuple[torch.Tensor, list[float]]:
    """``evaluate_synset``'s loop: ``range(Epoch + 1)``, decay after ``ep == Epoch // 2 + 1``."""
    return _hand_loop(EPOCHS + 1, EPOCHS // 2 + 1, fresh_optimizer)


def _datacomp(protocol: Protocol) -> tuple[torch.Tensor, dict, CostLedger]:
    x, y = _data()
    model = _model()
    ledger = CostLedger()
    out = train_classifier(model, x, y, protocol, run=TrainingRun(torch.Generator().manual_seed(SEED), ledger))
    return _weights(model), out, ledger


def _quick(**overrides) -> Protocol:
    return get_protocol("quick", epochs=EPOCHS, batch_size=BATCH, lr=LR, **overrides)


def test_presets_following_evaluate_synset_use_the_reference_schedule():
    schedules = {name: p.schedule for name, p in PROTOCOLS.items()}
    assert schedules == {"dm": "dc-reference", "quick": "dc-reference", "quick-bf16": "dc-reference",
                         "ncfm": "multistep", "smoke": "multistep"}


@pytest.mark.parametrize("name, high, low", [("quick", 152, 149), ("dm", 502, 499)])
def test_preset_lr_per_epoch_is_the_references(name, high, low):
    # Epoch 300: epochs 0-151 at 0.01, 152-300 at 0.01 * 0.1; Epoch 1000: 0-501 and 502-1000
    protocol = PROTOCOLS[name]
    assert protocol.train_epochs == protocol.epochs + 1 == high + low
    assert protocol.epoch_lrs() == [0.01] * high + [0.01 * 0.1] * low


def test_training_matches_the_hand_written_reference():
    ref_weights, ref_lrs = _reference()
    weights, out, ledger = _datacomp(_quick())
    assert ref_lrs == [LR] * 5 + [LR * 0.1] * 2  # Epoch 6: epochs 0-4 at lr, 5-6 decayed
    assert out["lr_per_epoch"] == ref_lrs == _quick().epoch_lrs()
    torch.testing.assert_close(weights, ref_weights, rtol=0, atol=1e-6)
    assert out["epochs"] == EPOCHS + 1 and out["steps"] == 3 * (EPOCHS + 1)
    extra = ledger["train-on-subset"].extra
    assert extra["epochs"] == EPOCHS + 1 and extra["samples_seen"] == N * (EPOCHS + 1)


def test_momentum_buffers_restart_at_the_decay():
    weights, _, _ = _datacomp(_quick())
    fresh, _ = _reference(fresh_optimizer=True)
    kept, _ = _reference(fresh_optimizer=False)
    torch.testing.assert_close(weights, fresh, rtol=0, atol=1e-6)
    # keeping the old optimiser (its momentum) after the decay gives visibly different weights
    assert (weights - kept).abs().max() > 1e-4


def test_multistep_schedule_keeps_one_optimiser_and_epochs():
    # schedule="multistep" is the earlier behaviour: Epoch epochs, lr x0.1 from epoch round(0.5 * Epoch), momentum kept
    ref_weights, ref_lrs = _hand_loop(EPOCHS, EPOCHS // 2 - 1, fresh_optimizer=False)
    protocol = _quick(schedule="multistep")
    weights, out, _ = _datacomp(protocol)
    assert out["lr_per_epoch"] == ref_lrs == protocol.epoch_lrs() == [LR] * 3 + [LR * 0.1] * 3
    torch.testing.assert_close(weights, ref_weights, rtol=0, atol=1e-6)
    assert out["epochs"] == EPOCHS and protocol.name == "quick+batch_size=16,epochs=6,lr=0.05,schedule=multistep"


def test_old_protocol_configs_read_as_multistep():
    doc = PROTOCOLS["quick"].to_dict()
    assert doc["schedule"] == "dc-reference"
    del doc["schedule"]  # a record written before the field existed trained with the multistep schedule
    assert Protocol.from_dict(doc).schedule == "multistep"


@pytest.mark.parametrize(
    "overrides, match",
    [({"schedule": "cosine"}, "protocol schedule must be one of multistep, dc-reference, got 'cosine'"),
     ({"optimizer": "adamw"}, "schedule 'dc-reference' rebuilds an SGD optimiser.*set schedule='multistep'"),
     ({"milestones": (0.3, 0.6)}, r"milestones \(0.3, 0.6\) need schedule='multistep'"),
     ({"gamma": 0.0}, "gamma .*must be > 0, got 0.0")],
)
def test_schedule_misconfigurations_are_refused(overrides, match):
    with pytest.raises(ConfigError, match=match):
        get_protocol("quick", **overrides)


def test_adamw_with_milestones_stays_valid_under_multistep():
    protocol = get_protocol("quick", optimizer="adamw", milestones=(0.3, 0.6), schedule="multistep")
    assert protocol.train_epochs == 300 and protocol.decay_epochs() == [90, 180]
