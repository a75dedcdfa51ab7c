"""Representation objectives (objective=recon, masked, contrastive, selfpred): each loss on hand-made inputs, the
seam in the agent, a short run of each, the record in the checkpoint, and bad options."""

from __future__ import annotations

import math
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hydra import compose, initialize_config_dir

import worldmodels.train as train_module
from tests.tiny import TINY_AGENT, TINY_MODEL, make_batch
from worldmodels.agent.agent import Agent
from worldmodels.evaluate import evaluate
from worldmodels.evaluate import main as evaluate_main
from worldmodels.evaluation.imagination import WorldModelPredictor, openloop_metrics, windows
from worldmodels.models.heads import ObsEncoder
from worldmodels.objectives.contrastive import Contrastive, info_nce
from worldmodels.objectives.masked import MASKED_PIXEL, MaskedReconstruction
from worldmodels.objectives.selfpred import SelfPrediction, future_valid
from worldmodels.runtime.checkpoint import load_agent_state, load_checkpoint
from worldmodels.runtime.config import validate
from worldmodels.runtime.errors import UserError
from worldmodels.runtime.setup import CONFIG_DIR

OBS = gym.spaces.Dict({"state": gym.spaces.Box(-1, 1, (3,), np.float32)})
ACT = gym.spaces.Box(-1, 1, (2,), np.float32)
SPECS = {
    "recon": {"name": "recon"},
    "masked": {"name": "masked", "ratio": 0.5, "patch": 4, "vector_ratio": 0.34},
    "contrastive": {"name": "contrastive", "dim": 8, "temperature": 0.1, "scale": 1.0},
    "selfpred": {"name": "selfpred", "steps": 2, "distance": "cosine", "ema": 0.25, "scale": 1.0},
}


TRANSFORMER = {"name": "transformer", "d_model": 32, "layers": 1, "heads": 2, "context": 4}


def agent_with(objective: str | None, seed: int = 0, dynamics: dict | None = None) -> Agent:
    torch.manual_seed(seed)
    return Agent(OBS, ACT, TINY_MODEL, TINY_AGENT, objective=SPECS[objective] if objective else None, dynamics=dynamics)


# -- the losses on hand-made inputs -------------------------------------------------------------------------------
def test_info_nce_with_known_similarities():
    query = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    key = torch.tensor([[1.0, 0.0], [0.6, 0.8]])
    # similarities: query 0 -> (1, 0.6), query 1 -> (0, 0.8); inverse temperature 2
    expected = [-math.log(math.exp(2.0) / (math.exp(2.0) + math.exp(1.2))),
                -math.log(math.exp(1.6) / (math.exp(0.0) + math.exp(1.6)))]
    torch.testing.assert_close(info_nce(query, key, torch.tensor(2.0)), torch.tensor(expected))


def test_contrastive_loss_is_info_nce_over_every_step_of_the_batch():
    torch.manual_seed(0)
    objective = Contrastive(feat_dim=6, embed_dim=5, dim=4, temperature=0.5)
    feat, embed = torch.randn(2, 3, 6), torch.randn(2, 3, 5)
    loss = objective.loss({}, embed, {}, torch.empty(0), feat, None)["contrastive"]
    q = F.normalize(feat.reshape(6, 6) @ objective.query.weight.T + objective.query.bias, dim=-1)
    k = F.normalize(embed.reshape(6, 5) @ objective.key.weight.T + objective.key.bias, dim=-1)
    logits = 2.0 * q @ k.T  # 1 / 0.5
    expected = -(logits.diagonal() - logits.logsumexp(-1))
    torch.testing.assert_close(loss, expected.reshape(2, 3))
    loss.sum().backward()
    assert objective.log_inverse_temperature.grad is not None  # the temperature is learned


