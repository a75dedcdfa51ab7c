"""The dynamics interface (worldmodels/dynamics/base.py): what the backends share, by hand; every backend against the
interface, replay latents included; and a third backend (tests/plugin_dynamics.py) added as one file and one YAML,
trained and resumed through `worldmodels.fit`, with its options checked in one line."""

from __future__ import annotations

import json
import math
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hydra import compose, initialize_config_dir

import worldmodels
from tests import plugin_dynamics
from tests.tiny import TINY_AGENT, TINY_MODEL, make_batch
from worldmodels.agent.agent import Agent
from worldmodels.dynamics import make_dynamics
from worldmodels.dynamics.base import Dynamics
from worldmodels.runtime.checkpoint import load_checkpoint
from worldmodels.runtime.config import validate
from worldmodels.runtime.errors import UserError
from worldmodels.runtime.setup import CONFIG_DIR

MEAN = {"name": "mean", "backend": "tests.plugin_dynamics:MeanDynamics", "width": 12}
SPECS = {"rssm": {"name": "rssm"}, "transformer": {"name": "transformer", "d_model": 16, "layers": 2, "heads": 2, "context": 3},
         "mean": MEAN}
E, A = 5, 2  # embed and action widths


@pytest.fixture(autouse=True, scope="module")
def _one_thread(single_thread):
    """Tiny tensors: see conftest.single_thread."""


def test_the_shared_pieces_by_hand():
    action = torch.tensor([-3.0, -0.5, 0.0, 2.0], requires_grad=True)
    scaled = Dynamics.scale_action(action)
    assert scaled.tolist() == [-1.0, -0.5, 0.0, 1.0]
    scaled.sum().backward()  # the divisor max(1, |a|) carries no gradient: d/da = 1 / max(1, |a|)
    assert action.grad.tolist() == pytest.approx([1 / 3, 1.0, 1.0, 0.5])

    base = Dynamics(deter=2, stoch=2, classes=3, unimix=0.1)
    out = torch.tensor([0.0, 1.0, 2.0, 5.0, 5.0, 5.0])
    for row, logits in zip(([0.0, 1.0, 2.0], [5.0, 5.0, 5.0]), base.latent_logits(out)):
        total = sum(math.exp(x) for x in row)
        expected = [math.log(0.9 * math.exp(x) / total + 0.1 / 3) for x in row]
        assert logits.tolist() == pytest.approx(expected, abs=1e-6)

    state = {"deter": torch.tensor([[1.0, 2.0]]), "stoch": torch.tensor([[[0.0, 1.0, 0.0], [1.0, 0.0, 0.0]]])}
    assert base.feat(state).tolist() == [[1.0, 2.0, 0.0, 1.0, 0.0, 1.0, 0.0, 0.0]] and base.feat_dim == 8
    initial = base.initial(4)
    assert initial["deter"].shape == (4, 2) and initial["stoch"].shape == (4, 2, 3) and not initial["deter"].any()


