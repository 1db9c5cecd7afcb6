"""`medmrcnn bench --quick` runs every benchmark and writes a complete, well-formed JSON (no timing asserts)."""

from __future__ import annotations

import datetime
import json
import math
import subprocess
import sys

import pytest

from medmrcnn.bench import BENCHMARKS

VARIANTS = {
    "inference_r50": {"medmrcnn", "torchvision_default", "torchvision_native"},
    "inference_demo": {"medmrcnn", "torchvision_default", "torchvision_native"},
    "training": {"medmrcnn", "torchvision_default", "torchvision_native"},
    "dicom_load": {"medmrcnn", "simpleitk"},
    "seg_export": {"medmrcnn", "highdicom"},
    "end_to_end": {"medmrcnn"},
    "portable": {"medmrcnn", "torchscript", "onnxruntime"},
}


def _positive(x) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x) and x > 0


@pytest.mark.timeout(900)
def test_quick_bench_writes_complete_results(tmp_path):
    out = tmp_path / "bench.json"
    proc = subprocess.run(
        [sys.executable, "-m", "medmrcnn", "bench", "--quick", "-o", str(out), "--workdir", str(tmp_path)],
        capture_output=True, text=True, timeout=900,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    doc = json.loads(out.read_text())

    assert doc["format"] == "medmrcnn-bench" and doc["format_version"] == 1
    assert doc["settings"]["quick"] is True and doc["settings"]["device"] == "cpu"
    env = doc["environment"]
    datetime.datetime.fromisoformat(env["date"])
    assert env["versions"]["torch"] and env["versions"]["torchvision"] and env["cpus_available"] >= 1
    assert doc["fixtures"]["series"]["shape"][1:] == [512, 512]

    results = doc["benchmarks"]
    assert set(results) == set(BENCHMARKS)
    assert "skipped" in results["flops"]  # FLOPs against the peak: CUDA and full runs only
    for name, variants in VARIANTS.items():
        r = results[name]
        assert "error" not in r, f"{name}: {r.get('error')}"
        assert set(r["variants"]) == variants, name
        for variant, fig in r["variants"].items():
            assert len(fig["seconds"]) == (1 if name != "end_to_end" else doc["settings"]["end_to_end_repeats"])
            assert all(_positive(s) for s in fig["seconds"]) and _positive(fig["median_s"]), (name, variant)
            assert any(_positive(fig.get(k)) for k in ("slices_per_s", "images_per_s")), (name, variant)
            assert _positive(fig["host_peak_mb"]) and fig["host_peak_increase_mb"] >= 0, (name, variant)
            assert fig["cuda_peak_mb"] is None  # CPU run
        for baseline in variants - {"medmrcnn"}:
            assert _positive(r["ratios"][baseline]["speedup"]), (name, baseline)

    for name in ("inference_r50", "inference_demo"):
        r = results[name]
        for baseline in ("torchvision_default", "torchvision_native"):
            a = r["agreement"][baseline]
            assert isinstance(a["agrees"], bool) and a["rule"]
            assert a["instances"] >= 0 and a["reference_instances"] >= 0
            assert r["ratios"][baseline]["counts"] == a["agrees"]
        # The same network at the same pixel size: medmrcnn must reproduce the plain loop's detections.
        assert r["agreement"]["torchvision_native"]["agrees"] or r["agreement"]["torchvision_native"][
            "reference_instances"] == 0, r["agreement"]["torchvision_native"]

    # Prompted segmentation: the next prompt and the warm propagation take every slice's features from the cache.
    prompts = results["prompts"]
    assert "error" not in prompts, prompts.get("error")
    for variant, fig in prompts["variants"].items():
        assert _positive(fig["median_s"]) and fig["dice"] > 0.8 and fig["slices_covered"] >= 1, variant
        warm = variant.startswith("next") or variant.endswith("warm")
        assert (fig["cache"]["misses"] == 0) == warm and (fig["cache"]["hits"] > 0) == warm, variant
    assert prompts["variants"]["propagation_cold"]["slices_covered"] == prompts["variants"]["propagation_cold"][
        "liver_slices"] > 1
    assert _positive(prompts["next_vs_first_speedup"]) and _positive(prompts["next_vs_first_speedup_net512"])

    assert results["dicom_load"]["identical_voxels"] is True
    # The exported models give PyTorch's detections on the same slices.
    assert all(p["same_detections"] for p in results["portable"]["parity"].values()), results["portable"]["parity"]
    assert results["end_to_end"]["variants"]["medmrcnn"]["timings"]
    assert {t["reached"] for t in doc["targets"]} <= {True, False, None}
    assert all(t["target"] and "value" in t for t in doc["targets"])
    assert "| benchmark | variant |" in proc.stdout and str(out) in proc.stdout
