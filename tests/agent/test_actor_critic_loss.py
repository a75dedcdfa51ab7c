"""The actor-critic part of `Agent.loss` against an independent implementation of the DreamerV3 formulas.

A tiny agent with seeded weights computes one loss; wrappers at two boundaries capture what it worked on
(the imagined trajectory from `Agent.imagine`, the posterior and the per-step loss dict from
`WorldModel.loss`). The reference below recomputes, from those inputs and the networks' raw outputs only,
the lambda returns, the percentile return normaliser, the advantages, the continuation weights and the
three losses (policy, value, repval), in float64 and without calling worldmodels.agent.returns,
worldmodels.models.transforms or the policy distributions. The formulas (shared/REFERENCE.md, "Actor-critic in
imagination"; official dreamerv3/agent.py `imag_loss`, `repl_loss`, `lambda_return`):

- gamma = 1 - 1/horizon folded into the predicted continuation: disc[t] = gamma * P(continue at t).
- ret[H] = v[H]; ret[t] = r[t+1] + disc[t+1] * ((1 - lam) * v[t+1] + lam * ret[t+1]), v the online critic.
- lo <- lo + 0.01 (P5(ret) - lo), hi <- hi + 0.01 (P95(ret) - hi), from lo = hi = 0 (ReturnNorm's buffers);
  S = max(1, hi - lo) after the update; adv = (ret - v) / S.
- weight[t] = (1 - is_terminal of the start) * prod_{j=1..t} disc[j]: the discounted probability of still
  being alive at t (the code's `cumprod(gamma * con) / gamma`).
- policy = -weight * (log pi(a) * sg(adv) + 3e-4 * entropy) on the first H states.
- value = weight * (CE(twohot(sg(ret)), critic) + 1.0 * CE(twohot(slow critic's mean), critic)).
- repval: the lambda return over the replayed sequence with gamma * (1 - is_terminal) and lam * (1 - is_last),
  bootstrapped from the imagined return of each replayed state; its two-hot loss plus the slow-critic term,
  weighted by 1 - is_last on the first T-1 steps, scale 0.3; its gradient reaches the world-model features.

Beyond the per-step values, the gradients of the three losses with respect to the actor, the critic and the
posterior states are compared, which pins every stop-gradient.

The weights follow the code's convention, which differs from the official `contdisc` form only by a constant:
there the continue head learns gamma * (1 - is_terminal) and weight = cumprod(con) includes the start state's
predicted continuation, so the official weight is about gamma (0.997) times this one; the policy and value losses
scale with it.
"""

from __future__ import annotations

import math

import gymnasium as gym
import numpy as np
import pytest
import torch

from tests.tiny import TINY_AGENT, TINY_MODEL
from worldmodels.agent.agent import Agent

OBS = gym.spaces.Dict({"state": gym.spaces.Box(-1, 1, (3,), np.float32)})
AGENT = {**TINY_AGENT, "imag_length": 5}  # the debug preset's imagination horizon
GAMMA = 1.0 - 1.0 / 333  # horizon 333
LAM, ACTENT, SLOWREG, RATE, REPVAL_SCALE = 0.95, 3e-4, 1.0, 0.01, 0.3
B, T = 2, 6
AC_KEYS = ("policy", "value", "repval")


# ---- the reference, written from the formulas ---------------------------------------------------------------


def ref_bins(num: int) -> torch.Tensor:
    """symexp of `num` points evenly spaced over [-20, 20] (the middle one exactly 0)."""
    x = (torch.arange(num, dtype=torch.float64) - (num - 1) / 2) * (40.0 / (num - 1))
    return torch.sign(x) * (torch.exp(x.abs()) - 1.0)


def ref_twohot(target: torch.Tensor, bins: torch.Tensor) -> torch.Tensor:
    """(..., K) weights: linear interpolation in raw space between the bins around each target, clipped at the ends."""
    flat = target.reshape(-1).double().tolist()
    values = bins.tolist()
    out = torch.zeros(len(flat), len(values), dtype=torch.float64)
    for i, t in enumerate(flat):
        if t <= values[0]:
            out[i, 0] = 1.0
        elif t >= values[-1]:
            out[i, -1] = 1.0
        else:
            k = max(j for j, b in enumerate(values) if b <= t)  # the bin just below (or at) t
            below, above = values[k], values[k + 1]
            out[i, k] = (above - t) / (above - below)
            out[i, k + 1] = (t - below) / (above - below)
    return out.reshape(*target.shape, len(values))


def ref_mean(logits: torch.Tensor, bins: torch.Tensor) -> torch.Tensor:
    """Expected bin value under softmax(logits)."""
    return (torch.softmax(logits.double(), -1) * bins).sum(-1)