def test_a_mask_that_hides_everything_leaves_nothing_of_the_observation():
    shapes = {"image": (8, 8, 3), "state": (4,)}
    objective = MaskedReconstruction(16, shapes, 8, 1, 2, ratio=1.0, patch=4, vector_ratio=1.0)
    a = {"image": torch.randint(0, 256, (2, 3, 8, 8, 3), dtype=torch.uint8), "state": torch.randn(2, 3, 4)}
    b = {"image": torch.randint(0, 256, (2, 3, 8, 8, 3), dtype=torch.uint8), "state": torch.randn(2, 3, 4)}
    ma, mb = objective.encoder_input(a), objective.encoder_input(b)
    assert (ma["image"] == MASKED_PIXEL).all() and (ma["state"] == 0).all()
    torch.manual_seed(0)
    encoder = ObsEncoder(shapes, 8, 1, 2)
    torch.testing.assert_close(encoder(ma), encoder(mb))  # nothing of the observation reaches the embedding
    # ... while the loss still reconstructs the whole observation: other targets, other losses
    feat = torch.randn(2, 3, 16)
    assert not torch.equal(objective.loss(a, None, {}, None, feat, None)["dec"], objective.loss(b, None, {}, None, feat, None)["dec"])


def test_masked_input_hides_exactly_the_ratio_of_patches_and_dimensions():
    torch.manual_seed(0)
    objective = MaskedReconstruction(16, {"image": (8, 8, 1), "state": (4,)}, 8, 1, 2, ratio=0.5, patch=4, vector_ratio=0.5)
    image = torch.full((5, 7, 8, 8, 1), 3, dtype=torch.uint8)  # no pixel is 127.5
    state = torch.ones(5, 7, 4)
    out = objective.encoder_input({"image": image, "state": state})
    patches = (out["image"] == MASKED_PIXEL).reshape(5, 7, 2, 4, 2, 4).all(-1).all(-2)  # whole patches, never parts
    assert (patches.sum((-1, -2)) == 2).all()  # 2 of 4 patches at every step
    assert ((out["image"] == MASKED_PIXEL) == patches.repeat_interleave(4, -1).repeat_interleave(4, -2)[..., None]).all()
    assert ((out["state"] == 0).sum(-1) == 2).all()
    kept = out["image"] != MASKED_PIXEL
    assert (out["image"][kept] == 3).all()  # the rest is untouched
    nothing = MaskedReconstruction(16, {"image": (8, 8, 1)}, 8, 1, 2, ratio=0.0, patch=4, vector_ratio=0.0)
    assert torch.equal(nothing.encoder_input({"image": image})["image"], image.float())
    with pytest.raises(ValueError, match="objective.patch=3 is invalid"):
        MaskedReconstruction(16, {"image": (8, 8, 1)}, 8, 1, 2, patch=3)


def test_future_valid_stops_at_episode_starts_and_the_window_end():
    is_first = torch.tensor([[True, False, False, True, False]])
    valid = future_valid(is_first, 3)
    expected = torch.tensor([[[False, False, False],   # the prior at an episode start knows nothing
                              [True, True, False],     # t=1: targets 1, 2; 3 is a new episode
                              [True, False, False],
                              [False, False, False],
                              [True, False, False]]])  # t=4: 5 is past the window
    assert torch.equal(valid, expected)


def test_selfpred_target_gets_no_gradients_and_moves_by_the_ema_formula():
    agent = agent_with("selfpred")
    objective = agent.wm.objective
    target_before = {k: v.clone() for k, v in objective.target_encoder.state_dict().items()}
    agent.train_step(make_batch(2, 6))
    assert all(p.grad is None and not p.requires_grad for p in objective.target_encoder.parameters())
    assert not any(p is q for p in agent.opt.param_groups[0]["params"] for q in objective.target_encoder.parameters())
    online = agent.wm.encoder.state_dict()
    for name, value in objective.target_encoder.state_dict().items():
        expected = target_before[name] + 0.25 * (online[name] - target_before[name])
        torch.testing.assert_close(value, expected, msg=name)
    assert any(not torch.equal(target_before[k], v) for k, v in objective.target_encoder.state_dict().items())


