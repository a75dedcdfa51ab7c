"""CpuRSSM is the plain RSSM with CPU speed-ups: the same parameters, samples and gradients.

The pieces are checked where they are defined: deferred weight gradients (test_deferred_grad.py), packed
weights over three optimiser steps (test_packed_linear.py), one-hot gathers in imagination
(test_onehot_feat.py); each against the plain RSSM."""

import torch

from worldmodels.cpu.rssm import CpuRSSM
from worldmodels.dynamics import make_dynamics
from worldmodels.dynamics.rssm import RSSM

WIDTHS = {"deter": 16, "hidden": 8, "stoch": 3, "classes": 4, "blocks": 4}


def test_the_cpu_build_has_the_plain_parameters_and_loads_its_checkpoints():
    torch.manual_seed(0)
    plain = make_dynamics({"name": "rssm"}, 6, 3, WIDTHS, 0.01)
    torch.manual_seed(0)
    fast = CpuRSSM.adopt(make_dynamics({"name": "rssm"}, 6, 3, WIDTHS, 0.01))  # what the CPU strategy does
    assert type(plain) is RSSM and type(fast) is CpuRSSM
    a, b = plain.state_dict(), fast.state_dict()
    assert list(a) == list(b) and all(torch.equal(a[k], b[k]) for k in a)  # same initialisation, same names
    other = RSSM(6, 3, **WIDTHS)
    other.load_state_dict(fast.state_dict())


def test_imagination_samples_are_the_plain_ones():
    """Several imagination steps from the same state and seed: the same sampled classes throughout."""
    runs = []
    for cls in (RSSM, CpuRSSM):
        torch.manual_seed(0)
        rssm = cls(6, 3, **WIDTHS)
        state = {"deter": torch.zeros(8, 16), "stoch": torch.zeros(8, 3, 4)}
        classes = []
        with torch.no_grad():
            for t in range(10):
                state = rssm.imagine_step(state, torch.full((8, 3), 0.1 * t))
                classes.append(state["classes"])
        runs.append(torch.stack(classes))
    assert torch.equal(runs[0], runs[1])