def ref_lambda_return(rew: torch.Tensor, boot: torch.Tensor, disc: torch.Tensor, lam: torch.Tensor) -> torch.Tensor:
    """Time-major (L+1, ...) inputs -> (L, ...) returns by the backward recursion, one step at a time."""
    steps = rew.shape[0] - 1
    rets = [None] * (steps + 1)
    rets[steps] = boot[steps]
    for t in range(steps - 1, -1, -1):
        rets[t] = rew[t + 1] + disc[t + 1] * ((1 - lam[t + 1]) * boot[t + 1] + lam[t + 1] * rets[t + 1])
    return torch.stack(rets[:steps])


def ref_policy_terms(params: torch.Tensor, actions: torch.Tensor, discrete: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """log pi(action) and the entropy: a categorical on logits, or a normal with mean tanh(x), std 0.9 sigmoid(y + 2) + 0.1."""
    params = params.double()
    if discrete:
        logp_all = params - torch.logsumexp(params, -1, keepdim=True)
        return (actions.double() * logp_all).sum(-1), -(logp_all.exp() * logp_all).sum(-1)
    x, y = params.chunk(2, -1)
    mean, std = torch.tanh(x), 0.9 * torch.sigmoid(y + 2.0) + 0.1
    z = (actions.double() - mean) / std
    logp = (-0.5 * z**2 - torch.log(std) - 0.5 * math.log(2 * math.pi)).sum(-1)
    entropy = (0.5 * math.log(2 * math.pi * math.e) + torch.log(std)).sum(-1)
    return logp, entropy


def reference(agent: Agent, batch: dict, seen: dict, lo0: float, hi0: float, discrete: bool) -> dict:
    """Every actor-critic quantity of one update, from the captured trajectory and the networks' raw outputs."""
    bins = ref_bins(AGENT["bins"])
    feats = seen["feats"]  # (H+1, N, F), the concatenated features
    H = feats.shape[0] - 1
    with torch.no_grad():
        rew = ref_mean(agent.wm.reward(feats), bins)  # (H+1, N); rew[0] is not used
        cont = torch.sigmoid(agent.wm.cont(feats).double())
        slow = ref_mean(agent.slow_critic(feats[:-1]), bins)
    critic_logits = agent.critic(feats).double()
    critic_logp = critic_logits - torch.logsumexp(critic_logits, -1, keepdim=True)
    val = (critic_logp.detach().exp() * bins).sum(-1)  # (H+1, N)

    disc = GAMMA * cont  # index 0 is not used by the returns
    ret = ref_lambda_return(rew, val, disc, torch.full_like(val, LAM))  # (H, N)
    q05, q95 = torch.quantile(ret.reshape(-1), torch.tensor([0.05, 0.95], dtype=torch.float64))
    lo = (1 - RATE) * lo0 + RATE * q05
    hi = (1 - RATE) * hi0 + RATE * q95
    scale = torch.clamp(hi - lo, min=1.0)
    adv = (ret - val[:-1]) / scale

    alive = 1.0 - batch["is_terminal"].reshape(-1).double()  # the start state's flag comes from the replay
    weight = torch.stack([alive * torch.prod(disc[1 : t + 1], 0) for t in range(H + 1)])

    logp, ent = ref_policy_terms(seen["params"], seen["actions"], discrete)
    policy = -weight[:-1] * (logp * adv + ACTENT * ent)
    ce = -(ref_twohot(ret, bins) * critic_logp[:-1]).sum(-1) - SLOWREG * (ref_twohot(slow, bins) * critic_logp[:-1]).sum(-1)
    value = weight[:-1] * ce

    # Replay value: batch-major (B, T); the returns run over the time axis of each replayed sequence.
    post_feat = seen["post"]["feat"]
    rep_logits = agent.critic(post_feat).double()
    rep_logp = rep_logits - torch.logsumexp(rep_logits, -1, keepdim=True)
    with torch.no_grad():
        rep_slow = ref_mean(agent.slow_critic(post_feat), bins)
    boot = ret[0].reshape(B, T)  # start n = b * T + t
    last, term = batch["is_last"].double(), batch["is_terminal"].double()
    rep_ret = ref_lambda_return(batch["reward"].double().T, boot.T, (GAMMA * (1 - term)).T, (LAM * (1 - last)).T).T  # (B, T-1)
    rep_ce = -(ref_twohot(rep_ret, bins) * rep_logp[:, :-1]).sum(-1) - SLOWREG * (ref_twohot(rep_slow[:, :-1], bins) * rep_logp[:, :-1]).sum(-1)
    repval = (1 - last[:, :-1]) * rep_ce
    return {"policy": policy, "value": value, "repval": repval, "ret": ret, "val": val, "rew": rew, "lo": lo, "hi": hi,
            "scale": scale, "entropy": ent, "weight": weight, "rep_ret": rep_ret}


# ---- the agent and one captured update ----------------------------------------------------------------------


def make_agent(discrete: bool) -> Agent:
    """The tiny agent, with the zero-initialised two-hot output layers (reward, critic, slow critic) and the
    near-zero actor output replaced by seeded random weights, so rewards, values and the policy all vary."""
    space = gym.spaces.Discrete(3) if discrete else gym.spaces.Box(-1, 1, (2,), np.float32)
    agent = Agent(OBS, space, TINY_MODEL, AGENT)
    g = torch.Generator().manual_seed(7)
    symlog_bins = torch.linspace(-20.0, 20.0, AGENT["bins"])
    with torch.no_grad():
        # Logits peaked in symlog space around `centre`: values of a few units, with far bins all but unused.
        for head, centre in ((agent.wm.reward, 0.0), (agent.critic, 1.5), (agent.slow_critic, 1.0)):
            head.out.weight.copy_(torch.randn(head.out.weight.shape, generator=g) * 0.3)
            head.out.bias.copy_(-0.5 * ((symlog_bins - centre) / 2.0) ** 2)
        agent.wm.cont.out.weight.copy_(torch.randn(agent.wm.cont.out.weight.shape, generator=g) * 0.3)
        agent.wm.cont.out.bias.fill_(1.5)  # continuation around 0.8, varying by state
        agent.actor.out.weight.copy_(torch.randn(agent.actor.out.weight.shape, generator=g) * 0.5)
    return agent


def make_batch(discrete: bool) -> dict[str, torch.Tensor]:
    """Two sequences: one ends in a terminal step at t=3, the other is cut (is_last, not terminal) at t=4."""
    g = torch.Generator().manual_seed(1)
    action = torch.rand(B, T, 2, generator=g) * 2 - 1
    if discrete:
        action = torch.nn.functional.one_hot(torch.randint(0, 3, (B, T), generator=g), 3).float()
    batch = {
        "state": torch.randn(B, T, 3, generator=g),
        "action": action,
        "reward": torch.randn(B, T, generator=g) * 2,
        "is_first": torch.zeros(B, T, dtype=torch.bool),
        "is_last": torch.zeros(B, T, dtype=torch.bool),
        "is_terminal": torch.zeros(B, T, dtype=torch.bool),
    }
    batch["is_first"][:, 0] = True
    batch["is_terminal"][0, 3] = batch["is_last"][0, 3] = batch["is_first"][0, 4] = True
    batch["is_last"][1, 4] = batch["is_first"][1, 5] = True
    return batch


def run_loss(agent: Agent, batch: dict, monkeypatch) -> tuple[torch.Tensor, dict, dict]:
    """Agent.loss with the imagined trajectory, the posterior and the per-step loss dict captured."""
    seen = {}
    imagine, wm_loss = agent.imagine, agent.wm.loss

    def capture_imagine(start, horizon):
        seen["feats"], seen["actions"], seen["params"] = out = imagine(start, horizon)
        return out

    def capture_wm_loss(*args, **kwargs):
        seen["losses"], seen["post"], _ = out = wm_loss(*args, **kwargs)
        return out

    monkeypatch.setattr(agent, "imagine", capture_imagine)
    monkeypatch.setattr(agent.wm, "loss", capture_wm_loss)
    total, metrics, seen["out"] = agent.loss(batch)
    # Agent.loss adds its actor-critic losses to the world model's per-step dict (then sums and averages it).
    assert set(AC_KEYS) <= set(seen["losses"]), sorted(seen["losses"])
    return total, metrics, seen


def one_update(discrete: bool, retnorm: str, monkeypatch) -> tuple[Agent, torch.Tensor, dict, dict, dict]:
    """A seeded agent's loss on the fixed batch, what it worked on, and the reference computed from that."""
    with torch.random.fork_rng(devices=[]):  # the agent's init and imagination draw from the global generator
        torch.manual_seed(0)
        agent = make_agent(discrete)
        batch = make_batch(discrete)
        assert float(agent.retnorm.lo) == 0.0 and float(agent.retnorm.hi) == 0.0  # the EMA starts at zero
        if retnorm == "primed":  # as after earlier updates: the range is then wider than the limit of 1
            agent.retnorm.lo.fill_(-4.0)
            agent.retnorm.hi.fill_(6.0)
        lo0, hi0 = float(agent.retnorm.lo), float(agent.retnorm.hi)
        total, metrics, seen = run_loss(agent, batch, monkeypatch)
    return agent, total, metrics, seen, reference(agent, batch, seen, lo0, hi0, discrete)


@pytest.mark.parametrize("retnorm", ["initial", "primed"])
@pytest.mark.parametrize("discrete", [True, False], ids=["discrete", "continuous"])
def test_actor_critic_losses_follow_the_dreamerv3_formulas(discrete, retnorm, monkeypatch):
    agent, total, metrics, seen, ref = one_update(discrete, retnorm, monkeypatch)
    losses = seen["losses"]
    H, N = AGENT["imag_length"], B * T

    # The references' own bins are the agent's, and the trajectory is not degenerate.
    torch.testing.assert_close(agent.critic.bins.double(), ref_bins(AGENT["bins"]), rtol=1e-6, atol=0)
    assert seen["feats"].shape[:2] == (H + 1, N) and ref["ret"].shape == (H, N)
    assert ref["ret"].std() > 0.5 and ref["rew"][1:].std() > 0.1 and 0.05 < ref["weight"][-1].mean() < 0.95
    assert (ref["weight"][:, 3] == 0).all() and (ref["weight"][0] == 1).sum() == N - 1  # the terminal start (b=0, t=3)
    if retnorm == "initial":
        assert float(ref["scale"]) == 1.0  # S = max(1, 0.01 * (P95 - P5)): the limit holds
    else:
        assert float(ref["scale"]) > 5.0

    # The return normaliser: the state the update stores and the scale it reports (the loss itself changes nothing).
    lo, hi = seen["out"]["retnorm"]
    assert float(lo) == pytest.approx(float(ref["lo"]), rel=1e-5, abs=1e-6)
    assert float(hi) == pytest.approx(float(ref["hi"]), rel=1e-5, abs=1e-6)
    assert (float(agent.retnorm.lo), float(agent.retnorm.hi)) == ((-4.0, 6.0) if retnorm == "primed" else (0.0, 0.0))
    assert metrics["imag/retnorm_scale"] == pytest.approx(float(ref["scale"]), rel=1e-5)
    assert metrics["imag/return"] == pytest.approx(float(ref["ret"].mean()), rel=1e-5, abs=1e-5)
    assert metrics["imag/value"] == pytest.approx(float(ref["val"].mean()), rel=1e-5, abs=1e-5)
    assert metrics["policy/entropy"] == pytest.approx(float(ref["entropy"].detach().mean()), rel=1e-5, abs=1e-6)

    # The three losses, step by step, and their means in the metrics and in the total.
    shapes = {"policy": (H, N), "value": (H, N), "repval": (B, T - 1)}
    for key in AC_KEYS:
        assert losses[key].shape == shapes[key], key
        torch.testing.assert_close(losses[key].double(), ref[key].detach(), rtol=1e-4, atol=1e-5, msg=key)
        assert metrics[f"loss/{key}"] == pytest.approx(float(ref[key].detach().mean()), rel=1e-4, abs=1e-6), key
    scales = agent.scales
    assert scales["policy"] == 1.0 and scales["value"] == 1.0 and scales["repval"] == REPVAL_SCALE
    ref_ac = sum(scales[k] * ref[k].mean() for k in AC_KEYS)
    wm_part = sum(scales[k] * v.mean() for k, v in losses.items() if k not in AC_KEYS)
    assert float(total.detach()) == pytest.approx(float((wm_part + ref_ac).detach()), rel=1e-5)

    # Gradients: the actor only through log pi and the entropy (adv and weights held fixed), the critic toward
    # fixed targets, and the posterior states (the world model) from repval alone.
    post = seen["post"]
    inputs = [*agent.actor.parameters(), *agent.critic.parameters(), post["deter"], post["stoch"]]
    lib_ac = sum(scales[k] * losses[k].mean() for k in AC_KEYS)
    got = torch.autograd.grad(lib_ac, inputs, retain_graph=True, allow_unused=True)
    want = torch.autograd.grad(ref_ac, inputs, allow_unused=True)
    names = [f"actor.{n}" for n, _ in agent.actor.named_parameters()] + [f"critic.{n}" for n, _ in agent.critic.named_parameters()]
    for name, a, b in zip([*names, "post.deter", "post.stoch"], got, want):
        assert a is not None and b is not None, name
        torch.testing.assert_close(a.double(), b.double(), rtol=1e-4, atol=1e-6, msg=name)
    assert got[-2].abs().sum() > 0  # repval reaches the world-model features


def test_imagined_reward_metric_is_the_mean_over_imagined_steps(monkeypatch):
    _, _, metrics, _, ref = one_update(True, "initial", monkeypatch)
    assert metrics["imag/reward"] == pytest.approx(float(ref["rew"][1:].mean()), rel=1e-5, abs=1e-5)
