"""Many environments at once (env.num_envs, worldmodels/envs/vector.py, VectorDriver, ReplayStreams): copies stepped in-process and
in subprocesses, an env that is already batched in torch used as it is, one replay stream per env, the train ratio across
envs, one env's crash among several, and resume."""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Any

import gymnasium
import numpy as np
import pytest
import torch
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

import worldmodels
import worldmodels.train as train_module
from tests.envtools import PointMass
from worldmodels import envs
from worldmodels.agent.agent import Agent
from worldmodels.replay.buffer import Replay, ReplayStreams
from worldmodels.replay.store import ChunkStore
from worldmodels.runtime.checkpoint import load_checkpoint
from worldmodels.runtime.config import resume_conflict
from worldmodels.runtime.driver import VectorDriver
from worldmodels.runtime.errors import UserError
from worldmodels.runtime.setup import CONFIG_DIR, process_settings
from worldmodels.train import Trainer

# A few hundred env steps of the debug model: enough for updates, replay context and an evaluation.
TINY = ["model=debug", "run.progress=false", "run.threads=1", "run.train_start=30", "run.train_ratio=16", "batch.size=2",
        "batch.length=8", "run.eval_every=0", "run.eval_episodes=1", "run.log_every=20", "replay.chunk=16"]


def debug_cfg(run_dir: Path, *overrides: str):
    with initialize_config_dir(CONFIG_DIR, version_base=None):
        return compose("config", ["env=dummy", "env.length=20", *TINY, f"run.dir={run_dir}", *overrides])


def run_trainer(cfg, payload: dict[str, Any] | None = None) -> Trainer:
    with process_settings(cfg.run.threads, cfg.run.onednn):
        torch.manual_seed(cfg.seed)
        trainer = Trainer(cfg, Path(cfg.run.dir))
        Path(cfg.run.dir).mkdir(parents=True, exist_ok=True)
        if payload is not None:
            trainer.checkpoint.restore(payload)
        trainer.run()
    return trainer


def episodes_of(stream: Replay) -> list[np.ndarray]:
    """Indices (oldest first) of each whole episode in a stream: from an is_first to the next is_last."""
    order = stream._recent(stream.size)
    first, last = stream.data["is_first"][order], stream.data["is_last"][order]
    starts = np.flatnonzero(first)
    return [np.arange(a, b + 1) for a in starts for b in np.flatnonzero(last[a:])[:1] + a]


def assert_episodes_end_before_they_start(stream: Replay) -> None:
    order = stream._recent(stream.size)
    first, last = stream.data["is_first"][order], stream.data["is_last"][order]
    starts = np.flatnonzero(first)
    assert all(last[s - 1] for s in starts if s > 0), "an episode was cut without is_last"


# ---- copies of one env, in-process and in subprocesses ------------------------------------------------------------------


def test_two_envs_sync_and_async_train_end_to_end_alike(tmp_path):
    runs = {}
    for mode in ("sync", "async"):
        cfg = debug_cfg(tmp_path / mode, "env.num_envs=2", f"env.vector={mode}", "run.steps=100")
        runs[mode] = train_module.train(cfg)
    sync, asynchronous = (load_checkpoint(runs[m] / "checkpoints") for m in ("sync", "async"))
    assert sync["step"] == asynchronous["step"] == 100 and sync["updates"] == asynchronous["updates"] > 0
    # the same copies, seeds and policy calls: the same run, wherever the copies ran
    for key, value in sync["agent"].items():
        assert torch.equal(value, asynchronous["agent"][key]), key
    lines = [json.loads(line) for line in (runs["async"] / "metrics.jsonl").read_text().splitlines()]
    assert [line["step"] for line in lines] == sorted(line["step"] for line in lines) and lines[-1]["step"] == 100
    ended = [line for line in lines if "episode/return" in line]
    assert ended and all("episode/return_min" in line for line in ended)
    assert {key for line in ended for key in line if key.startswith("episode/return_env")} == {"episode/return_env0", "episode/return_env1"}
    assert any("eval/return" in line for line in lines)
    for i in range(2):  # one replay stream per env, each persisted in its own folder
        assert sorted((runs["async"] / "replay" / f"env{i}").glob("*.npz"))
    assert not list((runs["async"] / "replay").glob("*.npz"))


