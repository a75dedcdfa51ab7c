"""Faults during training: environments that raise, non-finite losses, and kill -9 followed by resume."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import ClassVar

import gymnasium as gym
import numpy as np
import pytest
import torch
from hydra import compose, initialize_config_dir

import worldmodels.train as train_module
from worldmodels import envs
from worldmodels.replay.store import ChunkStore
from worldmodels.runtime.checkpoint import load_checkpoint
from worldmodels.runtime.errors import UserError
from worldmodels.runtime.setup import CONFIG_DIR


def debug_cfg(tmp_path: Path, *overrides: str):
    with initialize_config_dir(CONFIG_DIR, version_base=None):
        return compose(
            "config",
            ["env=dummy", "model=debug", "run.progress=false", f"run.dir={tmp_path / 'run'}", "run.threads=1", *overrides],
        )


class Flaky(gym.Wrapper):
    """Raises in step() at the given global step numbers, and in reset() at the given reset numbers."""

    calls: ClassVar[dict[str, int]] = {"step": 0, "reset": 0}

    def __init__(self, env, step_failures=(), reset_failures=()):
        super().__init__(env)
        self.step_failures, self.reset_failures = set(step_failures), set(reset_failures)

    def reset(self, **kwargs):
        Flaky.calls["reset"] += 1
        if Flaky.calls["reset"] in self.reset_failures:
            raise RuntimeError("simulator crashed in reset")
        return self.env.reset(**kwargs)

    def step(self, action):
        Flaky.calls["step"] += 1
        if Flaky.calls["step"] in self.step_failures:
            raise RuntimeError("simulator crashed in step")
        return self.env.step(action)


def patch_env(monkeypatch, **failures):
    Flaky.calls = {"step": 0, "reset": 0}

    def make(env_cfg, seed):
        return Flaky(envs.make("dummy", "discrete", length=50, seed=seed), **failures)

    monkeypatch.setattr(train_module, "make_env", make)


def test_env_exceptions_are_survived_and_episodes_end_where_they_broke(tmp_path, monkeypatch):
    patch_env(monkeypatch, step_failures={30, 95}, reset_failures={4})
    cfg = debug_cfg(tmp_path, "run.steps=200", "run.eval_every=0")
    with pytest.warns(UserWarning, match="environment failed"):
        run_dir = train_module.train(cfg)
    payload = load_checkpoint(run_dir / "checkpoints")
    assert payload["step"] == 200 and payload["env_failures"] >= 3
    lines = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert lines[-1]["train/env_failures"] >= 3
    # The replay holds what really happened: each episode ends (is_last) before the next is_first,
    # and the step that failed left no invented transition behind.
    chunks = ChunkStore(run_dir / "replay").load(10**6)
    first = np.concatenate([c["is_first"] for c in chunks])
    last = np.concatenate([c["is_last"] for c in chunks])
    starts = np.flatnonzero(first)
    assert all(last[s - 1] for s in starts[1:]), "an episode was cut without is_last"
    state = np.concatenate([c["state"] for c in chunks])
    assert np.isfinite(state).all()


def test_repeated_env_failures_stop_with_a_checkpoint(tmp_path, monkeypatch):
    patch_env(monkeypatch, step_failures=set(range(150, 10_000)))
    cfg = debug_cfg(tmp_path, "run.steps=1000", "run.eval_every=0", "run.max_env_failures=3")
    with pytest.warns(UserWarning), pytest.raises(UserError, match="failed 4 times in a row.*checkpoint saved"):
        train_module.train(cfg)
    assert load_checkpoint(tmp_path / "run" / "checkpoints")["step"] >= 100


def test_nonfinite_update_is_skipped_and_counted(tmp_path):
    cfg = debug_cfg(tmp_path)
    from worldmodels.replay.buffer import Replay
    from worldmodels.runtime.setup import make_agent, to_torch

    env = envs.make("dummy", "discrete", length=50, seed=0)
    agent = make_agent(cfg, env)
    replay = Replay(1000)
    from worldmodels.runtime.driver import Driver

    driver = Driver(env, agent)
    for _ in range(100):
        driver.step(replay.add)
    batch = to_torch(replay.sample(4, 16), agent.device)
    assert agent.train_step(batch)["train/nonfinite"] == 0
    before = {k: v.clone() for k, v in agent.state_dict().items()}
    opt_steps = agent.opt.param_groups[0]["step"].clone()
    batch["state"][0, 3, 0] = float("nan")
    metrics = agent.train_step(batch)
    assert metrics["train/nonfinite"] == 1
    for key, value in agent.state_dict().items():
        assert torch.equal(value, before[key]), key
    assert agent.opt.param_groups[0]["step"] == opt_steps


def test_a_run_of_nonfinite_updates_stops_training_and_keeps_the_checkpoint(tmp_path, monkeypatch):
    cfg = debug_cfg(tmp_path, "run.steps=400", "run.save_every=100", "run.eval_every=0", "run.max_nonfinite=5")
    original = train_module.Trainer.train_updates

    def poisoned(self):
        if self.progress.step >= 150 and not hasattr(self, "poisoned"):
            loss = self.poisoned = self.agent.loss

            def nan_loss(batch, start=None):
                total, metrics, out = loss(batch, start)
                return total * float("nan"), metrics, out

            self.agent.loss = nan_loss
        return original(self)

    monkeypatch.setattr(train_module.Trainer, "train_updates", poisoned)
    with pytest.raises(UserError, match="5 updates in a row had a non-finite"):
        train_module.train(cfg)
    payload = load_checkpoint(tmp_path / "run" / "checkpoints")
    assert payload["step"] == 100
    assert all(torch.isfinite(v).all() for v in payload["agent"].values() if v.is_floating_point())


def test_kill_9_then_resume(tmp_path):
    run_dir = tmp_path / "run"
    args = [sys.executable, "-m", "worldmodels.train", "env=dummy", "model=debug", "run.progress=false", "run.eval_every=0",
            "run.save_every=50", "replay.chunk=25", "run.threads=1", f"run.dir={run_dir}"]
    proc = subprocess.Popen([*args, "run.steps=100000"], cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.time() + 240
    while time.time() < deadline:
        if (run_dir / "checkpoints" / "latest").exists() and load_checkpoint(run_dir / "checkpoints")["step"] >= 150:
            break
        time.sleep(0.5)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    killed_at = load_checkpoint(run_dir / "checkpoints")["step"]
    done = subprocess.run([*args, f"run.steps={killed_at + 100}"], cwd=tmp_path, capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    assert f"resuming {run_dir} at step {killed_at}" in done.stderr
    steps = [json.loads(x)["step"] for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert steps == sorted(steps) and steps[-1] == killed_at + 100
    for path in ChunkStore(run_dir / "replay").files():
        with np.load(path, allow_pickle=False) as data:
            assert len(data["is_first"]) > 0


def test_sigterm_saves_the_current_step_and_exits_with_one_line(tmp_path):
    """A preempted run (SIGTERM) checkpoints where it is, not at its last periodic save, and resumes there."""
    run_dir = tmp_path / "run"
    args = [sys.executable, "-m", "worldmodels.train", "env=dummy", "model=debug", "run.progress=false", "run.eval_every=0",
            "run.save_every=100000", "run.log_every=50", "replay.chunk=25", "run.threads=1", f"run.dir={run_dir}"]
    proc = subprocess.Popen([*args, "run.steps=100000"], cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    metrics = run_dir / "metrics.jsonl"
    deadline = time.time() + 240
    while time.time() < deadline and not (metrics.exists() and len(metrics.read_text().splitlines()) >= 3):
        time.sleep(0.5)
    proc.send_signal(signal.SIGTERM)
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 2, stderr[-3000:]
    assert re.search(r"error: interrupted at step (\d+); checkpoint saved", stderr.strip().splitlines()[-1])
    stopped_at = int(re.search(r"interrupted at step (\d+)", stderr).group(1))
    assert stopped_at >= 150 and load_checkpoint(run_dir / "checkpoints")["step"] == stopped_at
    done = subprocess.run([*args, f"run.steps={stopped_at + 20}"], cwd=tmp_path, capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0 and f"resuming {run_dir} at step {stopped_at}" in done.stderr, done.stderr[-3000:]


def test_a_run_that_died_before_its_first_checkpoint_starts_again_and_keeps_its_replay(tmp_path):
    cfg = debug_cfg(tmp_path, "run.steps=150", "run.save_every=0", "replay.chunk=50", "run.eval_every=0")
    run_dir = tmp_path / "run"
    train_module.train(cfg)
    (run_dir / "checkpoints" / "latest").unlink()  # as if it had died before writing one
    chunks_before = len(ChunkStore(run_dir / "replay").files())
    train_module.train(cfg)
    steps = [json.loads(x)["step"] for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert steps == sorted(steps) and steps[-1] == 150
    assert len(ChunkStore(run_dir / "replay").files()) > chunks_before
    other = debug_cfg(tmp_path, "run.steps=150", "env.id=continuous")
    (run_dir / "checkpoints" / "latest").unlink()
    with pytest.raises(UserError, match="cannot reuse .*env.id"):
        train_module.train(other)
