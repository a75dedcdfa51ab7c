"""Transformer state-space model: causal self-attention latent dynamics in the style of STORM and TWISTER.

It has the RSSM's interface and state conventions (dynamics/base.py), so the heads and the actor-critic read it
unchanged: `initial`, `observe`, `obs_step`, `imagine_step`, `feat`, `feat_dim`, `prior_logits`.

Model, per step t of an episode (z: `stoch` categoricals of `classes` classes; 1% unimix; one-hot
straight-through samples, as in the RSSM):

    posterior  q(z_t | e_t)        one hidden layer on the encoder embedding e_t alone, so all posteriors
                                   of a window come out in one parallel pass
    token      u_t = tok(z_t, a_t) Linear -> RMSNorm -> SiLU -> Linear on concat(flat z_t, a_t / max(1, |a_t|))
    deter      h_t = GPT(u_{t-1}, u_{t-2}, ...)   causal Transformer output at position t, whose input is
                                   u_{t-1}: h_t summarises the strict past, like the RSSM's deter
    prior      p(z_t | h_t)        MLP -> logits, like the RSSM's prior_net / prior_out
    features   concat(h_t, flat z_t), width d_model + stoch * classes

The input at the first step of an episode (is_first) is a learned start token instead of u_{t-1}, and no
position attends across an episode boundary. In every layer a position attends to at most `context`
positions (itself and the context - 1 before it: a causal band mask, as a sliding-window Transformer),
in training as in acting and imagination, so the three agree exactly. Through L layers h_t reaches back
L * (context - 1) inputs, so h is not a function of the last `context` inputs alone; keeping each layer's
keys and values of the last `context` positions makes the trimmed cache exact all the same.

Positions are rotary (RoPE, Su et al. 2021) on queries and keys: attention depends only on the distance
between two positions, so a key is rotated once, at its own position, when it enters the cache, and a
query at a later position reads it as it is. The state counts positions (`position`, never reset: only
distances matter); the angles are computed in float64, so they stay exact however long a run acts.

State (dict of tensors with batch dimension B first, as the RSSM's):
    deter  (B, D)             h of the current step (D = d_model)
    stoch  (B, S, C)          z of the current step (one-hot sample)
    keys.l   (B, H, K, Dh)    for each layer l = 0 .. L-1, the keys of the last K = `context` positions (the
                              current one last), rotated at their positions; one entry per layer, so that the
                              concatenation a layer attends over is also the next cache (no copy to stack layers)
    values.l (B, H, K, Dh)    their values
    valid  (B, K) bool        which cache slots hold a position of the current episode
    position (B,) int64       the position the next input will take (positions seen so far)
    classes (B, S)            sampled class indices; only from `imagine_step`, as the RSSM's
The next position's input is tok(stoch, action): the carried stoch and the action given to the next call
(`prev_action[:, 0]` or imagine_step's action), so no token is stored. A state with only deter and stoch
(as the replay context keeps, see Dynamics.state_from_latents) is read as one with an empty cache.

Imagination starts: `observe` also leaves, in the posterior dict, each layer's keys and values of every
position of the window ("keys.l", "values.l": (B, H, T, Dh)), the episode id of each step ("episode": (B, T))
and the position of each step ("position": (B, T)).
`starts(post, state)` cuts from them, for each of the B * T posterior states, the cache it would carry
had the window been filtered up to that step: no recomputation, one gather of B*T*K cache slots.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from worldmodels.dynamics.base import Dynamics, Spec, State
from worldmodels.models.distributions import sample_onehot_index
from worldmodels.models.nets import MLP, Linear, NormAct, RMSNorm
from worldmodels.models.options import integer, invalid


def cache_names(layer: int) -> tuple[str, str]:
    """The state's names of one layer's cached keys and values."""
    return f"keys.{layer}", f"values.{layer}"


def rotary(x: torch.Tensor, positions: torch.Tensor, base: float = 10000.0) -> torch.Tensor:
    """Rotate feature pairs (i, i + Dh/2) of x (B, H, N, Dh) by angle position * base^(-2i/Dh) (RoPE).

    positions: (B, N) integers. The dot product of a query rotated at position m and a key rotated at n
    depends only on m - n. The angles are computed in float64: exact for any position a run reaches."""
    half = x.shape[-1] // 2
    freq = base ** (-torch.arange(half, device=x.device, dtype=torch.float64) / half)
    angle = positions.to(torch.float64)[:, None, :, None] * freq  # (B, 1, N, Dh/2)
    cos, sin = angle.cos().to(x.dtype), angle.sin().to(x.dtype)
    x1, x2 = x[..., :half], x[..., half:]
    return torch.cat([x1 * cos - x2 * sin, x1 * sin + x2 * cos], -1)


class Block(nn.Module):
    """Pre-norm Transformer block: x + Attention(RMSNorm(x)), then x + MLP(RMSNorm(x)) with SiLU."""

    def __init__(self, d_model: int, heads: int, ffn: int):
        super().__init__()
        self.heads = heads
        self.attn_norm = RMSNorm(d_model)
        self.qkv = Linear(d_model, 3 * d_model, bias=False)
        self.proj = Linear(d_model, d_model)
        self.mlp_norm = RMSNorm(d_model)
        self.mlp_in = Linear(d_model, ffn)
        self.mlp_out = Linear(ffn, d_model)

    def forward(
        self, x: torch.Tensor, positions: torch.Tensor, past_keys: torch.Tensor, past_values: torch.Tensor, mask: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """x (B, T, D): the inputs at positions (B, T), after P cached ones.

        past_keys, past_values: (B, H, P, Dh), the keys rotated at their positions. mask: (B, T, P + T)
        bool, True where the query of new step t may attend to key p of (cached, new). Returns the block's
        output (B, T, D) and the keys (rotated) and values of all P + T positions (B, H, P + T, Dh).
        """
        B, T, D = x.shape
        q, k, v = self.qkv(self.attn_norm(x)).reshape(B, T, 3, self.heads, D // self.heads).permute(2, 0, 3, 1, 4)
        q, k = rotary(q, positions), rotary(k, positions)
        keys, values = torch.cat([past_keys, k], 2), torch.cat([past_values, v], 2)
        # softmax(q k^T / sqrt(Dh) where mask, else -inf) v, per head; every query sees at least itself.
        scores = (q @ keys.transpose(-1, -2)) * q.shape[-1] ** -0.5
        att = torch.softmax(scores.masked_fill(~mask[:, None], float("-inf")), -1) @ values
        x = x + self.proj(att.transpose(1, 2).reshape(B, T, D))
        x = x + self.mlp_out(F.silu(self.mlp_in(self.mlp_norm(x))))
        return x, keys, values


class TransformerSSM(Dynamics):
    """Causal Transformer dynamics behind the dynamics interface (see the module docstring).

    Args:
        embed_dim: size of the encoder output. action_dim: size of the action vector.
        d_model: width of the tokens and of h (the state's "deter"). layers, heads: Transformer blocks and
            attention heads per block. context: inputs each position attends to (itself included), and
            the length K of the key/value cache. ffn: hidden width of each block's MLP (4 * d_model if None).
        stoch, classes: categorical latents. hidden: width of the posterior's and the prior's hidden layers.
        unimix: uniform mixture of the prior and posterior categoricals.
    """

    def __init__(
        self,
        embed_dim: int,
        action_dim: int,
        d_model: int = 512,
        layers: int = 2,
        heads: int = 8,
        context: int = 8,
        stoch: int = 32,
        classes: int = 4,
        hidden: int = 256,
        ffn: int | None = None,
        unimix: float = 0.01,
    ):
        self.check_options({"d_model": d_model, "layers": layers, "heads": heads, "context": context}, {})
        super().__init__(d_model, stoch, classes, unimix)  # deter: h is d_model wide
        self.d_model, self.layers, self.heads, self.context = d_model, layers, heads, context
        # Posterior q(z_t | e_t): one hidden layer on the embedding alone.
        self.post_in = NormAct(embed_dim, hidden)
        self.post_out = Linear(hidden, stoch * classes)
        # Token u_t = tok(z_t, a_t), and the input at an episode's first step.
        self.token_in = NormAct(stoch * classes + action_dim, d_model)
        self.token_out = Linear(d_model, d_model)
        self.start_token = nn.Parameter(torch.empty(d_model))
        nn.init.trunc_normal_(self.start_token, std=1.0)
        self.blocks = nn.ModuleList(Block(d_model, heads, ffn or 4 * d_model) for _ in range(layers))
        self.out_norm = RMSNorm(d_model)
        # Prior p(z_t | h_t): two hidden layers, as the RSSM's.
        self.prior_net = MLP(d_model, hidden, 2)
        self.prior_out = Linear(hidden, stoch * classes)

    @classmethod
    def check_options(cls, spec: Spec, model: Spec) -> None:
        """Positive sizes; heads split d_model into even widths (rotary positions turn pairs of features)."""
        for key in ("d_model", "layers", "heads", "context"):
            integer(f"dynamics.{key}", spec.get(key))
        d_model, heads = spec["d_model"], spec["heads"]
        if d_model % heads:
            raise invalid("dynamics.heads", heads, f"must divide dynamics.d_model={d_model}")
        if (d_model // heads) % 2:
            raise invalid("dynamics.heads", heads, f"d_model / heads = {d_model // heads} must be even (rotary positions)")

    @classmethod
    def from_config(cls, spec: Spec, embed_dim: int, action_dim: int, model: Spec, unimix: float) -> TransformerSSM:
        """d_model, layers, heads, context from `dynamics=`; stoch, classes, hidden from the size preset."""
        return cls(
            embed_dim, action_dim, d_model=spec["d_model"], layers=spec["layers"], heads=spec["heads"], context=spec["context"],
            stoch=model["stoch"], classes=model["classes"], hidden=model["hidden"], unimix=unimix,
        )

    # -- pieces --------------------------------------------------------------------------------
    def initial(self, batch: int, device: torch.device | str = "cpu") -> State:
        """Zeros and an empty cache (no valid slot)."""
        cache = (batch, self.heads, self.context, self.d_model // self.heads)
        return {
            **super().initial(batch, device),
            **{name: torch.zeros(cache, device=device) for name in self.cache_entries()},
            "valid": torch.zeros(batch, self.context, dtype=torch.bool, device=device),
            "position": torch.zeros(batch, dtype=torch.long, device=device),
        }

    def cache_entries(self) -> list[str]:
        """The state's names of every layer's cached keys and values."""
        return [name for layer in range(self.layers) for name in cache_names(layer)]

    def token(self, stoch: torch.Tensor, action: torch.Tensor) -> torch.Tensor:
        """u = tok(z, a): (..., S, C) one-hot and (..., A) action -> (..., D); actions scaled into [-1, 1]."""
        return self.token_out(self.token_in(torch.cat([stoch.flatten(-2), self.scale_action(action)], -1)))

    def prior_logits(self, deter: torch.Tensor) -> torch.Tensor:
        return self.latent_logits(self.prior_out(self.prior_net(deter)))

    def post_logits(self, embed: torch.Tensor) -> torch.Tensor:
        return self.latent_logits(self.post_out(self.post_in(embed)))

    def _mask(self, episode: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        """(B, T, K + T) attention mask for T new positions after the K cached slots.

        episode: (B, T) episode id of each new step, counted from the cache's episode (0) up at each
        is_first. A query attends to a key at most context - 1 positions back, of its own episode, and
        (for a cache slot) valid."""
        K, (B, T) = self.context, episode.shape
        position = torch.arange(K + T, device=episode.device)  # cache slots 0 .. K-1, new steps K .. K+T-1
        query, key = position[K:, None], position[None, :]
        near = (key <= query) & (query - key < K)  # (T, K + T)
        key_episode = torch.cat([episode.new_zeros(B, K), episode], 1)
        key_valid = torch.cat([valid, valid.new_ones(B, T)], 1)
        return near & (episode[:, :, None] == key_episode[:, None, :]) & key_valid[:, None, :]

    def _transformer(self, inputs: torch.Tensor, positions: torch.Tensor, mask: torch.Tensor, state: State) -> tuple[torch.Tensor, State]:
        """inputs (B, T, D) at positions (B, T) after the state's cache -> h (B, T, D) and, by cache name, each
        layer's keys and values of the cached and the new positions (B, H, K + T, Dh)."""
        x, slots = inputs, {}
        for layer, block in enumerate(self.blocks):
            keys, values = cache_names(layer)
            x, slots[keys], slots[values] = block(x, positions, state[keys], state[values], mask)
        return self.out_norm(x), slots

    def _next_cache(self, state: State, slots: State, episode: torch.Tensor) -> State:
        """The cache after T new positions: the last K of each layer's (cached, new) slots that `_transformer`
        returns; valid where of the last episode."""
        K, (T, last) = self.context, (episode.shape[1], episode[:, -1:])
        valid = torch.cat([state["valid"] & (last == 0), episode == last], 1)
        return {**{name: x[:, :, -K:] for name, x in slots.items()}, "valid": valid[:, -K:], "position": state["position"] + T}

    def _with_cache(self, state: State) -> State:
        """A state without a cache (deter and stoch only) gets an empty one."""
        if "valid" in state:
            return state
        return {**self.initial(state["stoch"].shape[0], state["stoch"].device), **state}

    # -- interface -----------------------------------------------------------------------------
    def observe(
        self, embed: torch.Tensor, prev_action: torch.Tensor, is_first: torch.Tensor, state: State
    ) -> tuple[State, torch.Tensor, State]:
        """Filter a window in one parallel pass.

        Args:
            embed: (B, T, E) encoder outputs. prev_action: (B, T, A) action taken before each step.
            is_first: (B, T) episode starts: the input there is the start token and nothing before is attended.
            state: the state before the window (see the module docstring).
        Returns:
            post: deter (B, T, D), stoch (B, T, S, C), logits (B, T, S, C), and for `starts`: keys and
            values (B, T, L, H, Dh) of every position and episode (B, T); prior_logits (B, T, S, C);
            last: the state after the window, for carrying into the next call.
        """
        B, T = embed.shape[:2]
        assert prev_action.shape[:2] == (B, T) and is_first.shape == (B, T), (embed.shape, prev_action.shape, is_first.shape)
        state = self._with_cache(state)
        first = is_first.bool()
        logits = self.post_logits(embed)
        stoch, _ = sample_onehot_index(logits)
        prev_stoch = torch.cat([state["stoch"][:, None], stoch[:, :-1]], 1)
        inputs = torch.where(first[..., None], self.start_token, self.token(prev_stoch, prev_action))
        episode = first.long().cumsum(1)
        positions = state["position"][:, None] + torch.arange(T, device=embed.device)
        deter, slots = self._transformer(inputs, positions, self._mask(episode, state["valid"]), state)
        post = {
            "deter": deter, "stoch": stoch, "logits": logits, "episode": episode, "position": positions,
            **{name: x[:, :, -T:] for name, x in slots.items()},
        }
        last = {"deter": deter[:, -1], "stoch": stoch[:, -1], **self._next_cache(state, slots, episode)}
        return post, self.prior_logits(deter), last

    def imagine_step(self, state: State, action: torch.Tensor) -> State:
        """Step the prior forward: (B, ...) state and (B, A) action -> next state sampled from the prior.

        One new position, tok(stoch, action), attends to the cache; the next state holds the sampled
        `classes` (B, S) too, as the RSSM's."""
        state = self._with_cache(state)
        episode = action.new_zeros(action.shape[0], 1, dtype=torch.long)
        inputs = self.token(state["stoch"], action)[:, None]
        positions = state["position"][:, None]
        deter, slots = self._transformer(inputs, positions, self._mask(episode, state["valid"]), state)
        deter = deter[:, 0]
        stoch, classes = sample_onehot_index(self.prior_logits(deter))
        return {"deter": deter, "stoch": stoch, "classes": classes, **self._next_cache(state, slots, episode)}

    def starts(self, post: State, state: State) -> State:
        """Imagination start states (B * T, ...) from `observe`'s posterior and the state it started from.

        Start b * T + t is the state `observe` would return as `last` for the window cut after step t:
        deter and stoch of step t, the cache of the K positions up to t, and the position after t. Detached:
        imagination runs without gradients through the dynamics (Agent.imagine)."""
        state = self._with_cache(state)
        K, (B, T) = self.context, post["episode"].shape
        episode = post["episode"]

        def windows(x: torch.Tensor) -> torch.Tensor:  # (B, K + T) -> (B, T, K): slots t+1 .. t+K
            return x.unfold(1, K, 1)[:, 1:]

        cache = {}
        for name in self.cache_entries():
            slots = torch.cat([state[name], post[name]], 2).detach()  # (B, H, K + T, Dh)
            window = slots.unfold(2, K, 1)[:, :, 1:]  # (B, H, T, Dh, K): slots t+1 .. t+K
            cache[name] = window.permute(0, 2, 1, 4, 3).reshape(B * T, self.heads, K, -1)
        slot_episode = windows(torch.cat([episode.new_zeros(B, K), episode], 1))  # (B, T, K)
        slot_valid = windows(torch.cat([state["valid"], state["valid"].new_ones(B, T)], 1))
        cache["valid"] = (slot_valid & (slot_episode == episode[..., None])).reshape(B * T, K)
        cache["position"] = (post["position"] + 1).reshape(B * T)
        latent = {name: post[name].detach().reshape(B * T, *post[name].shape[2:]) for name in ("deter", "stoch")}
        return {**latent, **cache}