def test_a_factory_given_to_fit_reaches_the_worker_processes(tmp_path):
    from worldmodels.envs.dummy import DummyEnv
    from worldmodels.envs.load import FACTORIES

    length = 15  # a closure: pickled by value for the workers, with the registered name
    run = worldmodels.fit(lambda: DummyEnv("discrete", length), [*TINY, f"run.dir={tmp_path / 'run'}", "run.steps=40",
                                                                 "env.num_envs=2", "env.vector=async"], name="Dummy15")
    payload = load_checkpoint(run / "checkpoints")
    assert payload["step"] == 40 and payload["config"]["env"]["vector"] == "async" and FACTORIES == {}
    chunks = ChunkStore(run / "replay" / "env1").load(10**6)
    assert np.flatnonzero(np.concatenate([c["is_last"] for c in chunks]))[0] == length  # the factory's episodes


def test_train_ratio_counts_the_steps_stored_by_every_env(tmp_path):
    cfg = debug_cfg(tmp_path / "run", "env.num_envs=3", "env.vector=sync", "run.steps=90", "replay.context=0")
    trainer = run_trainer(cfg)
    streams = trainer.replay.streams
    assert isinstance(trainer.replay, ReplayStreams) and len(streams) == 3
    # one stored step per env per vector step: the streams grow together, and `stored` is their sum
    assert streams[0].added == streams[1].added == streams[2].added
    assert trainer.progress.stored == sum(s.added for s in streams) == len(trainer.replay)
    # run.steps counts env steps summed over the envs: each stored observation but an episode's first came from one
    # step, and so did the observations each env is about to act on
    moved = sum(int(s.size - s.data["is_first"][: s.size].sum()) for s in streams)
    assert trainer.progress.step == moved + int((~trainer.driver.pending["is_first"]).sum())
    assert 90 <= trainer.progress.step < 90 + 3
    assert trainer.progress.train_from == 30  # stored steps across envs: 3 per vector step
    assert trainer.progress.updates == 1 + (trainer.progress.stored - trainer.progress.train_from) * 16 // (2 * 8)


def test_one_env_crashing_among_several_leaves_the_others_going(tmp_path, monkeypatch):
    """Env 1 raises in step 7 of its first episode (in the driver's process, or in its worker process): its episode ends
    there and it starts afresh in a rebuilt env, while env 0 goes on as if nothing happened."""

    class Crash(gymnasium.Wrapper):
        def __init__(self, env):
            super().__init__(env)
            self.steps = 0

        def step(self, action):
            self.steps += 1
            if self.steps == 7:
                raise RuntimeError("simulator crashed in step")
            return self.env.step(action)

    for mode in ("sync", "async"):
        cfg = debug_cfg(tmp_path / mode, "env.num_envs=2", f"env.vector={mode}", "run.steps=60", "run.eval_episodes=1")
        base = cfg.seed

        def make(env_cfg, seed, base=base):
            env = envs.make("dummy", "discrete", length=20, seed=seed)
            return Crash(env) if seed == base + 100_000 else env  # env 1 as first built; not once rebuilt

        monkeypatch.setattr(train_module, "make_env", make)
        with pytest.warns(UserWarning, match=r"environment failed \(RuntimeError: simulator crashed in step\) \(env 1 of 2\)"):
            trainer = run_trainer(cfg)
        assert trainer.driver.failures == 1
        healthy, crashed = trainer.replay.streams
        assert healthy.added == crashed.added  # the crashed env stored a step every vector step too
        assert [len(e) for e in episodes_of(healthy)] == [21] * len(episodes_of(healthy))  # 20 steps and the final one
        assert len(episodes_of(crashed)[0]) == 7  # the reset observation and six steps: ended where it broke
        assert all(len(e) == 21 for e in episodes_of(crashed)[1:])
        for stream in (healthy, crashed):
            assert_episodes_end_before_they_start(stream)
        assert load_checkpoint(Path(cfg.run.dir) / "checkpoints")["env_failures"] == 1


