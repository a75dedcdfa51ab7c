"""The whole update as one graph (run.compile=update, worldmodels/strategies/compile.py) and the CPU strategy
(worldmodels/strategies/cpu.py): each computes what the plain, eager agent computes.

The update reads nothing back from the device (a dispatch mode watches for the ops a read-back runs), dynamo traces
it without a graph break for both backends and every objective, and N compiled updates leave the same weights,
optimiser state, slow critic, normaliser, target encoder and metrics as N eager ones, a planted non-finite batch
included. Compiled here with the `aot_eager` backend: dynamo's graph and AOTAutograd's forward and backward, run by
eager kernels, so random draws match eager mode; inductor's code generation of that graph takes minutes on two cores
and is timed by `python benchmarks/speed.py --compile update` instead.
"""

from __future__ import annotations

import copy

import gymnasium as gym
import numpy as np
import pytest
import torch
from hydra import compose, initialize_config_dir
from torch.utils._python_dispatch import TorchDispatchMode

from tests.tiny import TINY_AGENT, TINY_MODEL, make_batch
from worldmodels.agent.agent import Agent
from worldmodels.runtime.config import validate
from worldmodels.runtime.errors import UserError
from worldmodels.runtime.setup import CONFIG_DIR
from worldmodels.strategies.compile import COMPILE_MODES, Updater, graph_breaks, resolve
from worldmodels.strategies.cpu import use_cpu_speedups

OBS = gym.spaces.Dict({"state": gym.spaces.Box(-1, 1, (3,), np.float32)})
BOX = gym.spaces.Box(-1, 1, (2,), np.float32)
AGENT = {**TINY_AGENT, "imag_length": 2}
TRANSFORMER = {"name": "transformer", "d_model": 16, "layers": 2, "heads": 2, "context": 4}
OBJECTIVES = {
    "recon": {"name": "recon"},
    "masked": {"name": "masked", "ratio": 0.5, "patch": 4, "vector_ratio": 0.5},
    "contrastive": {"name": "contrastive", "dim": 8, "temperature": 0.1, "scale": 1.0},
    "selfpred": {"name": "selfpred", "steps": 2, "distance": "cosine", "ema": 0.05, "scale": 1.0},
}


def tiny(dynamics: str = "rssm", objective: str = "recon", precision: str = "float32") -> Agent:
    torch.manual_seed(0)
    spec = TRANSFORMER if dynamics == "transformer" else None
    return Agent(OBS, BOX, TINY_MODEL, AGENT, dynamics=spec, objective=OBJECTIVES[objective], precision=precision)


def everything(agent: Agent) -> dict[str, torch.Tensor]:
    """Every tensor an update may change: weights, slow critic, normaliser, targets, and the optimiser's state."""
    state = {f"agent/{k}": v for k, v in agent.state_dict().items()}
    for i, (p, s) in enumerate(agent.opt.state.items()):
        state.update({f"opt/{i}/{k}": v for k, v in s.items()})
    state.update({f"opt/group{i}/step": g["step"] for i, g in enumerate(agent.opt.param_groups)})
    return state


def assert_same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor], rtol: float = 1e-5, atol: float = 1e-6) -> None:
    """Each tensor of `b` equals `a`'s within `rtol` of that tensor's largest entry (plus `atol`): sums taken in another
    order differ by rounding relative to a tensor's scale, and the optimiser's normalised moments magnify it where
    a gradient is near zero."""
    assert a.keys() == b.keys()
    for key, want in a.items():
        scale = float(want.abs().max()) if want.numel() else 0.0
        torch.testing.assert_close(b[key], want, rtol=0, atol=atol + rtol * scale, msg=lambda m, key=key: f"{key}: {m}")


class ReadBacks(TorchDispatchMode):
    """Records the ops by which the host reads a tensor's value (`.item()`, `bool()`, `float()`, `.tolist()`)."""

    READS = ("aten._local_scalar_dense", "aten.is_nonzero", "aten.equal")

    def __init__(self):
        super().__init__()
        self.seen: list[str] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if str(func.overloadpacket) in self.READS or func.overloadpacket.__name__ in ("_local_scalar_dense", "is_nonzero"):
            self.seen.append(str(func))
        return func(*args, **(kwargs or {}))


@pytest.mark.parametrize("dynamics", ["rssm", "transformer"])
def test_an_update_never_reads_the_device_back(dynamics):
    agent = tiny(dynamics)
    batch = make_batch(2, 4)
    batch["state"][1, 2, 0] = float("nan")  # the skip too is decided on the device
    reads = ReadBacks()
    with reads:
        metrics, latents = agent.update(batch)
    assert reads.seen == []
    assert all(isinstance(v, torch.Tensor) and v.dim() == 0 for v in metrics.values())
    assert float(metrics["train/nonfinite"]) == 1.0
    assert latents["latent/deter"].shape == (2, 4, agent.wm.dynamics.deter) and latents["latent/deter"].dtype == torch.float16
    assert latents["latent/stoch"].shape == (2, 4, agent.wm.dynamics.stoch) and latents["latent/stoch"].dtype == torch.int16


