"""Tests for the Transformer state-space model (worldmodels/dynamics/transformer.py): tiny sizes, CPU, seeded."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from worldmodels.dynamics import transformer
from worldmodels.dynamics.transformer import TransformerSSM
from worldmodels.models.distributions import kl_categorical

E, A, D, L, H, K, S, C = 6, 3, 16, 2, 2, 4, 4, 3  # embed, action, d_model, layers, heads, context, stoch, classes


@pytest.fixture(autouse=True, scope="module")
def _one_thread(single_thread):
    """Tiny tensors: see conftest.single_thread."""


def make(seed: int = 0, **kw) -> TransformerSSM:
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        options = {"d_model": D, "layers": L, "heads": H, "context": K, "stoch": S, "classes": C, "hidden": 8} | kw
        return TransformerSSM(E, A, **options)


def data(B: int, T: int, seed: int, firsts: tuple[int, ...] = (0,)) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Random embed (B, T, E), prev_action (B, T, A), and is_first (B, T) set at `firsts` in every row."""
    g = torch.Generator().manual_seed(seed)
    is_first = torch.zeros(B, T)
    is_first[:, list(firsts)] = 1.0
    return torch.randn(B, T, E, generator=g), torch.randn(B, T, A, generator=g), is_first


def observe_seeded(model, embed, action, is_first, state, seed=1):
    """observe with the samples drawn from a fixed RNG state (global RNG left as it was)."""
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        return model.observe(embed, action, is_first, state)


