"""End-to-end: the real entry points, tiny debug preset, a few hundred env steps on the dummy env."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tests.tbtools import tb_images
from worldmodels.evaluate import main as evaluate_main
from worldmodels.runtime.checkpoint import load_checkpoint
from worldmodels.train import main as train_main

ROOT = Path(__file__).resolve().parents[1]


def run_module(module: str, *args: str, cwd: Path) -> subprocess.CompletedProcess:
    # One torch thread: the debug model's tiny products only lose to thread hand-offs, badly so on a busy machine.
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run(
        [sys.executable, "-m", module, *args], cwd=cwd, capture_output=True, text=True, timeout=300, check=False, env=env
    )


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory) -> Path:
    """One tiny training run shared by the tests of this module."""
    tmp = tmp_path_factory.mktemp("e2e")
    run_dir = tmp / "run"
    proc = run_module(
        "worldmodels.train",
        "env=dummy",
        "model=debug",
        "run.steps=300",
        "run.log_every=100",
        "run.eval_every=150",
        "run.save_every=150",
        "run.progress=false",
        f"run.dir={run_dir}",
        cwd=tmp,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return run_dir


def test_training_writes_metrics_events_and_checkpoint(trained_run: Path):
    lines = [json.loads(line) for line in (trained_run / "metrics.jsonl").read_text().splitlines()]
    steps = [line["step"] for line in lines]
    assert steps == sorted(steps) and steps[-1] == 300
    assert any("episode/return" in line for line in lines)
    assert any("eval/return" in line for line in lines)
    trained = [line for line in lines if "loss/total" in line]
    assert trained, "no update was logged"
    for key in ("loss/dec", "loss/rew", "loss/con", "loss/dyn", "loss/rep", "loss/policy", "loss/value", "loss/repval"):
        assert key in trained[-1]
    assert list((trained_run / "tb").glob("events.out.tfevents.*"))
    assert (trained_run / "config.yaml").is_file()
    payload = load_checkpoint(trained_run / "checkpoints" / "latest")
    assert payload["step"] == 300 and payload["updates"] > 0
    # train ratio 64 with 4 x 16 batches after 64 stored steps: one update per stored step, plus the first;
    # a step is stored for each of the 300 actions and for the last observation of each 50-step episode.
    assert payload["stored"] == 300 + 300 // 50 - 1 and payload["train_from"] == 64
    assert payload["updates"] == 1 + (payload["stored"] - 64) * 64 // 64


def test_checkpoint_round_trip_restores_the_same_policy(trained_run: Path):
    from omegaconf import OmegaConf

    from worldmodels.runtime.setup import make_agent, make_env

    payload = load_checkpoint(trained_run / "checkpoints" / "latest")
    cfg = OmegaConf.create(payload["config"])
    env = make_env(cfg.env, 0)
    first, second = make_agent(cfg, env), make_agent(cfg, env)
    first.load_state_dict(payload["agent"])
    second.load_state_dict(first.state_dict())
    second.opt.load_state_dict(payload["optimizer"])
    for key, value in first.state_dict().items():
        assert torch.equal(value, second.state_dict()[key]), key
    obs = {"state": torch.ones(2, 4).numpy(), "is_first": torch.ones(2, dtype=torch.bool).numpy()}
    torch.manual_seed(0)
    a1, _ = first.policy(obs, None, mode="mode")
    torch.manual_seed(0)
    a2, _ = second.policy(obs, None, mode="mode")
    assert torch.equal(a1, a2)


def test_evaluate_entry_point_reports_and_saves(trained_run: Path):
    proc = run_module(
        "worldmodels.evaluate", f"checkpoint={trained_run / 'checkpoints' / 'latest'}", "episodes=2", "report.horizon=20", cwd=trained_run
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "return" in proc.stdout and "openloop/obs_mse/state_mean" in proc.stdout
    out = trained_run / "eval" / "300"
    summary = json.loads((out / "summary.json").read_text())
    assert summary["episodes"] == 2 and len(summary["returns"]) == 2
    assert summary["policy/return_min"] <= summary["policy/return_mean"] <= summary["policy/return_max"]
    assert len(summary["openloop/obs_mse/state"]) == 20 and summary["windows"] > 0
    for key in ("openloop/reward_mse_mean", "openloop/cont_accuracy_mean", "imagination/gap"):
        assert key in summary
    for name in ("openloop_error.png", "openloop_trajectories.png", "reward.png"):
        assert (out / name).stat().st_size > 1000


def test_evaluate_compares_checkpoints_on_the_same_episodes(trained_run: Path, tmp_path: Path):
    other = tmp_path / "other" / trained_run.name  # a run of the same folder name and step: both still reported
    shutil.copytree(trained_run, other)
    out = tmp_path / "cmp"
    proc = run_module(
        "worldmodels.evaluate",
        f"checkpoint=[{trained_run / 'checkpoints' / 'latest'},{other / 'checkpoints' / 'latest'}]",
        "episodes=1",
        "report.horizon=10",
        f"report.out={out}",
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    compare = json.loads((out / "compare.json").read_text())
    assert len(compare) == 2 and {Path(r["checkpoint"]).parent.parent for r in compare.values()} == {trained_run, other}
    first, second = compare.values()
    # Same weights, same episodes: the same open-loop errors up to sampling noise of the latents.
    assert first["windows"] == second["windows"]
    assert (out / "compare_error.png").stat().st_size > 1000 and (out / "compare.txt").read_text().count("\n") > 5


def test_report_names_tell_runs_of_the_same_folder_name_apart():
    from worldmodels.evaluate import report_names

    assert report_names([(Path("runs/a/seed0"), 5), (Path("runs/a/seed0"), 7)]) == ["seed0@5", "seed0@7"]
    assert report_names([(Path("runs/a/seed0"), 5), (Path("runs/b/seed0"), 5)]) == ["a/seed0@5", "b/seed0@5"]
    assert report_names([(Path("runs/a/seed0"), 5)] * 2) == ["runs/a/seed0@5 (1)", "runs/a/seed0@5 (2)"]


def _with_env(src: Path, dst: Path, task: str) -> Path:
    payload = load_checkpoint(src / "checkpoints")
    payload["config"]["env"]["id"] = task
    from worldmodels.runtime.checkpoint import save_checkpoint

    save_checkpoint(dst / "checkpoints" / "latest", payload)
    return dst / "checkpoints" / "latest"


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["report.context=0"], "report.context=0"),
        (["env=dummy", "env.id=continuous"], "is of environment dummy/discrete, not dummy/continuous"),
    ],
)
def test_evaluate_bad_input(trained_run: Path, tmp_path: Path, args: list[str], words: str, cli):
    status, stderr = cli(evaluate_main, f"checkpoint={trained_run / 'checkpoints' / 'latest'}", "episodes=1", *args, cwd=tmp_path)
    assert status == 2, stderr
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and words in lines[0], stderr


def test_evaluate_fits_the_open_loop_report_to_short_episodes(trained_run: Path, tmp_path: Path):
    """Episodes shorter than context + horizon (an untrained CartPole policy falls in 9 steps) still get
    their returns reported, with the open-loop horizon cut to what the longest episode allows."""
    checkpoint = f"checkpoint={trained_run / 'checkpoints' / 'latest'}"
    proc = run_module("worldmodels.evaluate", checkpoint, "episodes=1", "report.context=3", "report.horizon=500", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    found = re.search(r"lowered from report.horizon=500 to (\d+): the longest evaluation episode has (\d+) steps", proc.stderr)
    assert found, proc.stderr
    fitted, longest = int(found.group(1)), int(found.group(2))
    assert fitted == longest - 3
    summary = json.loads((trained_run / "eval" / str(load_checkpoint(trained_run / "checkpoints")["step"]) / "summary.json").read_text())
    assert summary["horizon"] == fitted and len(summary["openloop/reward_mse"]) == fitted and "policy/return_mean" in summary

    proc = run_module("worldmodels.evaluate", checkpoint, "episodes=1", f"report.context={longest}", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "no open-loop report" in proc.stderr and "return" in proc.stdout
    summary = json.loads((trained_run / "eval" / str(load_checkpoint(trained_run / "checkpoints")["step"]) / "summary.json").read_text())
    assert "policy/return_mean" in summary and "horizon" not in summary


def test_evaluate_refuses_to_compare_different_environments(trained_run: Path, tmp_path: Path, cli):
    other = _with_env(trained_run, tmp_path / "other", "continuous")
    status, stderr = cli(evaluate_main, f"checkpoint=[{trained_run / 'checkpoints' / 'latest'},{other}]", cwd=tmp_path)
    assert status == 2 and "different environments" in stderr


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_rerun_resumes_and_continues(trained_run: Path, tmp_path: Path):
    run_dir = tmp_path / "run"
    shutil.copytree(trained_run, run_dir)
    proc = run_module("worldmodels.train", "env=dummy", "model=debug", "run.steps=400", "run.progress=false", f"run.dir={run_dir}", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "resuming" in proc.stderr
    steps = [json.loads(line)["step"] for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert steps == sorted(steps) and steps[-1] == 400
    payload = load_checkpoint(run_dir / "checkpoints")
    assert payload["step"] == 400 and payload["updates"] > load_checkpoint(trained_run / "checkpoints")["updates"]


@pytest.mark.parametrize(
    ("override", "words"),
    [("env.id=continuous", "env.id was 'discrete'"), ("model.units=32", "model.units was 16"), ("model=size1m", "model.")],
)
def test_resume_with_incompatible_config_is_refused_and_changes_nothing(trained_run: Path, tmp_path: Path, override: str, words: str, cli):
    run_dir = tmp_path / "run"
    shutil.copytree(trained_run, run_dir)
    before = _snapshot(run_dir)
    status, stderr = cli(train_main, "env=dummy", "model=debug", override, f"run.dir={run_dir}", cwd=tmp_path)
    assert status == 2
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and "cannot resume" in lines[0] and words in lines[0], stderr
    assert _snapshot(run_dir) == before


def test_bad_value_against_an_existing_run_changes_nothing(trained_run: Path, tmp_path: Path, cli):
    run_dir = tmp_path / "run"
    shutil.copytree(trained_run, run_dir)
    before = _snapshot(run_dir)
    for override in ("run.train_ratio=0", "model.deter=-5", "env.id=NoSuchEnv-v0", "model=size7m"):
        status, stderr = cli(train_main, "env=dummy", "model=debug", override, f"run.dir={run_dir}", cwd=tmp_path)
        assert status == 2 and len(stderr.strip().splitlines()) == 1, (override, stderr)
    assert _snapshot(run_dir) == before


def test_resume_names_a_folder_without_checkpoint(tmp_path: Path):
    proc = run_module("worldmodels.train", "env=dummy", "model=debug", f"resume={tmp_path / 'empty'}", cwd=tmp_path)
    assert proc.returncode == 2 and "holds no checkpoint" in proc.stderr


@pytest.mark.parametrize(
    ("override", "words"),
    [
        ("model.units=-3", "model.units"),
        ("run.train_ratio=0", "run.train_ratio"),
        ("env.id=NoSuchEnv-v9", "NoSuchEnv-v9"),
        ("batch.length=1", "batch.length"),
        ("agent.bins=4", "agent.bins"),
        ("model=size3m", "model/size3m"),
        ("no_such_key=1", "no_such_key"),
        ("run.defer_grads=sometimes", "run.defer_grads"),
    ],
)
def test_bad_config_gives_one_line_error_and_writes_nothing(tmp_path: Path, override: str, words: str, cli):
    run_dir = tmp_path / "run"
    status, stderr = cli(train_main, "env=dummy", "model=debug", override, f"run.dir={run_dir}", cwd=tmp_path)
    assert status == 2
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:") and words in lines[0], stderr
    assert not run_dir.exists()


def test_evaluate_missing_or_corrupt_checkpoint(tmp_path: Path):
    """Through a real process: the exit status and stderr a shell sees."""
    proc = run_module("worldmodels.evaluate", f"checkpoint={tmp_path / 'missing'}", cwd=tmp_path)
    assert proc.returncode == 2 and "not found" in proc.stderr


def test_evaluate_corrupt_checkpoint(tmp_path: Path, cli):
    bad = tmp_path / "latest"
    bad.write_bytes(b"not a checkpoint")
    status, stderr = cli(evaluate_main, f"checkpoint={bad}", cwd=tmp_path)
    assert status == 2 and "corrupt" in stderr and len(stderr.strip().splitlines()) == 1


def test_pixel_run_through_the_entry_point_writes_videos(tmp_path: Path):
    """DMC from 64x64 pixels with the debug preset: CNN encoder/decoder, replay of uint8 images, eval videos."""
    from PIL import Image

    run_dir = tmp_path / "px"
    proc = run_module(
        "worldmodels.train", "env=dmc", "env.task=cartpole-swingup", "env.obs=pixels", "env.time_limit=20", "model=debug",
        "run.steps=100", "run.train_start=40", "run.train_ratio=16", "run.eval_every=50", "run.video_every=50",
        "run.eval_episodes=1", "run.progress=false", f"run.dir={run_dir}", cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    videos = sorted((run_dir / "videos").glob("eval_*_image.gif"))
    assert [v.name for v in videos] == ["eval_100_image.gif", "eval_50_image.gif"]
    gif = Image.open(videos[0])
    assert gif.n_frames == 21 and gif.size == (128, 128)  # 20 agent steps plus the first frame, upscaled twice
    logged = tb_images(run_dir / "tb")["eval/video_image"]  # TensorBoard plays the same episode, at 64x64
    assert [im.step for im in logged] == [50, 100]
    assert (logged[0].width, logged[0].height) == (64, 64) and logged[0].encoded_image_string.startswith(b"GIF8")
    payload = load_checkpoint(run_dir / "checkpoints")
    assert payload["updates"] > 0 and any(k.startswith("wm.encoder.images.image") for k in payload["agent"])