def test_selfpred_loss_by_hand():
    torch.manual_seed(0)
    encoder = ObsEncoder({"state": (3,)}, 8, 1, 2)
    objective = SelfPrediction(6, encoder, units=8, steps=2, distance="mse")
    batch = make_batch(1, 4)
    deter, prior = torch.randn(1, 4, 2), torch.log_softmax(torch.randn(1, 4, 2, 2), -1)
    seen = {}

    class Dynamics:  # features = (deter, stoch), as every backend's; keeps what the objective asked for
        @staticmethod
        def feat(state):
            assert torch.allclose(state["stoch"].sum(-1), torch.ones(1, 4, 2))  # one-hot samples of the prior
            seen["feat"] = torch.cat([state["deter"], state["stoch"].flatten(-2)], -1)
            return seen["feat"]

    loss = objective.loss(batch, None, {"deter": deter}, prior, None, Dynamics())["selfpred"]
    # Head k's prediction written out from the networks (projector, then the k-th block of the heads' outputs), not
    # through SelfPrediction.predict, which the loss uses.
    E = encoder.out_dim
    hidden = objective.projector(seen["feat"])
    pred = torch.stack([hidden @ objective.heads.weight[k * E:(k + 1) * E].T + objective.heads.bias[k * E:(k + 1) * E]
                        for k in range(2)], 2).detach()
    target = objective.target_encoder(batch)
    expected = torch.zeros(1, 4)
    for t in range(1, 4):  # t = 0 is an episode start: its prior knows nothing
        for k in range(2):  # head k predicts observation t + k
            if t + k < 4:
                expected[0, t] += (pred[0, t, k] - target[0, t + k]).square().mean() / 2
    torch.testing.assert_close(loss.detach(), expected)


# -- the seam in the agent ----------------------------------------------------------------------------------------
def test_recon_is_the_default_and_loads_checkpoints_from_before_objectives():
    default, recon = agent_with(None), agent_with("recon")
    batch = make_batch(2, 6)
    torch.manual_seed(3)
    a = default.train_step(batch)
    torch.manual_seed(3)
    b = recon.train_step(batch)
    assert a == b and set(default.scales) == set(TINY_AGENT["loss_scales"])
    old = {k.replace("wm.objective.decoder.", "wm.decoder.", 1): v for k, v in default.state_dict().items()}
    fresh = agent_with(None, seed=9)
    load_agent_state(fresh, old, "old checkpoint")  # `wm.decoder.*` of 0.3 is the recon objective's decoder now
    assert all(torch.equal(v, default.state_dict()[k]) for k, v in fresh.state_dict().items())


@pytest.mark.parametrize("dynamics", [None, TRANSFORMER], ids=["rssm", "transformer"])
@pytest.mark.parametrize("name", ["masked", "contrastive", "selfpred"])
def test_each_objective_trains_every_network_it_owns(name: str, dynamics: dict | None):
    agent = agent_with(name, dynamics=dynamics)
    before = {k: v.clone() for k, v in agent.wm.objective.named_parameters()}
    metrics = agent.train_step(make_batch(2, 6))
    term = {"masked": "dec", "contrastive": "contrastive", "selfpred": "selfpred"}[name]
    assert set(agent.scales) == {"rew", "con", "dyn", "rep", "policy", "value", "repval", term}
    assert math.isfinite(metrics[f"loss/{term}"]) and metrics["train/nonfinite"] == 0
    assert (agent.wm.decoder is None) == (name != "masked")
    for key, value in agent.wm.objective.named_parameters():
        assert not torch.equal(before[key], value), key