def test_resume_with_two_envs_restores_every_stream(tmp_path):
    first = run_trainer(debug_cfg(tmp_path / "run", "env.num_envs=2", "env.vector=sync", "run.steps=60"))
    payload = load_checkpoint(tmp_path / "run" / "checkpoints")
    assert payload["step"] == first.progress.step >= 60
    cfg = debug_cfg(tmp_path / "run", "env.num_envs=2", "env.vector=async", "run.steps=100")  # may run elsewhere now
    assert resume_conflict(OmegaConf.create(payload["config"]), cfg) is None
    with process_settings(cfg.run.threads, cfg.run.onednn):
        second = Trainer(cfg, Path(cfg.run.dir))
        second.checkpoint.restore(payload)
    try:
        assert (second.progress.step, second.progress.stored, second.progress.updates) == (
            first.progress.step, first.progress.stored, first.progress.updates)
        assert second.replay.rng.bit_generator.state == first.replay.rng.bit_generator.state
        for before, after in zip(first.replay.streams, second.replay.streams):
            assert (after.size, list(after.queue), after.since_queued) == (before.size, list(before.queue), before.since_queued)
            old, new = before._recent(before.size), after._recent(after.size)
            for key in before.data:  # the steps, and the latents training wrote back, of each env in its own stream
                assert np.array_equal(before.data[key][old], after.data[key][new]), key
    finally:
        second.driver.close()
        second.eval_driver.close()
    resumed = run_trainer(cfg, payload)
    assert resumed.progress.step >= 100 and all(s.added > b.added for s, b in zip(resumed.replay.streams, first.replay.streams))
    assert resume_conflict(OmegaConf.create(payload["config"]), debug_cfg(tmp_path, "env.num_envs=3")) == "env.num_envs was 2 and is now 3"
    old = OmegaConf.create(payload["config"])
    del old.env["num_envs"], old.env["vector"]  # a run saved before the option existed had one env
    assert resume_conflict(old, debug_cfg(tmp_path)) is None
    assert resume_conflict(old, debug_cfg(tmp_path, "env.num_envs=2")) == "env.num_envs was 1 and is now 2"


def test_bad_vector_settings_are_one_line_errors(tmp_path):
    with pytest.raises(UserError, match=r"env.vector='threads' is invalid: expected one of auto, sync, async"):
        train_module.train(debug_cfg(tmp_path / "a", "env.vector=threads", "run.steps=10"))
    with pytest.raises(UserError, match=r"env.num_envs=0 is invalid"):
        train_module.train(debug_cfg(tmp_path / "b", "env.num_envs=0", "run.steps=10"))
    with pytest.raises(UserError, match=r"replay.capacity=17 is invalid: must be >= 2 x \(batch.length \+ replay.context\) = 18"):
        train_module.train(debug_cfg(tmp_path / "c", "env.num_envs=2", "replay.capacity=17", "run.steps=10"))
    assert not any(tmp_path.iterdir())


# ---- one replay stream per env -------------------------------------------------------------------------------------


def stamped_streams(count: int = 3, capacity: int = 50, online: int = 0) -> ReplayStreams:
    """Streams whose steps carry their env index and their step number in that env, with episodes of 7 steps."""
    streams = ReplayStreams([Replay(capacity, seed=i, online=online) for i in range(count)], seed=0)
    for t in range(80):
        for i in range(count):
            if i == 1 and t >= 60:
                continue  # env 1 is behind: its stream holds fewer steps
            streams.add({"env": np.float32(i), "t": np.int64(t), "is_first": t % 7 == 0, "latent/deter": np.float16(0)}, i)
    return streams


@pytest.mark.parametrize("online", [0, 10])
def test_sampled_windows_never_cross_from_one_env_into_another(online):
    streams = stamped_streams(online=online)
    seen = set()
    for _ in range(40):
        sample, index = streams.sample_index(8, 10, online=True)
        env, t = sample["env"], sample["t"]
        assert (env == env[:, :1]).all(), "a window mixed two envs' steps"
        assert (np.diff(t, axis=1) == 1).all(), "a window is not consecutive"
        seen.update(env[:, 0].astype(int).tolist())
        # the positions sent back for the latents of replay context reach the window's own stream
        streams.update(index, {"latent/deter": (env * 100 + t).astype(np.float16)})
    assert seen == {0, 1, 2}
    for i, stream in enumerate(streams.streams):
        order = stream._recent(stream.size)
        written = stream.data["latent/deter"][order]
        touched = written != 0
        assert touched.any() and np.array_equal(written[touched], (i * 100 + stream.data["t"][order])[touched].astype(np.float16))


