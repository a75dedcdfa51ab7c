"""The training loop's bookkeeping: what the train ratio counts, when checkpoints are written, and replay
context (latent states stored with the replay, written back after each update, kept across a resume)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from hydra import compose, initialize_config_dir

import worldmodels.train as train_module
from worldmodels.runtime.setup import CONFIG_DIR, process_settings, to_torch
from worldmodels.train import Trainer


def debug_cfg(run_dir: Path, *overrides: str):
    with initialize_config_dir(CONFIG_DIR, version_base=None):
        cfg = compose("config", ["env=dummy", "model=debug", "run.progress=false", f"run.dir={run_dir}", "run.threads=1", *overrides])
    return cfg


def run_trainer(cfg) -> Trainer:
    with process_settings(cfg.run.threads, cfg.run.onednn):
        torch.manual_seed(cfg.seed)
        trainer = Trainer(cfg, Path(cfg.run.dir))
        Path(cfg.run.dir).mkdir(parents=True, exist_ok=True)
        trainer.run()
    return trainer


def test_train_ratio_counts_stored_agent_steps_not_env_frames(tmp_path):
    repeat = 2
    cfg = debug_cfg(tmp_path / "run", f"env.action_repeat={repeat}", f"run.steps={60 * repeat}", "run.train_start=40",
                    "run.train_ratio=32", "batch.size=2", "batch.length=8", "replay.context=0", "run.eval_every=0")
    trainer = run_trainer(cfg)
    assert trainer.progress.stored == trainer.replay.added  # one replay item per agent step, final observations included
    # 50-frame episodes: 50 / repeat agent steps (repeat env frames each) and a final observation each.
    ended = int(trainer.replay.data["is_last"][: trainer.replay.size].sum())
    assert ended >= 1 and trainer.progress.stored == trainer.progress.step // repeat + ended
    assert trainer.progress.train_from == 40
    assert trainer.progress.updates == 1 + (trainer.progress.stored - 40) * 32 // (2 * 8)


def test_checkpoints_come_by_wall_clock_as_well_as_by_steps(tmp_path, monkeypatch):
    now = [0.0]

    def clock() -> float:
        now[0] += 1.0  # every reading is one second later
        return now[0]

    saves = []
    monkeypatch.setattr(train_module, "clock", clock)
    monkeypatch.setattr(Trainer, "save", lambda self: saves.append(self.progress.step))
    cfg = debug_cfg(tmp_path / "run", "run.steps=60", "run.save_every=100000", "run.save_seconds=10", "run.train_start=1000")
    run_trainer(cfg)
    # one clock reading per loop iteration, one iteration per env step but at episode ends: a checkpoint
    # about every 10 steps, long before save_every, and the final one
    assert len(saves) == 7 and saves[:5] == [10, 20, 30, 40, 50] and saves[-1] == 60


def test_replay_context_stores_acting_latents_and_writes_back_trained_ones(tmp_path):
    cfg = debug_cfg(tmp_path / "run", "run.steps=80", "run.train_start=50", "run.train_ratio=16", "run.save_every=0",
                    "run.eval_every=0", "replay.chunk=40")
    trainer = run_trainer(cfg)
    replay, agent = trainer.replay, trainer.agent
    deter, stoch = (replay.data[k][: replay.size] for k in agent.latent_keys)
    assert deter.dtype == np.float16 and stoch.dtype == np.int16
    assert np.abs(deter).max() > 0 and stoch.max() < agent.wm.dynamics.classes
    # A window's context step gives its start carry: the stored latent and the action taken there.
    index = np.arange(30, 30 + 1 + cfg.batch.length)[None]
    batch, start = agent.split_context(to_torch({k: v[index] for k, v in replay.data.items()}, agent.device), 1)
    assert torch.equal(start[0]["deter"][0], torch.as_tensor(deter[30]).float())
    assert torch.equal(start[0]["stoch"][0].argmax(-1), torch.as_tensor(stoch[30]).long())
    assert torch.equal(start[1][0], torch.as_tensor(replay.data["action"][30]).float())
    assert batch["reward"].shape == (1, cfg.batch.length) and "latent/deter" not in batch
    # The state file written with the last checkpoint holds the latents as they are now.
    state = np.load(tmp_path / "run" / "replay" / replay.store.STATE_FILE)
    assert np.array_equal(state["value/latent/deter"], deter) and np.array_equal(state["value/latent/stoch"], stoch)


def test_context_latent_starts_the_window_unless_it_begins_an_episode():
    import gymnasium as gym

    from tests.tiny import TINY_AGENT, TINY_MODEL
    from worldmodels.agent.agent import Agent

    with torch.random.fork_rng():
        torch.manual_seed(0)
        agent = Agent(gym.spaces.Dict({"state": gym.spaces.Box(-1, 1, (3,), np.float32)}), gym.spaces.Discrete(2), TINY_MODEL, TINY_AGENT)
        B, T, D, S = 2, 4, TINY_MODEL["deter"], TINY_MODEL["stoch"]
        g = torch.Generator().manual_seed(3)
        batch = {"state": torch.randn(B, T + 1, 3, generator=g), "action": torch.eye(2)[torch.randint(0, 2, (B, T + 1), generator=g)],
                 "reward": torch.zeros(B, T + 1), "is_first": torch.zeros(B, T + 1, dtype=torch.bool),
                 "is_last": torch.zeros(B, T + 1, dtype=torch.bool), "is_terminal": torch.zeros(B, T + 1, dtype=torch.bool),
                 "latent/deter": torch.zeros(B, T + 1, D), "latent/stoch": torch.zeros(B, T + 1, S)}
        batch["is_first"][1, 1] = True  # the second window's first trained step starts an episode

        def first_posterior(context_deter: float) -> torch.Tensor:
            data = {k: v.clone() for k, v in batch.items()}
            data["latent/deter"][:, 0] = context_deter
            rest, start = agent.split_context(data, 1)
            with torch.no_grad():
                post, _, _ = agent.wm.observe(rest, *start)
            return post["deter"][:, 0]

        a, b = first_posterior(0.0), first_posterior(0.5)
    assert not torch.allclose(a[0], b[0])  # carried in from the stored latent
    assert torch.equal(a[1], b[1])  # reset by is_first


def test_updates_queue_their_latents_and_the_flush_writes_those_of_taken_updates_only(tmp_path):
    """Updates read nothing back: their posterior latents wait in `unflushed` until the flush after the next env step
    writes them into the replay at the windows' trained steps; a skipped update's latents are never written."""
    cfg = debug_cfg(tmp_path / "run", "run.steps=80", "run.train_start=50", "run.train_ratio=16", "run.save_every=0",
                    "run.eval_every=0", "replay.chunk=40")
    trainer = run_trainer(cfg)
    trainer.progress.stored += 2 * cfg.batch.size * cfg.batch.length // cfg.run.train_ratio  # owe two more updates
    with process_settings(cfg.run.threads, cfg.run.onednn):
        metrics = trainer.train_updates()
    assert len(trainer.pending.items) == 2 and all(isinstance(v, torch.Tensor) for v in metrics["loss/total"])
    (taken_index, taken, _), (skipped_index, skipped, _) = trainer.pending.items
    trainer.pending.items[1] = (skipped_index, skipped, torch.tensor(1.0))  # as if the second update had been skipped
    before = {k: trainer.replay.data[k].copy() for k in trainer.agent.latent_keys}
    trainer.pending.flush(trainer.replay)
    assert trainer.pending.items == []
    for key in trainer.agent.latent_keys:  # exactly the taken update's latents at its windows (overlapping rows: the last one's)
        expected = before[key].copy()
        expected[taken_index] = taken[key].numpy()
        assert not np.array_equal(expected, before[key])  # the update's latents differ from the acting ones stored
        np.testing.assert_array_equal(trainer.replay.data[key], expected)
        assert not np.array_equal(expected[skipped_index], skipped[key].numpy())