@pytest.mark.parametrize("objective", list(OBJECTIVES))
@pytest.mark.parametrize("dynamics", ["rssm", "transformer"])
def test_the_whole_update_traces_without_a_graph_break(dynamics, objective):
    breaks, reasons = graph_breaks(tiny(dynamics, objective), make_batch(2, 4))
    assert breaks == 0, reasons


def test_the_whole_bf16_update_with_replay_context_traces_without_a_graph_break():
    agent = tiny(precision="bf16")
    start = (agent.wm.dynamics.initial(2), torch.zeros(2, 2))
    breaks, reasons = graph_breaks(agent, make_batch(2, 4), start)
    assert breaks == 0, reasons


@pytest.mark.parametrize("dynamics,objective", [("rssm", "recon"), ("transformer", "selfpred")])
def test_compiled_updates_equal_eager_ones_a_skipped_batch_included(dynamics, objective):
    """Four updates, the third on a batch with a NaN observation: compiled and eager give the same metrics and leave
    the same state after each; the skipped one changes nothing (weights, moments, step count, slow critic,
    normaliser, target encoder)."""
    torch._dynamo.reset()
    eager = tiny(dynamics, objective)
    compiled = copy.deepcopy(eager)
    run_eager, run_compiled = Updater(eager, "none"), Updater(compiled, "update", backend="aot_eager")
    for i in range(4):
        batch = make_batch(2, 4)
        batch["reward"] = batch["reward"] * (i + 1)
        if i == 2:
            batch["state"][0, 1, 2] = float("nan")
        before = {k: v.clone() for k, v in everything(compiled).items()}
        torch.manual_seed(10 + i)
        m_eager, l_eager = run_eager(batch)
        torch.manual_seed(10 + i)
        m_compiled, l_compiled = run_compiled(batch)
        assert m_eager.keys() == m_compiled.keys()
        for key in m_eager:
            if i == 2 and key != "train/nonfinite":
                continue  # the losses of the NaN batch are NaN on both sides
            torch.testing.assert_close(m_compiled[key], m_eager[key], rtol=1e-4, atol=1e-6, msg=key)
        assert_same(everything(eager), everything(compiled), rtol=1e-4, atol=1e-6)
        assert float(m_compiled["train/nonfinite"]) == float(i == 2)
        if i == 2:
            assert_same(before, everything(compiled), rtol=0, atol=0)  # skipped: exactly as it was
        else:
            assert not torch.equal(before["opt/group0/step"], everything(compiled)["opt/group0/step"])
            torch.testing.assert_close(l_compiled["latent/deter"].float(), l_eager["latent/deter"].float(), rtol=1e-3, atol=1e-3)


@pytest.mark.parametrize("dynamics", ["rssm", "transformer"])
def test_the_cpu_strategy_computes_the_plain_update(dynamics):
    """The CPU strategy swaps layers (oneDNN, one-hot gathers, the CPU RSSM with deferred gradients) into the plain
    agent: two updates from the same seeds leave the same state, up to float rounding of sums taken in another order."""
    plain = tiny(dynamics)
    fast = use_cpu_speedups(copy.deepcopy(plain))
    if dynamics == "rssm":
        assert type(fast.wm.dynamics).__name__ == "CpuRSSM" and type(plain.wm.dynamics).__name__ == "RSSM"
    assert fast.imagined_features is not plain.imagined_features
    for i in range(2):
        batch = make_batch(2, 4)
        torch.manual_seed(20 + i)
        m_plain = plain.train_step(batch)
        torch.manual_seed(20 + i)
        m_fast = fast.train_step(batch)
        for key in m_plain:
            assert m_fast[key] == pytest.approx(m_plain[key], rel=1e-4, abs=1e-5), key
    assert_same(everything(plain), everything(fast), rtol=1e-4, atol=1e-5)


def test_compile_modes_resolve_per_device_and_bad_values_stop_in_one_line():
    assert resolve("auto", "cuda") == "update" and resolve("auto", "cpu") == "steps"
    assert resolve(True, "cpu") == "steps" and resolve(False, "cuda") == "none"  # the switch before 0.5
    assert all(resolve(mode, "cpu") == mode for mode in COMPILE_MODES if mode != "auto")
    with pytest.raises(ValueError, match=r"^run.compile='bogus' is invalid: expected one of auto, none, steps, update$"):
        resolve("bogus", "cpu")


def debug_config(*overrides: str):
    with initialize_config_dir(CONFIG_DIR, version_base=None):
        return compose("config", ["env=dummy", "model=debug", *overrides])


def test_run_compile_is_validated():
    cfg = debug_config("run.compile=bogus")
    with pytest.raises(UserError, match=r"^config value run.compile='bogus' is invalid: expected one of auto, none, steps, update$"):
        validate(cfg)
    for value in ("auto", "none", "steps", "update", "true", "false"):
        validate(debug_config(f"run.compile={value}"))
    with pytest.raises(UserError, match="run.compile=3"):
        validate(debug_config("run.compile=3"))
