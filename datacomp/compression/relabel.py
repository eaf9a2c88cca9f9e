"""Teacher relabelling: a small set's labels replaced by the teacher's soft labels (DD-Ranking / NCFM evaluation)."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from datacomp.compression.losses import check_kd_weights
from datacomp.errors import ConfigError
from datacomp.synset import SyntheticSet

__all__ = ["teacher_soft_labels", "relabel"]



@torch.no_grad()
def teacher_soft_labels(
    teacher: nn.Module, x: torch.Tensor, *, temperature: float = 1.0, batch_size: int = 512
) -> torch.Tensor:
    """Teacher probabilities ``softmax(teacher(x) / T)`` as float32 ``[N, K]`` (x normalised)."""
    check_kd_weights(temperature, 0.0)
    was_training = teacher.training
    teacher.eval()
    device = next(teacher.parameters()).device
    chunks = [teacher(x[i : i + batch_size].to(device)) for i in range(0, len(x), batch_size)]
    probs = torch.cat([F.softmax(logits / temperature, 1).cpu() for logits in chunks])
    teacher.train(was_training)
    return probs.float()


def relabel(teacher: nn.Module, synset: Any, mean: Any, std: Any, *, temperature: float = 1.0) -> Any:
    """Replace a small set's labels with the teacher's soft labels (the DD-Ranking / NCFM soft-label evaluation).

    Args:
        teacher: Trained classifier over the same classes (expects normalised images).
        synset: A :class:`datacomp.synset.SyntheticSet` (hard or soft labels, any space).
        mean: Per-channel mean of the dataset the teacher was trained on.
        std: Per-channel std of that dataset.
        temperature: Softening temperature of the stored probabilities.

    Returns:
        A new SyntheticSet with the same images and ``float32 [N, K]`` soft labels; its metadata records the
        relabelling (``relabel: {"temperature", "teacher"}``).
    """
    if not isinstance(synset, SyntheticSet):
        raise TypeError(f"synset must be a datacomp.synset.SyntheticSet, got {type(synset).__name__}")
    x = synset.normalized_images(mean, std)
    probs = teacher_soft_labels(teacher, x, temperature=temperature)
    if probs.shape[1] != synset.num_classes:
        raise ConfigError(
            f"teacher predicts {probs.shape[1]} classes but the set has {synset.num_classes}: teacher and data must "
            f"share classes"
        )
    probs = probs / probs.sum(1, keepdim=True)
    metadata = dict(synset.metadata)
    metadata["relabel"] = {"temperature": temperature, "teacher": getattr(teacher, "spec", None)}
    return SyntheticSet(
        images=synset.images.clone(), labels=probs, metadata=metadata, lr=synset.lr, weights=synset.weights,
        source_indices=synset.source_indices,
    )