@pytest.mark.parametrize("name", list(SPECS))
@torch.no_grad()
def test_every_backend_keeps_the_interface_and_its_replay_latents(name: str):
    torch.manual_seed(0)
    dyn = make_dynamics(SPECS[name], E, A, TINY_MODEL, 0.01)
    B, T, S, C = 3, 4, TINY_MODEL["stoch"], TINY_MODEL["classes"]
    D = dyn.deter
    assert dyn.feat_dim == D + S * C
    is_first = torch.zeros(B, T)
    is_first[:, 0] = 1
    state = dyn.initial(B)
    post, prior, last = dyn.observe(torch.randn(B, T, E), torch.randn(B, T, A) * 2, is_first, state)
    assert post["deter"].shape == (B, T, D) and post["stoch"].shape == (B, T, S, C) and post["logits"].shape == (B, T, S, C)
    assert prior.shape == (B, T, S, C) and torch.allclose(prior.exp().sum(-1), torch.ones(B, T, S))
    assert dyn.feat(post).shape == (B, T, dyn.feat_dim) and dyn.feat(last).shape == (B, dyn.feat_dim)
    step = dyn.imagine_step(last, torch.randn(B, A))
    assert torch.equal(F.one_hot(step["classes"], C).float(), step["stoch"]) and step["deter"].shape == (B, D)
    starts = dyn.starts(post, state)
    assert starts["deter"].shape == (B * T, D) and torch.equal(starts["deter"][T - 1 :: T], last["deter"])

    # What the replay stores of a state, and the state read back from it: the stoch classes and everything else
    # exactly, deter as float16.
    values = dyn.latent_values(last)
    assert set(values) == set(dyn.latent_keys) and all(key.startswith("latent/") for key in values)
    back = dyn.state_from_latents({key: torch.as_tensor(v.numpy()) for key, v in values.items()})  # via the host
    assert torch.equal(back["stoch"], last["stoch"])
    torch.testing.assert_close(back["deter"], last["deter"], rtol=1e-3, atol=1e-3)
    assert back["deter"].dtype == torch.float32 and not torch.equal(back["deter"], last["deter"])  # it was rounded
    for key in set(back) - {"deter", "stoch"}:
        assert torch.equal(back[key].to(last[key].dtype), last[key]), key
    assert dyn.feat(back).shape == (B, dyn.feat_dim)
    dyn.obs_step(back, torch.randn(B, A), torch.randn(B, E), torch.zeros(B))  # a filter can start from it


def mode_onehot(logp: torch.Tensor) -> torch.Tensor:
    """The most likely class, one-hot: deterministic samples, so two filterings can be compared."""
    return F.one_hot(logp.argmax(-1), logp.shape[-1]).to(logp.dtype)


@torch.no_grad()
def test_split_context_starts_the_rest_where_the_stored_latents_left_it(monkeypatch):
    monkeypatch.setattr(plugin_dynamics, "sample_onehot", mode_onehot)
    torch.manual_seed(0)
    obs = gym.spaces.Dict({"state": gym.spaces.Box(-1, 1, (3,), np.float32)})
    agent = Agent(obs, gym.spaces.Box(-1, 1, (2,), np.float32), TINY_MODEL, TINY_AGENT, dynamics=MEAN)
    assert agent.latent_keys == ("latent/deter", "latent/stoch", "latent/count")
    batch = make_batch(B=2, T=7)
    post, _, _ = agent.wm.observe(batch, *agent.initial_carry(2))
    batch |= agent.wm.dynamics.latent_values(post)  # what acting and training leave in the replay
    context = 3
    rest, (state, prev_action) = agent.split_context(batch, context)
    assert set(rest) == {"state", "action", "reward", "is_first", "is_last", "is_terminal"}
    assert rest["reward"].shape == (2, 4) and torch.equal(prev_action, batch["action"][:, context - 1])
    assert state["count"].tolist() == [3.0, 3.0]  # steps 0, 1, 2 of the episode
    resumed, _, _ = agent.wm.observe(rest, state, prev_action)
    torch.testing.assert_close(resumed["deter"], post["deter"][:, context:], rtol=1e-3, atol=1e-3)
    assert torch.equal(resumed["count"], post["count"][:, context:])
    forgot, _, _ = agent.wm.observe(rest, {**state, "count": torch.zeros(2)}, prev_action)  # without its count
    assert not torch.allclose(forgot["deter"], post["deter"][:, context:], atol=1e-2)


RUN = ["env=dummy", "env.id=continuous", "env.length=10", "model=debug", "dynamics=mean", "run.train_start=16",
       "run.train_ratio=16", "batch.size=2", "batch.length=8", "replay.capacity=200", "run.threads=1", "run.progress=false",
       "run.keep_memory=false", "run.eval_episodes=1", "report.every=0"]


