"""``bench/learning_curve.py``: a --quick smoke run's JSON and plot, and the goal's interpolation."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys

import pytest
from conftest import ROOT

SCRIPT = ROOT / "bench" / "learning_curve.py"


def bench_module():
    spec = importlib.util.spec_from_file_location("learning_curve", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow
def test_quick_run_records_every_point_with_scores_in_range(tmp_path):
    output, png = tmp_path / "curve.json", tmp_path / "curve.png"
    done = subprocess.run(
        [sys.executable, str(SCRIPT), "--quick", "--output", str(output), "--plot", str(png)],
        cwd=ROOT,
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    results = json.loads(output.read_text(encoding="utf-8"))
    protocol = results["protocol"]
    assert protocol["quick"] and protocol["folds"] == 2 and protocol["sizes"] == [30, 60]
    assert results["units_done"] == "12/12" and results["machine"]["cpus"] >= 1
    expected = {(t, s, 0, n) for t in ("stance", "topic") for s in ("uncertainty", "mixed", "random") for n in (30, 60)}
    assert {(p["task"], p["strategy"], p["seed"], p["size"]) for p in results["points"]} == expected
    for point in results["points"]:
        metrics = ["f1_macro", "f_avg"] if point["task"] == "stance" else ["f1_macro"]
        for metric in metrics:
            folds = point[f"{metric}_folds"]
            assert len(folds) == 2 and all(0.0 <= v <= 1.0 for v in folds)
            assert point[f"{metric}_mean"] == pytest.approx(sum(folds) / 2, abs=1e-4)
    for task in ("stance", "topic"):
        for curve in results["curves"][task].values():
            assert [c["size"] for c in curve] == [30, 60]
            assert all(0.0 <= c["f1_macro"] <= 1.0 and c["f1_macro_std"] == 0.0 for c in curve)
    # every unit labelled exactly the checkpoint sizes and fitted once per round (random: per checkpoint)
    for unit in results["units"]:
        assert [s["size"] for s in unit["scores"]] == [30, 60]
        assert unit["fits"] == (2 if unit["strategy"] == "random" else 4)
    assert results["goals"] == {}  # no 1,600-label checkpoint in a quick run
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_goal_is_the_first_crossing_interpolated_on_log_size():
    lc = bench_module()
    sizes = [200, 400, 800, 1600]
    assert lc.log_interpolate(sizes, [0.5, 0.6, 0.7, 0.8], 0.65) == pytest.approx(566, abs=0.5)  # 400 * sqrt(2)
    assert lc.log_interpolate(sizes, [0.5, 0.6, 0.7, 0.8], 0.4) == 200
    assert lc.log_interpolate(sizes, [0.5, 0.6, 0.7, 0.8], 0.81) is None
    assert lc.log_interpolate(sizes, [0.5, 0.7, 0.6, 0.8], 0.7) == 400  # the first size that reaches it
    curves = {
        "stance": {
            "random": [{"size": s, "f1_macro": v} for s, v in zip(sizes, [0.4, 0.5, 0.6, 0.7], strict=True)],
            "uncertainty": [{"size": s, "f1_macro": v} for s, v in zip(sizes, [0.4, 0.6, 0.7, 0.75], strict=True)],
            "mixed": [{"size": s, "f1_macro": v} for s, v in zip(sizes, [0.4, 0.5, 0.6, 0.65], strict=True)],
        }
    }
    goal = lc.goal_check(curves)["stance"]
    assert goal["random_f1_macro_at_1600"] == 0.7
    assert goal["uncertainty_labels_to_reach"] == 800 and goal["uncertainty_met"] is True
    assert goal["mixed_labels_to_reach"] is None and goal["mixed_met"] is False
