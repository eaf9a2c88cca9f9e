"""Post-training int8 quantization and the measurements every compression stage reports."""

from __future__ import annotations

import pytest
import torch

import datacomp.compression.quantize as quantize_mod
from datacomp.compression.measure import count_macs, count_parameters, evaluate_accuracy, measure_latency, model_report
from datacomp.compression.modelio import load_model, save_model
from datacomp.compression.quantize import (
    QUANT_SUPPORT,
    QuantizationUnavailable,
    calibration_images,
    quantization_support,
    quantize_int8,
)
from datacomp.models import create_model

needs_int8 = pytest.mark.skipif(not QUANT_SUPPORT["available"], reason=f"no int8 flow: {QUANT_SUPPORT['reason']}")


def convnet(norm: str = "bn", width: int = 32) -> torch.nn.Module:
    torch.manual_seed(0)
    return create_model(f"convnet-2-{norm}", 3, 4, (8, 8), width=width).eval()


def test_support_detection_reports_a_flow_or_a_reason():
    info = quantization_support()
    assert set(info) >= {"available", "api", "backend", "engines", "torchao", "reason"}
    assert info["reason"]
    if info["available"]:
        assert info["api"] == "fx" and info["backend"] in info["engines"]


@needs_int8
@pytest.mark.parametrize("norm", ["bn", "in"])
def test_int8_model_runs_close_to_fp32_and_is_smaller_on_disk(tmp_path, norm):
    model = convnet(norm, width=64)
    torch.manual_seed(1)
    calib = torch.randn(64, 3, 8, 8)
    q = quantize_int8(model, calib)
    fresh = torch.randn(64, 3, 8, 8)  # calibration-like data (same distribution, unseen)
    with torch.no_grad():
        ref, out = model(fresh), q(fresh)
    assert out.shape == ref.shape and out.dtype == torch.float32
    assert (out - ref).abs().max().item() < 0.1 * ref.abs().max().item()
    assert (out.argmax(1) == ref.argmax(1)).float().mean().item() >= 0.9
    fp32_path = save_model(model, tmp_path / "fp32.safetensors")
    int8_path = save_model(q, tmp_path / "int8.safetensors")
    assert int8_path.stat().st_size < 0.4 * fp32_path.stat().st_size  # ~4x fewer weight bytes
    loaded, spec = load_model(int8_path)
    assert spec["quantization"]["backend"] == QUANT_SUPPORT["backend"]
    assert torch.equal(loaded(fresh), out)
    # an int8 model reports its float model's parameter and MAC counts
    assert count_parameters(loaded) == count_parameters(model)
    assert count_macs(loaded, fresh[:3]) == count_macs(model, fresh[:3])


@needs_int8
@pytest.mark.parametrize(
    "calibration, match",
    [
        (None, "calibration data is missing"),
        (torch.zeros(0, 3, 8, 8), "calibration data is missing"),
        (torch.zeros(3, 8, 8), "calibration data is missing"),
    ],
)
def test_quantize_rejects_missing_calibration_data(calibration, match):
    with pytest.raises(ValueError, match=match):
        quantize_int8(convnet(), calibration)


@needs_int8
def test_quantize_rejects_unknown_backend():
    with pytest.raises(ValueError, match="not a quantized engine"):
        quantize_int8(convnet(), torch.randn(2, 3, 8, 8), backend="tpu-int8")


def test_unavailable_flow_is_reported_not_crashed(monkeypatch):
    monkeypatch.setitem(quantize_mod.QUANT_SUPPORT, "available", False)
    monkeypatch.setitem(quantize_mod.QUANT_SUPPORT, "reason", "no FX flow in this build")
    with pytest.raises(QuantizationUnavailable, match="no FX flow in this build"):
        quantize_int8(convnet(), torch.randn(2, 3, 8, 8))


class _FakeDataset:
    def __init__(self) -> None:
        self.train_x = torch.arange(50, dtype=torch.float32).view(50, 1, 1, 1).expand(50, 3, 8, 8).contiguous()

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        return x - 1.0


def test_calibration_sources():
    small = torch.randn(10, 3, 8, 8)
    assert calibration_images("small", small, size=1024) is small
    assert len(calibration_images("small", small, size=4)) == 4
    drawn = calibration_images("train-random", None, _FakeDataset(), size=20, seed=0)
    values = drawn[:, 0, 0, 0] + 1.0
    assert len(drawn) == 20 and len(set(values.tolist())) == 20  # distinct random training images, normalised
    assert not torch.equal(values, torch.arange(20, dtype=torch.float32))  # random, not the first 20
    assert torch.equal(drawn, calibration_images("train-random", None, _FakeDataset(), size=20, seed=0))
    first = calibration_images("train-first", None, _FakeDataset(), size=5)
    assert torch.equal(first[:, 0, 0, 0] + 1.0, torch.arange(5, dtype=torch.float32))


@pytest.mark.parametrize(
    "source, small, dataset, size, match",
    [
        ("first", torch.zeros(2, 3, 8, 8), None, 8, "calibration source must be one of"),
        ("small", None, None, 8, "needs the small set"),
        ("small", torch.zeros(0, 3, 8, 8), None, 8, "needs the small set"),
        ("train-random", None, None, 8, "needs the dataset"),
        ("small", torch.zeros(2, 3, 8, 8), None, 0, "calibration size must be >= 1"),
    ],
)
def test_calibration_rejects_bad_input(source, small, dataset, size, match):
    with pytest.raises(ValueError, match=match):
        calibration_images(source, small, dataset, size=size)


def test_measurements():
    lin = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(12, 5))
    x = torch.randn(3, 3, 2, 2)
    assert count_macs(lin, x[:1]) == 12 * 5 and count_macs(lin, x) == 3 * 12 * 5
    lat = measure_latency(lin, x, repeats=5, warmup=1)
    assert lat["batch_size"] == 3 and lat["repeats"] == 5 and lat["p10_ms"] <= lat["median_ms"] <= lat["p90_ms"]
    y = lin(x).argmax(1)
    assert evaluate_accuracy(lin, x, y) == 1.0
    report = model_report(lin, x, test=(x, y), latency_repeats=3)
    assert report["parameters"] == 65 and report["test_accuracy"] == 1.0 and report["size_bytes"] is None
    with pytest.raises(ValueError, match="repeats must be >= 1"):
        measure_latency(lin, x, repeats=0)
    with pytest.raises(ValueError, match="num_threads must be >= 1"):
        measure_latency(lin, x, num_threads=0)
    with pytest.raises(ValueError, match="lengths differ"):
        evaluate_accuracy(lin, x, y[:2])