def yaml_folder(tmp_path: Path) -> Path:
    """A config folder beside the package's holding the backend's one YAML; Hydra finds it on hydra.searchpath."""
    folder = tmp_path / "configs"
    (folder / "dynamics").mkdir(parents=True)
    (folder / "dynamics" / "mean.yaml").write_text(
        "# A running mean of the episode's tokens (tests/plugin_dynamics.py)\nname: mean\n"
        "backend: tests.plugin_dynamics:MeanDynamics\nwidth: 12\n"
    )
    return folder


def arrays(path: Path) -> dict[str, np.ndarray]:
    with np.load(path) as data:
        return {key: data[key] for key in data.files}


def test_a_third_backend_is_one_file_and_one_yaml(tmp_path: Path):
    search = f"hydra.searchpath=[file://{yaml_folder(tmp_path)}]"
    run = worldmodels.fit(None, [*RUN, search, "run.steps=40", f"run.dir={tmp_path / 'run'}"])
    payload = load_checkpoint(run / "checkpoints")
    assert payload["config"]["dynamics"] == MEAN and payload["step"] == 40 and payload["updates"] > 0
    assert payload["agent"]["wm.dynamics.tok.weight"].shape == (12, TINY_MODEL["stoch"] * TINY_MODEL["classes"] + 2)
    lines = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert all(math.isfinite(line["loss/total"]) for line in lines if "loss/total" in line)
    # The count stored with every step (by acting, then rewritten by training from the replay context): the steps
    # since the episode started, that one included.
    steps = [arrays(chunk) for chunk in sorted((run / "replay").glob("*.npz")) if chunk.name != "state.npz"]
    is_first = np.concatenate([s["is_first"] for s in steps])
    count = np.concatenate([s["latent/count"] for s in steps])
    since = np.arange(len(is_first)) - np.maximum.accumulate(np.where(is_first, np.arange(len(is_first)), 0))
    assert is_first[0] and is_first.sum() >= 3 and np.array_equal(count, since + 1)

    run = worldmodels.fit(None, [*RUN, search, "run.steps=56", f"run.dir={run}"])  # resumed from the checkpoint
    resumed = load_checkpoint(run / "checkpoints")
    assert resumed["step"] == 56 and resumed["updates"] > payload["updates"]


def config(tmp_path: Path, *overrides: str):
    with initialize_config_dir(CONFIG_DIR, version_base=None):
        return compose("config", ["env=dummy", "model=debug", f"hydra.searchpath=[file://{yaml_folder(tmp_path)}]", *overrides])


@pytest.mark.parametrize(("overrides", "message"), [
    (["dynamics=mean", "dynamics.width=0"], "dynamics.width=0 is invalid: expected an integer >= 1"),
    (["dynamics=mean", "dynamics.backend=tests.plugin_dynamics:Nothing"],
     "dynamics.backend='tests.plugin_dynamics:Nothing' is invalid: cannot import it (module 'tests.plugin_dynamics' has no attribute 'Nothing')"),
    (["dynamics=mean", "dynamics.backend=plugin_dynamics"], "dynamics.backend='plugin_dynamics' is invalid: expected package.module:Class"),
    (["dynamics=mean", "dynamics.backend=torch.nn:Linear"],
     "dynamics.backend='torch.nn:Linear' is invalid: not a subclass of worldmodels.dynamics.base.Dynamics"),
    (["dynamics.name=lstm"], "dynamics.name='lstm' is invalid: expected one of rssm, transformer, or a dynamics.backend: package.module:Class"),
    (["model.deter=30", "model.blocks=4"], "model.deter=30 is invalid: must be divisible by model.blocks=4"),
])
def test_bad_backend_options_are_one_line(tmp_path: Path, overrides: list[str], message: str):
    with pytest.raises(UserError) as info:
        validate(config(tmp_path, *overrides))
    assert str(info.value) == f"config value {message}"