@pytest.mark.parametrize("name", ["contrastive", "selfpred"])
def test_without_a_decoder_the_open_loop_report_scores_embeddings(name: str):
    agent = agent_with(name)
    rng = np.random.default_rng(0)
    episode = {"state": rng.uniform(-1, 1, (12, 3)).astype(np.float32), "action": rng.uniform(-1, 1, (12, 2)).astype(np.float32),
               "reward": rng.normal(size=12).astype(np.float32), "is_first": np.eye(1, 12, dtype=bool)[0],
               "is_last": np.zeros(12, bool), "is_terminal": np.zeros(12, bool)}
    predictor = WorldModelPredictor(agent)
    assert predictor.obs_keys == []
    metrics = openloop_metrics(predictor, windows([episode], 3, 4, 8), 3)
    assert metrics["embed_error"].shape == (4,) and ((metrics["embed_error"] >= 0) & (metrics["embed_error"] <= 2)).all()
    assert not any(k.startswith("obs_mse") for k in metrics)


# -- runs, checkpoints, options -----------------------------------------------------------------------------------
def cfg_of(run_dir: Path, *overrides: str):
    with initialize_config_dir(CONFIG_DIR, version_base=None):
        return compose("config", ["env=dummy", "env.id=continuous", "model=debug", "run.progress=false", f"run.dir={run_dir}",
                                  "run.threads=1", "run.eval_every=0", "report.every=0", "run.train_start=32", *overrides])


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, Path]:
    out = {}
    for name in ("masked", "contrastive", "selfpred"):
        out[name] = tmp_path_factory.mktemp(name) / "run"
        with torch.random.fork_rng():
            train_module.train(cfg_of(out[name], f"objective={name}", "run.steps=64"))
    return out


@pytest.mark.parametrize("name", ["masked", "contrastive", "selfpred"])
def test_a_short_run_records_its_objective(runs: dict[str, Path], name: str):
    payload = load_checkpoint(runs[name] / "checkpoints")
    assert payload["config"]["objective"]["name"] == name and payload["step"] == 64 and payload["updates"] > 0
    assert any(k.startswith("wm.objective.") for k in payload["agent"]) and "wm.decoder" not in str(list(payload["agent"]))


def test_resuming_with_another_objective_is_refused_and_changes_nothing(runs: dict[str, Path]):
    run = runs["selfpred"]
    before = (run / "checkpoints" / "latest").read_bytes()
    with pytest.raises(UserError, match="objective is selfpred, not recon"):
        train_module.train(cfg_of(run, "run.steps=200"))
    assert (run / "checkpoints" / "latest").read_bytes() == before


def test_evaluate_a_decoder_free_checkpoint_and_refuse_another_objective(runs: dict[str, Path], tmp_path: Path, cli):
    checkpoint = runs["contrastive"] / "checkpoints" / "latest"
    with torch.random.fork_rng():
        reports = evaluate([str(checkpoint)], episodes=1, context=3, horizon=5, starts=4, out=str(tmp_path / "cmp"))
    report = next(iter(reports.values()))
    assert "openloop/embed_error_mean" in report and "embedding-prediction error" in report["note"]
    status, stderr = cli(evaluate_main, f"checkpoint={checkpoint}", "objective=recon", cwd=tmp_path)
    assert status == 2 and stderr.strip().splitlines() == [f"error: checkpoint {checkpoint} has the contrastive objective, not recon"]


@pytest.mark.parametrize(("overrides", "words"), [
    (["objective=masked", "objective.ratio=1.5"], "objective.ratio=1.5 is invalid"),
    (["objective=masked", "objective.patch=0"], "objective.patch=0 is invalid"),
    (["objective=contrastive", "objective.temperature=0"], "objective.temperature=0 is invalid"),
    (["objective=selfpred", "objective.distance=l1"], "objective.distance='l1' is invalid"),
    (["objective=selfpred", "objective.steps=0"], "objective.steps=0 is invalid"),
    (["objective=recon", "objective.name=vae"], "objective='vae' is unknown"),
])
def test_bad_objective_options_are_one_line(tmp_path: Path, overrides: list[str], words: str):
    with pytest.raises(UserError, match=words) as info:
        validate(cfg_of(tmp_path / "run", *overrides))
    assert "\n" not in str(info.value)