def test_windows_are_drawn_uniformly_over_every_streams_windows():
    streams = stamped_streams()  # streams of 50, 50 (env 1: 50 too, the ring is full) steps: windows of 10 -> 41 each
    short = ReplayStreams([Replay(50, seed=0), Replay(50, seed=1)], seed=0)
    for t in range(50):
        short.add({"t": np.int64(t), "is_first": False}, 0)
        if t < 20:
            short.add({"t": np.int64(t), "is_first": False}, 1)
    which = short.sample_index(20_000, 10)[1][:, 0] // short.stride
    assert abs((which == 1).mean() - 11 / 52) < 0.01  # 41 windows in stream 0, 11 in stream 1
    assert streams.ready(10) and not short.ready(51)
    with pytest.raises(ValueError, match="cannot sample sequences of 60 steps"):
        short.sample(2, 60)


# ---- an env that is already batched, in torch (envtools.PointMass) -----------------------------------------------------


@pytest.mark.parametrize("autoreset", ["NextStep", "SameStep", "Disabled"])
def test_a_batched_torch_env_is_used_as_it_is(tmp_path, monkeypatch, autoreset):
    seen: list[type] = []
    policy = Agent.policy

    def spy(self, obs, carry, mode="sample"):
        seen.extend(type(obs[key]) for key in self.obs_keys)
        return policy(self, obs, carry, mode)

    monkeypatch.setattr(Agent, "policy", spy)
    with pytest.warns(UserWarning, match="the simulator lost its device") if autoreset == "NextStep" else warnings.catch_warnings():
        run = worldmodels.fit(
            lambda: PointMass(autoreset=autoreset, fail_at=25 if autoreset == "NextStep" else 0),
            [*TINY, f"run.dir={tmp_path / 'run'}", "run.steps=120", "run.eval_episodes=3"],
            name="PointMass",
        )
    assert seen and set(seen) == {torch.Tensor}  # observations reached the policy as the env's tensors, no NumPy
    payload = load_checkpoint(run / "checkpoints")
    assert payload["step"] >= 120 and payload["updates"] > 0
    assert payload["env_failures"] == (1 if autoreset == "NextStep" else 0)
    lines = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert any("eval/return" in line for line in lines) and any("episode/return_env2" in line for line in lines)
    for i in range(3):  # each env's steps in its own stream, stamped with its index; whole episodes of length + i steps
        chunks = ChunkStore(run / "replay" / f"env{i}").load(10**6)
        env = np.concatenate([c["env"] for c in chunks])
        first, last = (np.concatenate([c[k] for c in chunks]) for k in ("is_first", "is_last"))
        assert (env == i).all() and first[0]
        starts = np.flatnonzero(first)
        assert all(last[s - 1] for s in starts[1:]), "an episode was cut without is_last"
        lengths = np.diff(starts)  # the reset observation, 9 + i steps and the final observation
        if autoreset == "NextStep":  # the failure of the whole env cut one episode of every env short
            assert (lengths == 9 + i + 1).sum() == len(lengths) - 1 and lengths.min() < 9 + i + 1, (i, lengths)
        else:
            assert (lengths == 9 + i + 1).all(), (i, lengths)
    PointMass.failed.clear()


def test_a_batched_env_refuses_single_env_options(tmp_path):
    with pytest.raises(UserError, match=r"env.action_repeat and env.time_limit apply to single envs; PointMass is already batched"):
        worldmodels.fit(PointMass, [*TINY, f"run.dir={tmp_path / 'a'}", "env.action_repeat=2"])
    with pytest.raises(UserError, match=r"env.num_envs=2, but PointMass is already batched with 3 envs"):
        worldmodels.fit(PointMass, [*TINY, f"run.dir={tmp_path / 'b'}", "env.num_envs=2"])


def test_vector_driver_on_numpy_copies_records_like_the_single_driver():
    """The same seeds and actions: each copy's steps in VectorDriver are what Driver records for that env alone."""
    from tests.runtime.test_driver import FixedAgent
    from worldmodels.envs.vector import make_vector
    from worldmodels.runtime.driver import Driver

    def make(seed):
        return envs.make("dummy", "discrete", length=4, seed=seed)

    vector = make_vector(make, 2, "sync", seed=0)
    steps: list[tuple[int, dict]] = []
    driver = VectorDriver(vector, FixedAgent())
    taken = sum(driver.step(steps.extend)[0] for _ in range(12))
    single: list[dict] = []
    alone = Driver(make(100_000), FixedAgent())
    for _ in range(12):
        alone.step(single.append)
    mine = [step for i, step in steps if i == 1]
    assert taken == 2 * 10 and len(mine) == len(single) == 12
    for a, b in zip(mine, single):
        assert a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)
    vector.close()


