"""Shared test set-up: point the registry at the offline dataset copies when they are beside the repository."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

_SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"
if "DATACOMP_SHARED_DATA" not in os.environ and _SHARED.is_dir():
    os.environ["DATACOMP_SHARED_DATA"] = str(_SHARED)

# The user's cache (feature pools, features, converted language models) stays untouched: tests cache into a folder of
# their own for the session. USER_CACHE is the folder a test may opt back into for a costly one-off conversion.
USER_CACHE = os.environ.get("DATACOMP_CACHE") or str(Path.home() / ".cache" / "datacomp")


@pytest.fixture(autouse=True, scope="session")
def _session_cache(tmp_path_factory: pytest.TempPathFactory):
    previous = os.environ.get("DATACOMP_CACHE")
    os.environ["DATACOMP_CACHE"] = str(tmp_path_factory.mktemp("datacomp-cache"))
    yield
    if previous is None:
        os.environ.pop("DATACOMP_CACHE", None)
    else:
        os.environ["DATACOMP_CACHE"] = previous


# Tests are CPU-sized; keep them from oversubscribing small CI machines.
torch.set_num_threads(min(2, torch.get_num_threads()))


def shared_file(relative: str) -> Path | None:
    root = os.environ.get("DATACOMP_SHARED_DATA")
    path = Path(root) / relative if root else None
    return path if path is not None and path.is_file() else None


requires_cifar10 = pytest.mark.skipif(
    shared_file("cifar10/cifar10_jpeg.npz") is None,
    reason="needs the offline CIFAR-10 copy (set DATACOMP_SHARED_DATA to a folder with cifar10/cifar10_jpeg.npz)",
)
requires_mnist = pytest.mark.skipif(
    shared_file("mnist/mnist_test.npz") is None,
    reason="needs the offline MNIST copy (set DATACOMP_SHARED_DATA to a folder with mnist/mnist_test.npz)",
)


def load_benchmark(name: str):
    """Import ``benchmarks/<name>.py`` (not a package) as a module, for tests of its helpers."""
    import importlib.util

    path = Path(__file__).resolve().parents[1] / "benchmarks" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    """The tiny randomly initialised Llama of tests/tiny_lm.py, saved once per test module (needs the [llm] extra)."""
    pytest.importorskip("transformers", reason='needs the [llm] extra: pip install -e ".[llm]"')
    from tiny_lm import save_tiny_llama

    return save_tiny_llama(tmp_path_factory.mktemp("tiny-llama"))


@pytest.fixture(scope="module")
def tiny(tiny_dir):
    """The tiny Llama loaded with datacomp.lm.load_lm (default attention)."""
    from datacomp.lm import load_lm

    return load_lm(tiny_dir)
