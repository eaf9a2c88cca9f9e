"""``EvalResult``: the accuracies of fresh models trained on one small set, with the protocol that produced them."""

from __future__ import annotations

import statistics
from dataclasses import dataclass, field

from ..cost import CostLedger
from ..errors import FormatError
from .protocols import Protocol

__all__ = ["EvalResult"]


@dataclass
class EvalResult:
    """Accuracies of fresh models trained on one small set.

    Attributes:
        protocol: The protocol every run used.
        model: Registered model name.
        dataset: Dataset name (its test split scored the models).
        accuracies: Test accuracy of each run, in [0, 1].
        num_train_images: Images the models were trained on (decoded, for multi-formation sets).
        cost: Cost ledger of the training.
        baseline: The random real baseline evaluated the same way (see
            :func:`datacomp.evaluation.evaluate_random_baseline`), when it was asked for.
    """

    protocol: Protocol
    model: str
    dataset: str
    accuracies: list[float]
    num_train_images: int
    cost: CostLedger = field(default_factory=CostLedger)
    baseline: "EvalResult | None" = None

    @property
    def mean(self) -> float:
        return float(statistics.fmean(self.accuracies))

    @property
    def std(self) -> float:
        return float(statistics.pstdev(self.accuracies)) if len(self.accuracies) > 1 else 0.0

    @property
    def improvement_over_random(self) -> float | None:
        """DD-Ranking IOR against :attr:`baseline` (mean accuracy difference), or ``None`` without a baseline."""
        return None if self.baseline is None else self.mean - self.baseline.mean

    def summary(self) -> str:
        text = (f"{100 * self.mean:.2f} +- {100 * self.std:.2f} % ({len(self.accuracies)} runs, model {self.model}, "
                f"protocol '{self.protocol.name}')")
        if self.baseline is not None:
            text += (f"; random baseline {100 * self.baseline.mean:.2f} %, IOR "
                     f"{100 * self.improvement_over_random:+.2f} pts")
        return text

    def to_dict(self) -> dict:
        doc = {
            "protocol": self.protocol.name,
            "protocol_config": self.protocol.to_dict(),
            "model": self.model,
            "dataset": self.dataset,
            "accuracies": list(self.accuracies),
            "mean": self.mean,
            "std": self.std,
            "num_train_images": self.num_train_images,
            "epochs": self.protocol.epochs,
            "cost": self.cost.to_dict(),
        }
        if self.baseline is not None:
            doc["baseline"] = self.baseline.to_dict()
            doc["improvement_over_random"] = self.improvement_over_random
        return doc

    @classmethod
    def from_dict(cls, doc: dict) -> "EvalResult":
        """Read :meth:`to_dict` output (also the ``eval`` / ``baseline`` entries of 0.1.0 ``run.json`` files)."""
        if not isinstance(doc, dict):
            raise FormatError(f"an evaluation result must be a JSON object, got {type(doc).__name__}")
        baseline = doc.get("baseline")
        try:
            return cls(
                protocol=Protocol.from_dict(doc["protocol_config"]),
                model=str(doc["model"]),
                dataset=str(doc["dataset"]),
                accuracies=[float(a) for a in doc["accuracies"]],
                num_train_images=int(doc["num_train_images"]),
                cost=CostLedger.from_dict(doc["cost"]) if doc.get("cost") else CostLedger(),
                baseline=cls.from_dict(baseline) if isinstance(baseline, dict) else None,
            )
        except KeyError as err:
            raise FormatError(f"evaluation result lacks {err}") from None
        except (TypeError, ValueError) as err:
            if isinstance(err, FormatError):
                raise
            raise FormatError(f"evaluation result is malformed: {err}") from None