def mode_sampler(logp: torch.Tensor, straight_through: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """Deterministic stand-in for sample_onehot_index (the most likely class), so that paths that draw
    their random numbers in different shapes (one window vs step by step) get the same z."""
    index = logp.argmax(-1)
    onehot = F.one_hot(index, logp.shape[-1]).to(logp.dtype)
    if straight_through and torch.is_grad_enabled():
        onehot = onehot + logp.exp() - logp.exp().detach()
    return onehot, index


def stacked(state: dict[str, torch.Tensor], kind: str) -> torch.Tensor:
    """A state's per-layer "keys.l" (or "values.l") entries (B, H, K, Dh), stacked to (B, L, H, K, Dh)."""
    return torch.stack([state[f"{kind}.{layer}"] for layer in range(L)], 1)


def close(a: torch.Tensor, b: torch.Tensor, atol: float = 1e-5) -> bool:
    return torch.allclose(a, b, atol=atol, rtol=1e-5)


@pytest.mark.parametrize(
    "options, name",
    [({"d_model": 18, "heads": 4}, "dynamics.heads"), ({"d_model": 12, "heads": 4}, "dynamics.heads"),
     ({"context": 0}, "dynamics.context"), ({"layers": 0}, "dynamics.layers")],
)
def test_bad_options_raise_one_line_naming_the_option(options, name):
    with pytest.raises(ValueError, match=name) as info:
        make(**options)
    assert "\n" not in str(info.value)


@torch.no_grad()
def test_shapes_initial_state_and_a_state_without_cache():
    model = make()
    state = model.initial(2)
    assert stacked(state, "keys").shape == stacked(state, "values").shape == (2, L, H, K, D // H) and not state["valid"].any()
    embed, action, is_first = data(2, 5, seed=0)
    post, prior, last = observe_seeded(model, embed, action, is_first, state)
    assert post["deter"].shape == (2, 5, D) and post["stoch"].shape == post["logits"].shape == prior.shape == (2, 5, S, C)
    assert model.feat(post).shape == (2, 5, model.feat_dim) and model.feat_dim == D + S * C
    assert set(last) == {"deter", "stoch", "valid", "position", "keys.0", "values.0", "keys.1", "values.1"}
    # A state with only deter and stoch (the replay context's) reads as one whose cache holds nothing valid: the same
    # outputs as a cache full of garbage marked invalid (so masking, not the filling-in, decides), and its stoch is read.
    bare = {"deter": torch.randn(2, D), "stoch": last["stoch"]}
    a = observe_seeded(model, embed, action, torch.zeros(2, 5), bare)[0]
    garbage = {k: torch.randn_like(v) * 100 if k.startswith(("keys.", "values.")) else v for k, v in state.items()}
    assert not garbage["valid"].any()
    b = observe_seeded(model, embed, action, torch.zeros(2, 5), {**garbage, **bare})[0]
    torch.testing.assert_close(a["deter"], b["deter"], rtol=1e-5, atol=1e-5)
    other = {**bare, "stoch": bare["stoch"].roll(1, -1)}  # other classes for every variable
    c = observe_seeded(model, embed, action, torch.zeros(2, 5), other)[0]
    assert not torch.allclose(a["deter"][:, 0], c["deter"][:, 0])


@torch.no_grad()
def test_observe_is_causal():
    """Changing embed and action from step t+1 on leaves every output at steps <= t unchanged."""
    model = make()
    B, T, t = 2, 7, 3
    embed, action, is_first = data(B, T, seed=0)
    post, prior, _ = observe_seeded(model, embed, action, is_first, model.initial(B))
    embed2, action2 = embed.clone(), action.clone()
    embed2[:, t + 1 :] += 1.0
    action2[:, t + 1 :] -= 1.0
    post2, prior2, _ = observe_seeded(model, embed2, action2, is_first, model.initial(B))
    for key in ("deter", "stoch", "logits"):
        assert torch.equal(post[key][:, : t + 1], post2[key][:, : t + 1]), key
    assert torch.equal(prior[:, : t + 1], prior2[:, : t + 1])
    assert torch.equal(model.feat(post)[:, : t + 1], model.feat(post2)[:, : t + 1])
    assert not close(post["deter"][:, t + 1], post2["deter"][:, t + 1])  # the action before step t+1 is read there


@torch.no_grad()
def test_step_by_step_equals_one_parallel_window(monkeypatch):
    """obs_step T times (the acting path, through the cache) equals observe over the window, with T
    longer than the context, an episode boundary inside, and a carried state."""
    monkeypatch.setattr(transformer, "sample_onehot_index", mode_sampler)
    model = make()
    B, T = 2, 9
    carried = observe_seeded(model, *data(B, 3, seed=5), model.initial(B))[2]
    embed, action, is_first = data(B, T, seed=0, firsts=())
    is_first[1, 5] = 1.0  # row 0 carries the state on; row 1 starts a new episode at step 5
    post, prior, last = model.observe(embed, action, is_first, carried)
    state = carried
    for t in range(T):
        state = model.obs_step(state, action[:, t], embed[:, t], is_first[:, t])
        assert close(state["deter"], post["deter"][:, t]), t
        assert torch.equal(state["stoch"], post["stoch"][:, t]), t
        assert close(model.prior_logits(state["deter"]), prior[:, t]), t
        assert close(model.post_logits(embed[:, t]), post["logits"][:, t]), t
    assert torch.equal(state["valid"], last["valid"])
    for key in ("keys", "values"):
        mask = last["valid"][:, None, None, :, None]
        assert close(stacked(state, key) * mask, stacked(last, key) * mask), key


@torch.no_grad()
def test_imagine_with_cache_equals_recomputing_the_whole_window():
    """Imagined h through the trimmed cache equal one plain pass of the blocks over every input so far,
    without cache, under the causal band mask (each position sees itself and the context - 1 before it).
    With 2 layers the band reaches back 2 * (context - 1) inputs, so trimming the cache to `context`
    slots is exact, not an approximation, only if each layer's cached keys are kept (as they are)."""
    model = make()
    B, T, horizon = 2, 3, 6
    embed, prev_action, is_first = data(B, T, seed=0)
    post, _, state = observe_seeded(model, embed, prev_action, is_first, model.initial(B))
    # The inputs of every position: the start token, tok(z_{t-1}, a_{t-1}), then those of the imagined steps.
    inputs = [model.start_token.expand(B, D)] + [model.token(post["stoch"][:, t - 1], prev_action[:, t]) for t in range(1, T)]
    deters = list(post["deter"].unbind(1))
    g = torch.Generator().manual_seed(3)
    for _ in range(horizon):
        action = torch.randn(B, A, generator=g)
        inputs.append(model.token(state["stoch"], action))
        state = model.imagine_step(state, action)
        deters.append(state["deter"])
        assert stacked(state, "keys").shape == (B, L, H, K, D // H) and state["classes"].shape == (B, S)
        assert torch.equal(F.one_hot(state["classes"], C).float(), state["stoch"])
    x = torch.stack(inputs, 1)
    n = x.shape[1]
    band = torch.ones(n, n, dtype=torch.bool).tril().triu(-(K - 1)).expand(B, n, n)
    empty = torch.zeros(B, H, 0, D // H)
    for block in model.blocks:
        x = block(x, torch.arange(n).expand(B, n), empty, empty, band)[0]
    assert close(model.out_norm(x), torch.stack(deters, 1))
    # Not a function of the last `context` inputs alone: the second layer sees further back.
    x = torch.stack(inputs[-K:], 1)
    for block in model.blocks:
        x = block(x, torch.arange(K).expand(B, K), empty, empty, torch.ones(K, K, dtype=torch.bool).tril().expand(B, K, K))[0]
    assert not close(model.out_norm(x)[:, -1], deters[-1])


@torch.no_grad()
def test_only_distances_between_positions_matter():
    """Filtering and imagining from position 0 or from position 2**40 (a long acting run) give the same h and
    priors: the rotary angles are exact at any position, and the cached keys carry their own."""
    model = make()
    embed, action, is_first = data(2, 6, seed=0)
    far = {**model.initial(2), "position": torch.full((2,), 2**40)}
    outputs = []
    for state in (model.initial(2), far):
        post, prior, last = observe_seeded(model, embed, action, is_first, state)
        imagined = model.imagine_step(last, action[:, 0])
        outputs.append((post["deter"], prior, imagined["deter"]))
        assert torch.equal(last["position"], state["position"] + 6)
    for near, away in zip(*outputs):
        assert close(near, away)


@torch.no_grad()
def test_episode_boundary_inside_a_window_blocks_everything_before():
    """Outputs from an is_first step on do not depend on the carried state, nor on anything before it."""
    model = make()
    B, T = 2, 7
    embed, action, _ = data(B, T, seed=0, firsts=())
    is_first = torch.zeros(B, T)
    is_first[0, 0] = is_first[1, 3] = 1.0  # the boundary: step 0 in row 0 (the carried cache), 3 in row 1
    carried = observe_seeded(model, *data(B, 4, seed=6), model.initial(B))[2]
    post, prior, last = observe_seeded(model, embed, action, is_first, carried)
    embed2, action2 = embed.clone() + 1.0, action.clone() - 1.0
    embed2[1, 3:], action2[1, 4:] = embed[1, 3:], action[1, 4:]  # the action before the first step is ignored
    embed2[0], action2[0, 1:] = embed[0], action[0, 1:]
    empty = {**model.initial(B), "position": carried["position"]}  # cached keys are rotated at their positions
    post2, prior2, last2 = observe_seeded(model, embed2, action2, is_first, empty)
    for b, first in enumerate((0, 3)):
        for key in ("deter", "stoch", "logits"):
            assert close(post[key][b, first:], post2[key][b, first:], atol=1e-6), (b, key)
        assert close(prior[b, first:], prior2[b, first:], atol=1e-6), b
    assert not close(post["deter"][1, :3], post2["deter"][1, :3])
    assert torch.equal(last["valid"], last2["valid"]) and last["valid"].all()
    mask = last["valid"][:, None, None, :, None]
    assert close(stacked(last, "keys") * mask, stacked(last2, "keys") * mask, atol=1e-6)


@torch.no_grad()
def test_cache_is_trimmed_to_context():
    model = make()
    embed, action, is_first = data(2, 2, seed=0)
    _, _, last = observe_seeded(model, embed, action, is_first, model.initial(2))
    assert last["valid"].tolist() == [[False, False, True, True]] * 2  # T < context: the rest stays empty
    embed, action, is_first = data(2, 7, seed=1, firsts=(0, 5))
    post, _, last = observe_seeded(model, embed, action, is_first, model.initial(2))
    assert stacked(last, "keys").shape == (2, L, H, K, D // H)
    assert torch.equal(stacked(last, "keys"), stacked(post, "keys")[:, :, :, -K:])  # the latest K positions
    assert torch.equal(stacked(last, "values"), stacked(post, "values")[:, :, :, -K:])
    assert last["valid"].tolist() == [[False, False, True, True]] * 2  # steps 5 and 6 are of the last episode
    state = last
    for _ in range(3):
        nxt = model.imagine_step(state, torch.randn(2, A))
        assert stacked(nxt, "keys").shape == (2, L, H, K, D // H)
        assert torch.equal(stacked(nxt, "keys")[..., :-1, :], stacked(state, "keys")[..., 1:, :])  # slides by one slot
        assert torch.equal(nxt["valid"], torch.cat([state["valid"][:, 1:], torch.ones(2, 1, dtype=torch.bool)], 1))
        state = nxt
    assert state["valid"].all()


@torch.no_grad()
def test_starts_equal_the_last_states_of_each_prefix(monkeypatch):
    """starts(post, state)[b * T + t] is the state observe returns for the window cut after step t."""
    monkeypatch.setattr(transformer, "sample_onehot_index", mode_sampler)
    model = make()
    B, T = 2, 6
    carried = model.observe(*data(B, 3, seed=5), model.initial(B))[2]
    embed, action, is_first = data(B, T, seed=0, firsts=())
    is_first[1, 2] = 1.0
    post, _, _ = model.observe(embed, action, is_first, carried)
    starts = model.starts(post, carried)
    assert all(v.shape[0] == B * T for v in starts.values())
    for t in range(T):
        last = model.observe(embed[:, : t + 1], action[:, : t + 1], is_first[:, : t + 1], carried)[2]
        rows = torch.arange(B) * T + t
        assert torch.equal(starts["valid"][rows], last["valid"]), t
        for key in ("deter", "stoch"):
            assert close(starts[key][rows], last[key]), (t, key)
        mask = last["valid"][:, None, None, :, None]
        for key in ("keys", "values"):
            assert close(stacked(starts, key)[rows] * mask, stacked(last, key) * mask), (t, key)


def test_kl_gradients_reach_tokens_attention_and_posterior():
    model = make()
    embed, action, is_first = data(2, 6, seed=0)
    post, prior, _ = observe_seeded(model, embed, action, is_first, model.initial(2))
    dyn = kl_categorical(post["logits"].detach(), prior).mean()
    dyn.backward(retain_graph=True)
    named = dict(model.named_parameters())
    reached = ["start_token", "token_in.0.weight", "token_out.weight", "prior_out.weight", "out_norm.scale"]
    for layer in range(L):
        reached += [f"blocks.{layer}.{name}" for name in ("qkv.weight", "proj.weight", "mlp_in.weight", "mlp_out.weight")]
    for name in reached:
        grad = named[name].grad
        assert grad is not None and grad.abs().sum() > 0 and torch.isfinite(grad).all(), name
    assert named["post_out.weight"].grad.abs().sum() > 0  # through the straight-through samples in the tokens
    model.zero_grad()
    kl_categorical(post["logits"], prior.detach()).mean().backward()  # the representation loss
    assert named["post_in.0.weight"].grad.abs().sum() > 0 and named["token_out.weight"].grad is None
