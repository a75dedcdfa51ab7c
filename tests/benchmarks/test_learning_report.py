"""benchmarks/learning.py reports the training-episode return of each eval window beside the eval return."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest

SPEC = importlib.util.spec_from_file_location("learning", Path(__file__).resolve().parents[2] / "benchmarks" / "learning.py")
learning = importlib.util.module_from_spec(SPEC)
SPEC.loader.exec_module(learning)

# What the trainer writes: episode/return is the mean over the episode/count episodes since the previous line.
ROWS = [
    {"step": 1000, "train/updates": 0.0},  # no episode ended yet
    {"step": 2000, "episode/return": 10.0, "episode/count": 2.0},
    {"step": 3000, "episode/return": 40.0, "episode/count": 1.0},
    {"step": 4000, "eval/return": 99.0, "episode/return": 0.0, "episode/count": 1.0},  # (2*10 + 40 + 0) / 4 = 15
    {"step": 5000, "train/updates": 8.0},
    {"step": 6000, "eval/return": 120.0},  # no episode ended in (4000, 6000]
    {"step": 7000, "episode/return": -5.0, "episode/count": 3.0},
    {"step": 8000, "eval/return": 130.0, "episode/return": 25.0, "episode/count": 1.0},  # (3*-5 + 25) / 4 = 2.5
    {"step": 9000, "episode/return": 100.0, "episode/count": 1.0},  # after the last eval point: in no window
]


@pytest.fixture
def run_dir(tmp_path: Path) -> Path:
    run = tmp_path / "runs" / "cartpole-swingup-seed0"
    run.mkdir(parents=True)
    (run / "metrics.jsonl").write_text("".join(json.dumps(row) + "\n" for row in ROWS))
    return run


def test_train_curve_is_the_episode_weighted_mean_per_window(run_dir):
    got = learning.train_curve(run_dir / "metrics.jsonl", [4000, 6000, 8000])
    assert got == [(4000, 15.0), (6000, None), (8000, 2.5)]
    # Windows follow the eval points given: (-inf, 2000], (2000, 3000], (3000, 8000] = (0 - 15 + 25) / 5.
    assert learning.train_curve(run_dir / "metrics.jsonl", [2000, 3000, 8000]) == [(2000, 10.0), (3000, 40.0), (8000, 2.0)]
    assert learning.train_curve(run_dir / "metrics.jsonl", [1000]) == [(1000, None)]
    assert learning.train_curve(run_dir / "metrics.jsonl", []) == []


def test_record_has_both_curves_at_the_eval_steps(run_dir):
    run = learning.record(run_dir, 0, 12.0)
    assert run["curve"] == [(4000, 99.0), (6000, 120.0), (8000, 130.0)]
    assert run["train_curve"] == [(4000, 15.0), (6000, None), (8000, 2.5)]


def test_table_shows_both_returns_and_a_dash_where_unknown(run_dir):
    old = {"curve": [[4000, 101.0], [8000, 140.0]], "run_dir": "gone"}  # learning.json from before train_curve
    results = {"cartpole-swingup": {"0": learning.record(run_dir, 0, 12.0), "1": old}}
    text = learning.table(results, {"cartpole-swingup": {4000: 7, 10_000: 63}})
    rows = {line.split()[0]: line.split()[1:] for line in text.splitlines()[2:]}
    assert "compare published with train" in text.splitlines()[0]
    assert text.splitlines()[1].split() == ["step", "eval", "train", "published"]
    assert rows == {"4000": ["100.0", "15.0", "7.0"], "6000": ["120.0", "-", "-"], "8000": ["135.0", "2.5", "-"]}


def test_report_only_keeps_saved_runs_whose_folder_is_gone(tmp_path, monkeypatch):
    out = tmp_path / "results"
    out.mkdir()
    saved = {"tasks": {"cartpole-swingup": {"0": {"returncode": 0, "wall_s": 60.0, "curve": [[4000, 99.0]], "run_dir": "gone"}}}}
    (out / "learning.json").write_text(json.dumps(saved))
    monkeypatch.setattr(learning.time, "sleep", lambda seconds: None)
    monkeypatch.setattr(sys, "argv", ["learning.py", "--suite", "dmc", "--tasks", "cartpole-swingup", "--seeds", "0", "1",
                                      "--out", str(out), "--runs", str(tmp_path / "none"), "--report-only"])
    learning.main()
    summary = json.loads((out / "learning.json").read_text())
    assert summary["tasks"]["cartpole-swingup"] == saved["tasks"]["cartpole-swingup"]
    final = summary["final"]["cartpole-swingup"]
    assert (final["mean"], final["train_mean"], final["train_per_seed"]) == (99.0, None, {"0": None})