class Push:
    """Pushes every point mass with the same force (a torch action, as a batched env on a device takes them)."""

    discrete = False

    def policy(self, obs, carry, mode="sample"):
        return torch.full((len(obs["is_first"]), 1), 0.5), carry


@pytest.mark.parametrize("autoreset", ["NextStep", "SameStep", "Disabled"])
def test_vector_driver_records_whole_episodes_of_a_batched_env(autoreset):
    """record(n): n complete episodes, as `episodes` picks them (each env's first ones, env by env), whose steps agree
    with their stats; the same again from the same seed. NextStep: a failure of the whole env in the middle cuts the
    episodes it was in, which are not recorded."""
    fail = 3 if autoreset == "NextStep" else 0

    def make(fail_at=0):
        return PointMass(num_envs=3, length=4, autoreset=autoreset, fail_at=fail_at, image=True)

    runs = []
    for fail_at in (fail, 0):
        driver = VectorDriver(make(fail_at), Push(), "mode", recreate=make)
        with pytest.warns(UserWarning, match="lost its device") if fail_at else warnings.catch_warnings():
            runs.append(driver.record(5))
        PointMass.failed.clear()
    for recorded, stats in runs:
        assert [s["env"] for s in stats] == [0, 0, 1, 1, 2] and len(recorded) == 5
        for episode, s in zip(recorded, stats):
            length = 4 + s["env"]  # env i truncates after 4 + i steps
            assert set(episode) == {"body", "env", "image", "reward", "is_first", "is_last", "is_terminal", "action"}
            assert s["length"] == length and len(episode["reward"]) == length + 1  # the reset observation, then a step each
            assert episode["reward"].sum() == pytest.approx(s["return"], rel=1e-5) and episode["reward"][0] == 0
            assert episode["is_first"].tolist() == [True] + [False] * length
            assert episode["is_last"].tolist() == [False] * length + [True]
            assert not episode["is_terminal"].any() and (episode["env"] == s["env"]).all()
            assert episode["image"].shape == (length + 1, 8, 8, 3) and episode["image"].dtype == np.uint8
            assert episode["action"].shape == (length + 1, 1) and (episode["action"][:-1] == 0.5).all()
            assert np.allclose(episode["body"][1:, 1], 0.05 * np.arange(1, length + 1))  # pushed from rest: one episode
    (cut, cut_stats), (whole, whole_stats) = runs  # the rebuilt env starts as the fresh one: the failure only cost time
    assert cut_stats == whole_stats
    assert all(np.array_equal(a[k], b[k]) for a, b in zip(cut, whole) for k in a)


def test_a_batched_env_gets_evaluation_videos_and_an_evaluate_report(tmp_path):
    """Evaluation videos of an image key of a batched env during training, and worldmodels.evaluate on its checkpoint:
    the policy's returns over episodes of its envs and the open-loop report (no replayed_*: no simulator states)."""
    from tests.tbtools import tb_images
    from worldmodels.envs.load import register_factory
    from worldmodels.evaluate import evaluate

    def factory():
        return PointMass(autoreset="SameStep", image=True)

    run = worldmodels.fit(factory, [*TINY, f"run.dir={tmp_path / 'run'}", "run.steps=45", "run.eval_episodes=2",
                                    "run.video_every=1000"], name="PointMassImage")
    step = load_checkpoint(run / "checkpoints")["step"]
    assert [v.name for v in (run / "videos").glob("eval_*.gif")] == [f"eval_{step}_image.gif"]  # the final evaluation
    assert [im.step for im in tb_images(run / "tb")["eval/video_image"]] == [step]
    with register_factory("PointMassImage", factory):
        report = evaluate([str(run / "checkpoints" / "latest")], episodes=2, context=3, horizon=5, starts=4)[f"run@{step}"]
    assert len(report["returns"]) == 2 and report["policy/length_mean"] == 9.5  # env 0's 9 steps and env 1's 10
    assert report["horizon"] == 5 and len(report["openloop/obs_mse/image"]) == 5 and "imagination/gap" in report
    assert not any("replayed" in key for key in report)
    assert (Path(report["saved"]) / "summary.json").exists()
