"""Recurrent state-space model (RSSM) with a block-diagonal GRU, as in the current DreamerV3.

State: `deter` (B, D) deterministic GRU state and `stoch` (B, S, C) one-hot categorical latents.
Features read by every head: concat(deter, flatten(stoch)).
"""

from __future__ import annotations

import torch
from torch import nn

from worldmodels import matmul
from worldmodels.deferred_grad import deferred_slots
from worldmodels.distributions import sample_onehot, sample_onehot_index, unimix_logits
from worldmodels.matmul import linear
from worldmodels.nets import MLP, BlockLinear, Linear, NormAct, RMSNorm
from worldmodels.onehot_feat import OneHotFeat
from worldmodels.packed_linear import available as packing_available
from worldmodels.packed_linear import new_handle, packed_linear

State = dict[str, torch.Tensor]
Slots = dict[str, torch.Tensor] | None  # per-layer zero slots of one step (see deferred_grad.py)
Taps = dict[str, torch.Tensor]  # per-layer inputs of one step, for the deferred weight gradients

# The layers of the observe loop whose weight gradients are deferred (see observe).
DEFERRED = ("in_deter", "in_stoch", "gru_hidden_shared", "gru_hidden", "gru_gates", "post_deter", "post_out")


class RSSM(nn.Module):
    """Dynamics model with the interface the agent relies on: initial, observe, imagine_step, feat.

    Args:
        embed_dim: size of the encoder output.
        action_dim: size of the (one-hot or continuous) action vector.
        deter, hidden, stoch, classes, blocks: widths from the size preset.
        unimix: uniform mixture of the prior and posterior categoricals.
        defer_grads: compute the observe loop's weight gradients once per sequence (deferred_grad.py);
            the same gradients, faster on the CPU.
    """

    def __init__(
        self,
        embed_dim: int,
        action_dim: int,
        deter: int = 512,
        hidden: int = 64,
        stoch: int = 32,
        classes: int = 4,
        blocks: int = 8,
        unimix: float = 0.01,
        defer_grads: bool = True,
    ):
        super().__init__()
        if deter % blocks:
            raise ValueError(f"model.deter={deter} must be divisible by model.blocks={blocks}")
        self.deter, self.stoch, self.classes, self.blocks, self.unimix = deter, stoch, classes, blocks, unimix
        self.defer_grads = defer_grads
        self._handles = {name: new_handle(self) for name in DEFERRED} if packing_available() else None
        self.feat_dim = deter + stoch * classes
        # Inputs to the GRU: deter, stoch and action each through Linear -> Norm -> SiLU.
        self.in_deter = NormAct(deter, hidden)
        self.in_stoch = NormAct(stoch * classes, hidden)
        self.in_action = NormAct(action_dim, hidden)
        # The official block layer maps concat(deter block, shared inputs) per block. Its shared half applies
        # each block's own weights to the same input, which is exactly one dense layer: splitting it this way
        # computes the same function without copying the shared inputs into every block. Both halves keep
        # the official fan-in, the whole block layer's input width: deter + blocks * 3 * hidden.
        block_in = deter + blocks * 3 * hidden
        self.gru_hidden = BlockLinear(deter, deter, blocks, fan_in=block_in)
        self.gru_hidden_shared = Linear(3 * hidden, deter, bias=False, fan_in=block_in)  # the bias is gru_hidden's
        self.gru_hidden_norm = RMSNorm(deter)
        self.gru_gates = BlockLinear(deter, 3 * deter, blocks)
        # Posterior q(z | h, e): one hidden layer on concat(deter, embed); the embed half is applied to
        # whole sequences at once, and the layer's one bias sits in the deter half. Both halves keep the
        # fan-in of the whole layer, deter + embed.
        self.post_deter = Linear(deter, hidden, fan_in=deter + embed_dim)
        self.post_embed = Linear(embed_dim, hidden, bias=False, fan_in=deter + embed_dim)
        self.post_norm = RMSNorm(hidden)
        self.post_out = Linear(hidden, stoch * classes)
        # Prior p(z | h): two hidden layers.
        self.prior_net = MLP(deter, hidden, 2)
        self.prior_out = Linear(hidden, stoch * classes)

    # -- pieces --------------------------------------------------------------------------------
    def initial(self, batch: int, device: torch.device | str = "cpu") -> State:
        return {
            "deter": torch.zeros(batch, self.deter, device=device),
            "stoch": torch.zeros(batch, self.stoch, self.classes, device=device),
        }

    def feat(self, state: State) -> torch.Tensor:
        stoch = state["stoch"]
        return torch.cat([state["deter"], stoch.reshape(*stoch.shape[:-2], -1)], -1)

    def action_input(self, action: torch.Tensor) -> torch.Tensor:
        """Scale actions into [-1, 1] (the official `action / max(1, |action|)`) and embed them."""
        action = action / torch.clamp(action.detach().abs(), min=1.0)
        return self.in_action(action)

    def _gru(
        self, deter: torch.Tensor, stoch: torch.Tensor, action_in: torch.Tensor, slots: Slots = None, classes: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, Taps]:
        """One block-GRU step; every block sees the shared inputs and only its own slice of deter.

        With `slots` (see `observe`), the weights are used detached and each layer's input is returned in
        `taps`, for the weight gradients that `DeferredWeightGrad` computes once for the whole sequence.
        With the sampled `classes` of stoch (imagination), its input layer gathers weight columns instead.
        """
        n, g = deter.shape[0], self.blocks
        gather = classes is not None and slots is None  # the deferred path takes plain tensors
        stoch_in = OneHotFeat.from_state(deter[:, :0], stoch, classes) if gather else stoch.reshape(n, -1)
        stoch = stoch.reshape(n, -1)
        taps = {} if slots is None else {"in_deter": deter, "in_stoch": stoch, "gru_hidden": deter.reshape(n, g, -1)}
        shared = torch.cat([self._norm_act("in_deter", deter, slots), self._norm_act("in_stoch", stoch_in, slots), action_in], -1)
        # Block outputs stay (n, g, ·) in block-major memory; each sum or blend below starts from a
        # contiguous operand, whose layout the result takes, so no (n, 3 * deter) copy is made.
        x = self._dense("gru_hidden_shared", shared, slots).reshape(n, g, -1) + self._block("gru_hidden", deter, slots)
        x = torch.nn.functional.silu(self.gru_hidden_norm(x.reshape(n, -1)))
        if slots is not None:
            taps.update(gru_hidden_shared=shared, gru_gates=x.reshape(n, g, -1))
        reset, cand, update = self._block("gru_gates", x, slots).unflatten(-1, (3, -1)).unbind(2)
        # tanh(x) as 2 sigmoid(2x) - 1: the same function, and inductor's CPU kernel for the gates ran
        # 4.7 instead of 6.1 ms per imagination step at size12m (1024 states).
        cand = 2.0 * torch.sigmoid(2.0 * torch.sigmoid(reset) * cand) - 1.0
        update = torch.sigmoid(update - 1.0)
        # Under bf16 autocast (run.precision=bf16) the gates come out of bf16 matmuls; the recurrent state
        # stays float32 (lerp takes one dtype). In float32 the casts return the tensors themselves.
        cand, update = cand.to(deter.dtype), update.to(deter.dtype)
        return torch.lerp(deter.reshape(n, g, -1), cand, update).reshape(n, -1), taps

    def _dense(self, name: str, x: torch.Tensor, slots: Slots) -> torch.Tensor:
        """Layer `name` on x, or with its weight detached plus its slot when gradients are deferred."""
        layer = getattr(self, name)
        if slots is None or name not in slots:
            return layer(x)
        return self._loop_linear(name, layer, x) + slots[name]

    def _norm_act(self, name: str, x: torch.Tensor, slots: Slots) -> torch.Tensor:
        unit = getattr(self, name)
        if slots is None or name not in slots:
            return unit(x)
        lin, norm, act = unit
        return act(norm(self._loop_linear(name, lin, x) + slots[name]))

    def _block(self, name: str, x: torch.Tensor, slots: Slots) -> torch.Tensor:
        layer = getattr(self, name)
        if slots is None or name not in slots:
            return layer.grouped(x)
        return layer.grouped(x, detach_weight=True) + slots[name]

    def _loop_linear(self, name: str, layer: Linear, x: torch.Tensor) -> torch.Tensor:
        """The layer with its weight detached, through a packed copy of the weight where that pays
        (float32 on the CPU, products above matmul.MIN_MACS, oneDNN on; see packed_linear.py)."""
        weight = layer.weight.detach()
        if (
            self._handles is not None
            and matmul.onednn_enabled()
            and x.device.type == "cpu"
            and not torch.is_autocast_enabled("cpu")  # the custom op is not autocast-aware: bf16 goes to F.linear
            and x.dtype == weight.dtype == torch.float32
            and x.dim() == 2
            and x.shape[0] * weight.numel() >= matmul.MIN_MACS
        ):
            return packed_linear(x, weight, layer.bias, self._handles[name])
        return linear(x, weight, layer.bias)

    def _weight(self, name: str) -> torch.Tensor:
        layer = getattr(self, name)
        return layer[0].weight if isinstance(layer, NormAct) else layer.weight

    def _stoch_logits(self, hidden: torch.Tensor, out: nn.Module) -> torch.Tensor:
        logits = out(hidden).reshape(*hidden.shape[:-1], self.stoch, self.classes)
        return unimix_logits(logits.float(), self.unimix)  # float32 from here on, also under bf16 autocast

    def prior_logits(self, deter: torch.Tensor) -> torch.Tensor:
        return self._stoch_logits(self.prior_net(deter), self.prior_out)

    def post_logits(self, deter: torch.Tensor, embed_in: torch.Tensor, slots: Slots = None) -> tuple[torch.Tensor, Taps]:
        hidden = torch.nn.functional.silu(self.post_norm(self._dense("post_deter", deter, slots) + embed_in))
        logits = self._dense("post_out", hidden, slots).reshape(*hidden.shape[:-1], self.stoch, self.classes)
        taps = {} if slots is None else {"post_deter": deter, "post_out": hidden}
        return unimix_logits(logits.float(), self.unimix), taps

    # -- interface -----------------------------------------------------------------------------
    def observe(
        self, embed: torch.Tensor, prev_action: torch.Tensor, is_first: torch.Tensor, state: State
    ) -> tuple[State, torch.Tensor, State]:
        """Filter a sequence.

        Args:
            embed: (B, T, E) encoder outputs. prev_action: (B, T, A) action taken before each step.
            is_first: (B, T) resets the state (and previous action) to zeros where set.
            state: initial state, tensors (B, ...).
        Returns:
            post: dict of deter (B, T, D), stoch (B, T, S, C) and logits (B, T, S, C);
            prior_logits: (B, T, S, C); last: the final state, for carrying into the next call.
        """
        B, T = embed.shape[:2]
        assert prev_action.shape[:2] == (B, T) and is_first.shape == (B, T), (embed.shape, prev_action.shape, is_first.shape)
        keep = (1.0 - is_first.float())
        # Everything that does not depend on the recurrence is computed for the whole sequence at once.
        action_in = self.action_input(prev_action * keep[..., None])
        embed_in = self.post_embed(embed)
        deter, stoch = state["deter"], state["stoch"]
        deters, stochs, logits = [], [], []
        inputs, slots = self._deferred_slots(T, B)
        for t in range(T):
            step_slots = None if slots is None else {name: s[t] for name, s in slots.items()}
            deter, post, stoch, taps = self._observe_step(deter, stoch, keep[:, t, None], action_in[:, t], embed_in[:, t], step_slots)
            for name, x in taps.items():
                if name in inputs:  # a frozen layer has none
                    inputs[name].append(x.detach())
            deters.append(deter)
            stochs.append(stoch)
            logits.append(post)
        post_state = {"deter": torch.stack(deters, 1), "stoch": torch.stack(stochs, 1), "logits": torch.stack(logits, 1)}
        prior = self.prior_logits(post_state["deter"])
        return post_state, prior, {"deter": deter, "stoch": stoch}

    def _deferred_slots(self, T: int, B: int) -> tuple[dict[str, list], dict[str, tuple[torch.Tensor, ...]] | None]:
        """Per-layer input lists and zero slots for a T-step loop, or no slots where no weight gradient
        is wanted (acting, reports) or deferral is off (see deferred_grad.py)."""
        names = [n for n in DEFERRED if self._weight(n).requires_grad]
        if not (self.defer_grads and torch.is_grad_enabled() and names):
            return {}, None
        inputs = {name: [] for name in names}
        slots = {name: deferred_slots(self._weight(name), T, B, inputs[name]) for name in names}
        return inputs, slots

    def _observe_step(
        self, deter: torch.Tensor, stoch: torch.Tensor, keep: torch.Tensor, action_in: torch.Tensor, embed_in: torch.Tensor,
        slots: Slots = None,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, Taps]:
        """One filtering step (reset where keep is 0, GRU, posterior, sample): the unit torch.compile sees."""
        deter, taps = self._gru(deter * keep, stoch * keep[..., None], action_in, slots)
        post, post_taps = self.post_logits(deter, embed_in, slots)
        return deter, post, sample_onehot(post), {**taps, **post_taps}

    def imagine_step(self, state: State, action: torch.Tensor) -> State:
        """Step the prior forward: (B, ...) state and (B, A) action -> next state sampled from the prior.

        The next state also holds the sampled `classes` (B, S); given them in `state`, the stoch input
        layer gathers its weights' columns instead of multiplying by the one-hot (onehot_feat.py).
        """
        deter, _ = self._gru(state["deter"], state["stoch"], self.action_input(action), classes=state.get("classes"))
        stoch, classes = sample_onehot_index(self.prior_logits(deter))
        return {"deter": deter, "stoch": stoch, "classes": classes}

    def starts(self, post: State, state: State) -> State:
        """Imagination start states (B * T, ...): every posterior state of the window, detached (the
        GRU carries nothing else; `state` is unused)."""
        return {k: post[k].detach().reshape(-1, *post[k].shape[2:]) for k in ("deter", "stoch")}

    def compile_steps(self) -> None:
        """torch.compile the observe loop's step (see Agent.compile_steps)."""
        self._observe_step = torch.compile(self._observe_step, dynamic=False)

    def obs_step(self, state: State, prev_action: torch.Tensor, embed: torch.Tensor, is_first: torch.Tensor) -> State:
        """One filtering step for acting in the environment: (B, ...) tensors, no time axis."""
        _, _, last = self.observe(embed[:, None], prev_action[:, None], is_first[:, None], state)
        return last
