"""Tests for the network modules: nets, heads, RSSM and the world model (tiny sizes, CPU)."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from worldmodels.dynamics.rssm import RSSM
from worldmodels.models import nets
from worldmodels.models.distributions import DiscretePolicy, NormalPolicy, kl_categorical
from worldmodels.models.heads import Actor, BinaryHead, TwoHotHead, VectorDecoder, VectorEncoder
from worldmodels.models.nets import MLP, BlockLinear, Linear, RMSNorm
from worldmodels.models.transforms import symlog, twohot_bins
from worldmodels.world_model.world_model import WorldModel


@pytest.fixture(autouse=True, scope="module")
def _one_thread(single_thread):
    """Tiny tensors: see conftest.single_thread."""


# sizes of worldmodels/configs/model/debug.yaml
DEBUG = {
    "deter": 32,
    "hidden": 16,
    "stoch": 4,
    "classes": 4,
    "blocks": 2,
    "units": 16,
    "depth": 2,
    "enc_layers": 1,
    "dec_layers": 1,
    "head_layers": 1,
}


# -- nets ----------------------------------------------------------------------------------------------


def test_linear_init_std_and_zero_init():
    torch.manual_seed(0)
    lin = Linear(400, 300)
    std = lin.weight.std().item()
    assert std == pytest.approx(math.sqrt(1 / 400), rel=0.03)
    # truncated at 2 standard deviations of the underlying normal
    assert lin.weight.abs().max().item() <= 2 * math.sqrt(1 / 400) / 0.87962566103423978 + 1e-6
    assert (lin.bias == 0).all()
    zero = Linear(5, 3, zero=True)
    assert (zero.weight == 0).all() and (zero(torch.randn(2, 5)) == 0).all()
    assert Linear(5, 3, bias=False).bias is None


def test_every_layer_before_a_norm_has_a_zero_initialised_bias():
    """As in the official nets: Linear (bias on) -> RMSNorm (scale only) -> SiLU. A bias there is not
    redundant, since RMSNorm subtracts no mean: shifting it changes the normalised output."""
    torch.manual_seed(0)
    mlp = MLP(6, 8, 2)
    linears = [m for m in mlp.modules() if isinstance(m, Linear)]
    assert len(linears) == 2 and all(lin.bias is not None and (lin.bias == 0).all() for lin in linears)
    x = torch.randn(4, 6)
    before = mlp(x)
    with torch.no_grad():
        linears[0].bias.fill_(0.5)
    assert not torch.allclose(mlp(x), before)
    rssm = RSSM(embed_dim=5, action_dim=2, deter=16, hidden=8, stoch=2, classes=3, blocks=4)
    assert rssm.post_deter.bias is not None and rssm.post_embed.bias is None  # one bias for concat(deter, embed)
    assert rssm.gru_hidden.bias is not None and rssm.gru_hidden_shared.bias is None  # one bias for the block layer


def test_block_linear_equals_dense_block_diagonal():
    torch.manual_seed(1)
    inp, out, blocks = 12, 8, 4
    layer = BlockLinear(inp, out, blocks)
    with torch.no_grad():
        layer.bias.copy_(torch.randn(out))
    i, o = inp // blocks, out // blocks
    dense = torch.zeros(inp, out)
    for g in range(blocks):
        for a in range(i):
            for b in range(o):
                dense[g * i + a, g * o + b] = layer.weight[g, a, b].item()
    x = torch.randn(3, 5, inp)
    expected = x @ dense + layer.bias
    torch.testing.assert_close(layer(x), expected, rtol=1e-5, atol=1e-6)
    # and a plain nn.Linear with that (transposed) weight
    ref = torch.nn.Linear(inp, out)
    with torch.no_grad():
        ref.weight.copy_(dense.T)
        ref.bias.copy_(layer.bias)
    torch.testing.assert_close(layer(x), ref(x), rtol=1e-5, atol=1e-6)


def test_block_linear_blocks_are_independent_and_gradients():
    torch.manual_seed(2)
    layer = BlockLinear(6, 9, 3)
    x = torch.randn(4, 6, requires_grad=True)
    y = layer(x)
    assert y.shape == (4, 9)
    y[:, 3:6].sum().backward()  # block 1 output
    assert (x.grad[:, :2] == 0).all() and (x.grad[:, 4:] == 0).all()
    assert (x.grad[:, 2:4] != 0).all()
    assert layer.weight.grad.shape == (3, 2, 3)
    assert (layer.weight.grad[0] == 0).all() and (layer.weight.grad[2] == 0).all()


def test_block_linear_rejects_indivisible_sizes():
    with pytest.raises(ValueError):
        BlockLinear(10, 8, 4)
    with pytest.raises(ValueError):
        BlockLinear(8, 10, 4)


def test_rmsnorm_unit_rms_and_hand_formula():
    torch.manual_seed(3)
    norm = RMSNorm(64)
    x = torch.randn(5, 7, 64) * 3 + 1
    y = norm(x)
    rms = y.square().mean(-1).sqrt()
    torch.testing.assert_close(rms, torch.ones(5, 7), atol=1e-4, rtol=0)
    expected = x / torch.sqrt(x.square().mean(-1, keepdim=True) + 1e-4)
    torch.testing.assert_close(y, expected)
    with torch.no_grad():
        norm.scale.fill_(2.0)
    torch.testing.assert_close(norm(x).square().mean(-1).sqrt(), torch.full((5, 7), 2.0), atol=2e-4, rtol=0)
    assert torch.isfinite(norm(torch.zeros(2, 64))).all()


def test_compiling_rms_silu_raises_dynamo_recompile_limit_and_never_lowers_it(monkeypatch):
    """One model size needs five compiled versions of rms_silu; past dynamo's default limit of 8 (a second
    size in one process) the rest would run eagerly. Creating the compiled function makes room."""
    name = nets.recompile_limit_name()  # imports torch._dynamo
    config = torch._dynamo.config
    # config.patch, not monkeypatch: dynamo's config is a module whose entries are not in its __dict__, so
    # monkeypatch's undo deletes the entry outright (pytest >= 9.1), breaking every later compile.
    monkeypatch.setattr(nets, "_compiled_rms_silu", None)
    with config.patch({name: 8}):
        nets.compiled_rms_silu()
        assert getattr(config, name) == nets.RMS_SILU_SPECIALISATIONS
    with config.patch({name: 1000}):
        nets._raise_recompile_limit(nets.RMS_SILU_SPECIALISATIONS)
        assert getattr(config, name) == 1000


def test_mlp_shapes_and_layers():
    mlp = MLP(7, 16, 3)
    assert mlp.out_dim == 16 and len(mlp) == 3
    assert mlp(torch.randn(2, 5, 7)).shape == (2, 5, 16)
    empty = MLP(7, 16, 0)
    assert empty.out_dim == 7
    x = torch.randn(3, 7)
    assert torch.equal(empty(x), x)


# -- heads ---------------------------------------------------------------------------------------------


def assert_all_grads_finite_nonzero(module, skip=()):
    for name, p in module.named_parameters():
        assert p.grad is not None, name
        assert torch.isfinite(p.grad).all(), name
        if not any(name.startswith(s) for s in skip):
            assert p.grad.abs().sum() > 0, name


def test_vector_encoder_and_decoder():
    torch.manual_seed(4)
    shapes = {"state": (4,), "extra": (2, 3)}
    enc = VectorEncoder(shapes, units=16, layers=2)
    obs = {"state": torch.randn(3, 5, 4) * 100, "extra": torch.randn(3, 5, 2, 3)}
    e = enc(obs)
    assert e.shape == (3, 5, 16) and enc.out_dim == 16
    dec = VectorDecoder(16, shapes, units=16, layers=1)
    pred = dec(e)
    assert pred["state"].shape == (3, 5, 4) and pred["extra"].shape == (3, 5, 2, 3)
    loss = dec.loss(e, obs)
    assert loss.shape == (3, 5)
    err_state = (pred["state"] - symlog(obs["state"])).square().sum(-1)
    err_extra = (pred["extra"] - symlog(obs["extra"])).square().sum((-2, -1))
    expected = err_state + err_extra
    torch.testing.assert_close(loss, expected)
    loss.mean().backward()
    assert_all_grads_finite_nonzero(enc)
    assert_all_grads_finite_nonzero(dec)


def test_twohot_head_zero_init_shapes_and_gradients():
    torch.manual_seed(5)
    bins = twohot_bins(31)
    head = TwoHotHead(20, units=16, layers=1, bins=bins)
    feat = torch.randn(3, 6, 20, requires_grad=True)
    assert head(feat).shape == (3, 6, 31)
    assert (head.mean(feat) == 0).all()  # zero-init output layer: uniform logits decode to exactly 0
    target = torch.randn(3, 6) * 10
    loss = head.loss(feat, target)
    assert loss.shape == (3, 6)
    torch.testing.assert_close(loss, torch.full((3, 6), math.log(31)))
    loss.mean().backward()
    # the zero output layer blocks the gradient to the hidden layers at init; the output layer learns
    assert_all_grads_finite_nonzero(head, skip=("net.",))
    assert head.out.weight.grad.abs().sum() > 0
    assert "bins" not in head.state_dict()


def test_binary_head_loss_and_gradients():
    torch.manual_seed(6)
    head = BinaryHead(20, units=16, layers=1)
    feat = torch.randn(3, 6, 20)
    target = (torch.rand(3, 6) > 0.5).float()
    logits = head(feat)
    assert logits.shape == (3, 6)
    p = head.prob(feat)
    assert ((p > 0) & (p < 1)).all()
    expected = -(target * torch.log(torch.sigmoid(logits)) + (1 - target) * torch.log(1 - torch.sigmoid(logits)))
    loss = head.loss(feat, target)
    torch.testing.assert_close(loss, expected, rtol=1e-5, atol=1e-6)
    loss.mean().backward()
    assert_all_grads_finite_nonzero(head)


@pytest.mark.parametrize("discrete", [True, False])
def test_actor_policies_shapes_and_gradients(discrete):
    torch.manual_seed(7)
    actor = Actor(20, action_dim=3, discrete=discrete, units=16, layers=2)
    feat = torch.randn(4, 5, 20)
    pi = actor(feat)
    assert isinstance(pi, DiscretePolicy if discrete else NormalPolicy)
    a = pi.sample()
    assert a.shape == (4, 5, 3)
    lp = pi.log_prob(a.detach())
    assert lp.shape == (4, 5) and pi.entropy().shape == (4, 5)
    (lp.mean() + pi.entropy().mean()).backward()
    assert_all_grads_finite_nonzero(actor)


# -- RSSM ----------------------------------------------------------------------------------------------


def make_rssm(embed=10, action=3, seed=0):
    torch.manual_seed(seed)
    return RSSM(embed, action, deter=32, hidden=16, stoch=4, classes=4, blocks=2, unimix=0.01)


@pytest.mark.parametrize("B,T", [(1, 1), (2, 5), (4, 16), (3, 7)])
def test_rssm_observe_shapes_and_gradients(B, T):
    rssm = make_rssm()
    embed = torch.randn(B, T, 10, requires_grad=True)
    action = F.one_hot(torch.randint(0, 3, (B, T)), 3).float()
    is_first = torch.zeros(B, T, dtype=torch.bool)
    is_first[:, 0] = True
    post, prior, last = rssm.observe(embed, action, is_first, rssm.initial(B))
    assert post["deter"].shape == (B, T, 32)
    assert post["stoch"].shape == (B, T, 4, 4)
    assert post["logits"].shape == (B, T, 4, 4)
    assert prior.shape == (B, T, 4, 4)
    assert last["deter"].shape == (B, 32) and last["stoch"].shape == (B, 4, 4)
    torch.testing.assert_close(last["deter"], post["deter"][:, -1])
    torch.testing.assert_close(last["stoch"], post["stoch"][:, -1])
    # stoch is one-hot; logits are normalised log-probabilities with the unimix floor
    torch.testing.assert_close(post["stoch"].sum(-1), torch.ones(B, T, 4))
    torch.testing.assert_close(post["logits"].exp().sum(-1), torch.ones(B, T, 4))
    torch.testing.assert_close(prior.exp().sum(-1), torch.ones(B, T, 4))
    assert (post["logits"].exp() >= 0.01 / 4 - 1e-6).all() and (prior.exp() >= 0.01 / 4 - 1e-6).all()
    feat = rssm.feat(post)
    assert feat.shape == (B, T, rssm.feat_dim) and rssm.feat_dim == 32 + 16
    loss = feat.square().mean() + prior.exp().square().mean() + post["logits"].exp().square().mean()
    loss.backward()
    assert embed.grad is not None and torch.isfinite(embed.grad).all() and embed.grad.abs().sum() > 0
    for name, p in rssm.named_parameters():
        assert p.grad is not None, name
        assert torch.isfinite(p.grad).all(), name
    if T > 1:
        for name, p in rssm.named_parameters():
            assert p.grad.abs().sum() > 0, name


def test_rssm_imagine_step_shapes_and_gradients():
    rssm = make_rssm(seed=1)
    B = 5
    state = {"deter": torch.randn(B, 32), "stoch": F.one_hot(torch.randint(0, 4, (B, 4)), 4).float()}
    action = torch.randn(B, 3, requires_grad=True)
    nxt = rssm.imagine_step(state, action)
    assert nxt["deter"].shape == (B, 32) and nxt["stoch"].shape == (B, 4, 4)
    torch.testing.assert_close(nxt["stoch"].sum(-1), torch.ones(B, 4))
    nxt2 = rssm.imagine_step(nxt, action)
    rssm.feat(nxt2).square().sum().backward()
    assert torch.isfinite(action.grad).all() and action.grad.abs().sum() > 0
    used = [n for n, p in rssm.named_parameters() if not n.startswith("post_")]
    for name, p in rssm.named_parameters():
        if name in used:
            assert p.grad is not None and torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0, name
        else:
            assert p.grad is None, name  # the posterior is not used in imagination


def test_rssm_obs_step_matches_observe():
    rssm = make_rssm(seed=2)
    B = 3
    embed = torch.randn(B, 10)
    action = F.one_hot(torch.tensor([0, 1, 2]), 3).float()
    is_first = torch.tensor([True, False, True])
    state = {"deter": torch.randn(B, 32), "stoch": F.one_hot(torch.randint(0, 4, (B, 4)), 4).float()}
    torch.manual_seed(0)
    a = rssm.obs_step(state, action, embed, is_first)
    torch.manual_seed(0)
    _, _, b = rssm.observe(embed[:, None], action[:, None], is_first[:, None], state)
    torch.testing.assert_close(a["deter"], b["deter"])
    torch.testing.assert_close(a["stoch"], b["stoch"])


def test_rssm_rejects_indivisible_deter():
    with pytest.raises(ValueError):
        RSSM(10, 3, deter=30, hidden=16, stoch=4, classes=4, blocks=4)


def test_rssm_is_first_resets_state():
    rssm = make_rssm(seed=3)
    B, T, k = 3, 10, 4
    gen = torch.Generator().manual_seed(0)
    embed1 = torch.randn(B, T, 10, generator=gen)
    action1 = F.one_hot(torch.randint(0, 3, (B, T), generator=gen), 3).float()
    is_first = torch.zeros(B, T, dtype=torch.bool)
    is_first[:, k] = True
    state1 = rssm.initial(B)
    # different data before the reset: earlier embeds, earlier actions, the action at the reset step
    # (a previous action never crosses an episode start) and the initial state
    embed2, action2 = embed1.clone(), action1.clone()
    embed2[:, :k] = torch.randn(B, k, 10, generator=gen) * 5
    action2[:, : k + 1] = torch.randn(B, k + 1, 3, generator=gen)
    state2 = {
        "deter": torch.randn(B, 32, generator=gen),
        "stoch": F.one_hot(torch.randint(0, 4, (B, 4), generator=gen), 4).float(),
    }
    torch.manual_seed(123)
    post1, prior1, _ = rssm.observe(embed1, action1, is_first, state1)
    torch.manual_seed(123)
    post2, prior2, _ = rssm.observe(embed2, action2, is_first, state2)
    assert not torch.equal(post1["deter"][:, :k], post2["deter"][:, :k])  # the inputs did differ
    assert torch.equal(post1["deter"][:, k:], post2["deter"][:, k:])
    assert torch.equal(post1["stoch"][:, k:], post2["stoch"][:, k:])
    assert torch.equal(post1["logits"][:, k:], post2["logits"][:, k:])
    assert torch.equal(prior1[:, k:], prior2[:, k:])


def test_rssm_reset_only_affects_marked_rows():
    rssm = make_rssm(seed=4)
    B, T = 2, 6
    embed = torch.randn(B, T, 10)
    action = F.one_hot(torch.randint(0, 3, (B, T)), 3).float()
    is_first = torch.zeros(B, T, dtype=torch.bool)
    is_first[0, 3] = True  # only row 0 resets
    torch.manual_seed(5)
    post1, _, _ = rssm.observe(embed, action, is_first, rssm.initial(B))
    embed2 = embed.clone()
    embed2[:, :3] += 3.0
    torch.manual_seed(5)
    post2, _, _ = rssm.observe(embed2, action, is_first, rssm.initial(B))
    assert torch.equal(post1["deter"][0, 3:], post2["deter"][0, 3:])
    assert not torch.allclose(post1["deter"][1, 3:], post2["deter"][1, 3:])


# -- world model ---------------------------------------------------------------------------------------


def make_batch(B=4, T=16, seed=0):
    gen = torch.Generator().manual_seed(seed)
    is_first = torch.zeros(B, T, dtype=torch.bool)
    is_first[:, 0] = True
    is_first[1, 9] = True
    is_terminal = torch.zeros(B, T, dtype=torch.bool)
    is_terminal[1, 8] = True
    is_last = is_terminal.clone()
    is_last[2, -1] = True
    return {
        "state": torch.randn(B, T, 4, generator=gen) * 2,
        "action": F.one_hot(torch.randint(0, 3, (B, T), generator=gen), 3).float(),
        "reward": torch.randn(B, T, generator=gen),
        "is_first": is_first,
        "is_last": is_last,
        "is_terminal": is_terminal,
    }


def make_wm(seed=0, **kw):
    torch.manual_seed(seed)
    return WorldModel({"state": (4,)}, 3, bins=twohot_bins(31), **{**DEBUG, **kw})


def test_world_model_loss_shapes_and_values():
    wm = make_wm()
    B, T = 4, 16
    batch = make_batch(B, T)
    torch.manual_seed(1)
    losses, post, last = wm.loss(batch, wm.dynamics.initial(B), torch.zeros(B, 3))
    assert set(losses) == {"dec", "rew", "con", "dyn", "rep"}
    for name, value in losses.items():
        assert value.shape == (B, T), name
        assert torch.isfinite(value).all(), name
    assert post["feat"].shape == (B, T, wm.dynamics.feat_dim)
    assert last["deter"].shape == (B, 32)
    # zero-init reward head: loss is log(K) for every target
    torch.testing.assert_close(losses["rew"], torch.full((B, T), math.log(31)))
    # free bits: dyn = max(1, KL(post || prior)); forward value of rep is the same KL
    prior = wm.dynamics.prior_logits(post["deter"])
    kl = kl_categorical(post["logits"], prior)
    torch.testing.assert_close(losses["dyn"], torch.clamp(kl, min=1.0))
    torch.testing.assert_close(losses["rep"], torch.clamp(kl, min=1.0))
    assert (losses["dyn"] >= 1.0).all()


def test_world_model_all_parameters_get_finite_gradients():
    wm = make_wm(free_bits=0.0)  # no clipping so the KL terms reach the prior
    B = 4
    batch = make_batch(B, 16)
    torch.manual_seed(2)
    losses, _, _ = wm.loss(batch, wm.dynamics.initial(B), torch.zeros(B, 3))
    sum(v.mean() for v in losses.values()).backward()
    for name, p in wm.named_parameters():
        assert p.grad is not None, name
        assert torch.isfinite(p.grad).all(), name
        if not name.startswith("reward.net."):  # behind the zero-init reward output layer
            assert p.grad.abs().sum() > 0, name


def test_world_model_rep_loss_does_not_train_prior_and_free_bits_stop_gradient():
    B = 4
    batch = make_batch(B, 16)
    wm = make_wm(free_bits=0.0)
    torch.manual_seed(3)
    losses, _, _ = wm.loss(batch, wm.dynamics.initial(B), torch.zeros(B, 3))
    losses["rep"].mean().backward()
    for name, p in wm.named_parameters():
        if name.startswith(("rssm.prior_net", "rssm.prior_out")):
            assert p.grad is None or (p.grad == 0).all(), name  # stop-gradient on the prior
    assert wm.dynamics.post_out.weight.grad.abs().sum() > 0
    # free bits above every KL: dyn and rep are constant and give no gradient at all
    wm2 = make_wm(free_bits=1e3)
    torch.manual_seed(3)
    losses2, _, _ = wm2.loss(batch, wm2.dynamics.initial(B), torch.zeros(B, 3))
    assert (losses2["dyn"] == 1e3).all() and (losses2["rep"] == 1e3).all()
    (losses2["dyn"].mean() + losses2["rep"].mean()).backward()
    for name, p in wm2.named_parameters():
        assert p.grad is None or (p.grad == 0).all(), name


def test_world_model_loss_falls_on_fixed_batch():
    wm = make_wm(seed=0)
    B = 4
    batch = make_batch(B, 16, seed=1)
    opt = torch.optim.Adam(wm.parameters(), lr=1e-3)
    torch.manual_seed(0)

    def step():
        losses, _, _ = wm.loss(batch, wm.dynamics.initial(B), torch.zeros(B, 3))
        pred = (losses["dec"] + losses["rew"] + losses["con"]).mean()
        total = pred + losses["dyn"].mean() + 0.1 * losses["rep"].mean()
        return pred, total

    start = step()[0].item()
    for _ in range(150):
        opt.zero_grad()
        _, total = step()
        total.backward()
        opt.step()
    with torch.no_grad():
        end = step()[0].item()
    assert math.isfinite(end)
    assert end < 0.5 * start, (start, end)


def test_rssm_actions_scaled_into_unit_range():
    # actions enter as action / max(1, |action|): 3.0 and 1.0 give the same step, 0.5 does not change
    rssm = make_rssm(seed=6)
    B = 2
    state = {"deter": torch.randn(B, 32), "stoch": F.one_hot(torch.randint(0, 4, (B, 4)), 4).float()}
    big = torch.tensor([[3.0, -7.0, 0.5], [100.0, 0.2, -1.5]])
    scaled = torch.tensor([[1.0, -1.0, 0.5], [1.0, 0.2, -1.0]])
    torch.testing.assert_close(rssm.action_input(big), rssm.action_input(scaled))
    torch.manual_seed(0)
    a = rssm.imagine_step(state, big)
    torch.manual_seed(0)
    b = rssm.imagine_step(state, scaled)
    torch.testing.assert_close(a["deter"], b["deter"])
    torch.testing.assert_close(a["stoch"], b["stoch"])
