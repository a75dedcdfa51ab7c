"""OneHotFeat: layers on split features compute what they compute on the concatenated features."""

import pytest
import torch
import torch.nn.functional as F

from worldmodels.cpu.linear import use_cpu_linears
from worldmodels.cpu.onehot_feat import OneHotFeat, onehot_feat_linear
from worldmodels.models.distributions import sample_onehot
from worldmodels.models.heads import TwoHotHead
from worldmodels.models.nets import Linear
from worldmodels.models.transforms import twohot_bins


def make_feat(lead=(3, 5), deter=6, groups=4, classes=3, seed=0) -> OneHotFeat:
    g = torch.Generator().manual_seed(seed)
    stoch = F.one_hot(torch.randint(0, classes, (*lead, groups), generator=g), classes).float()
    return OneHotFeat.from_state(torch.randn(*lead, deter, generator=g), stoch)


def test_from_state_names_the_hot_column_of_every_variable():
    deter = torch.zeros(2, 3)
    stoch = torch.tensor([[[0.0, 1, 0], [1, 0, 0]], [[0, 0, 1], [0, 1, 0]]])  # 2 states, 2 variables, 3 classes
    feat = OneHotFeat.from_state(deter, stoch)
    assert feat.index.tolist() == [[1, 3], [2, 4]]  # variable * classes + class
    assert feat.shape == (2, 3 + 6)
    torch.testing.assert_close(feat.tensor(), torch.cat([deter, stoch.reshape(2, 6)], -1))


def test_indexing_the_leading_dims_indexes_every_part():
    feat = make_feat()
    for key in (slice(1, None), slice(None, -1), 0, (slice(None), 2)):
        torch.testing.assert_close(feat[key].tensor(), feat.tensor()[key])
        assert torch.equal(feat[key].index, feat.index[key])


@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("rows", [(3, 5), (64, 16)])  # the second is big enough for the oneDNN path
def test_linear_values_and_gradients_match_the_concatenated_features(bias, rows):
    feat = make_feat(lead=rows, deter=96, groups=8, classes=4)
    deter, stoch = feat.deter.clone().requires_grad_(), feat.stoch.clone().requires_grad_()
    split = OneHotFeat(deter, stoch, feat.index)
    weight = torch.randn(128, 96 + 32, requires_grad=True)
    b = torch.randn(128, requires_grad=True) if bias else None
    grad = torch.randn(*rows, 128)

    out = onehot_feat_linear(split, weight, b)
    params = [deter, stoch, weight] + ([b] if bias else [])
    got = torch.autograd.grad(out, params, grad)
    ref_out = F.linear(torch.cat([deter, stoch], -1), weight, b)
    want = torch.autograd.grad(ref_out, params, grad)
    torch.testing.assert_close(out, ref_out, rtol=1e-5, atol=1e-5)
    for a, w in zip(got, want):
        torch.testing.assert_close(a, w, rtol=1e-5, atol=1e-4)


def test_heads_take_split_features_through_their_first_linear_layer():
    torch.manual_seed(0)
    feat = make_feat(deter=10)
    # The CPU strategy's layers (worldmodels/strategies/cpu.py) take them.
    head = use_cpu_linears(TwoHotHead(feat.shape[-1], units=8, layers=2, bins=twohot_bins(15)))
    torch.nn.init.normal_(head.out.weight)  # zero-initialised otherwise
    torch.testing.assert_close(head(feat), head(feat.tensor()))
    layer = use_cpu_linears(Linear(feat.shape[-1], 4))  # a head without hidden layers
    torch.testing.assert_close(layer(feat), layer(feat.tensor()))


def test_width_mismatch_is_a_clear_error():
    with pytest.raises(ValueError, match="features of width 18 into a layer of 17 inputs"):
        onehot_feat_linear(make_feat(), torch.zeros(4, 17), None)


def test_samples_without_autograd_are_exactly_one_hot():
    """Imagination runs without autograd; its samples must be exact for the gather to equal the product."""
    logp = torch.log_softmax(torch.randn(50, 32, 16), -1)
    with torch.no_grad():
        sample = sample_onehot(logp)
    assert set(sample.unique().tolist()) == {0.0, 1.0} and torch.equal(sample.sum(-1), torch.ones(50, 32))


def test_rssm_step_with_sampled_classes_matches_the_one_hot_product():
    """Given the classes of its stoch, CpuRSSM's imagination step gathers; state and gradients are the plain RSSM's."""
    from worldmodels.cpu.rssm import CpuRSSM
    from worldmodels.dynamics.rssm import RSSM

    classes = torch.randint(0, 5, (6, 4), generator=torch.Generator().manual_seed(3))
    results = []
    for given in (None, classes):
        torch.manual_seed(0)
        rssm = (RSSM if given is None else CpuRSSM)(embed_dim=8, action_dim=3, deter=32, hidden=16, stoch=4, classes=5, blocks=4)
        stoch = F.one_hot(classes, 5).float().requires_grad_()
        state = {"deter": torch.randn(6, 32, generator=torch.Generator().manual_seed(1)), "stoch": stoch}
        if given is not None:
            state["classes"] = given
        torch.manual_seed(2)
        nxt = rssm.imagine_step(state, torch.ones(6, 3))
        nxt["deter"].square().sum().backward()
        results.append((nxt["deter"], stoch.grad, rssm.in_stoch[0].weight.grad.clone()))
    for a, b in zip(*results):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)
    assert torch.equal(nxt["stoch"].argmax(-1), nxt["classes"])
