"""The RSSM of rssm.py with the CPU speed-ups that keep its math: what the CPU strategy turns the RSSM into
(worldmodels/strategies/cpu.py).

Same parameters, same functions (up to float rounding: tanh is computed as 2 sigmoid(2x) - 1, and sums run
in another order), so a checkpoint moves freely between `RSSM` and `CpuRSSM`. What differs:

- deferred weight gradients (deferred_grad.py): the observe loop uses its layers' weights detached and
  records each step's input, so each weight gradient is one product over the whole sequence instead of
  T thin ones; `defer_grads` (run.defer_grads) turns it off;
- packed weights (packed_linear.py): those detached float32 weights go through a oneDNN copy packed once
  per update, where the product is big enough to pay (matmul.MIN_MACS);
- one-hot gathers (onehot_feat.py): in imagination the stoch input layer gathers the weight columns of
  the sampled classes instead of multiplying by a one-hot vector.
`tests/cpu/test_rssm_cpu.py` checks that samples, losses and gradients equal the plain RSSM's.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from worldmodels.cpu import matmul
from worldmodels.cpu.deferred_grad import deferred_slots
from worldmodels.cpu.linear import use_cpu_linears
from worldmodels.cpu.matmul import linear
from worldmodels.cpu.onehot_feat import OneHotFeat
from worldmodels.cpu.packed_linear import available as packing_available
from worldmodels.cpu.packed_linear import new_handle, packed_linear
from worldmodels.dynamics.base import State
from worldmodels.dynamics.rssm import RSSM
from worldmodels.models.distributions import sample_onehot, sample_onehot_index
from worldmodels.models.nets import Linear, NormAct

Slots = dict[str, torch.Tensor] | None  # per-layer zero slots of one step (see deferred_grad.py)
Taps = dict[str, torch.Tensor]  # per-layer inputs of one step, for the deferred weight gradients

# The layers of the observe loop whose weight gradients are deferred (see observe).
DEFERRED = ("in_deter", "in_stoch", "gru_hidden_shared", "gru_hidden", "gru_gates", "post_deter", "post_out")


class CpuRSSM(RSSM):
    """`RSSM` for float32 on a CPU; `defer_grads`: see the module docstring."""

    def __init__(self, *args, defer_grads: bool = True, **kwargs):
        super().__init__(*args, **kwargs)
        self._setup(defer_grads)

    def _setup(self, defer_grads: bool) -> None:
        use_cpu_linears(self)  # its layers take the one-hot features the GRU's stoch input gathers from
        self.defer_grads = defer_grads
        self._loop: dict | None = None  # the observe loop being run: its deferred slots, recorded inputs and step
        self._handles = {name: new_handle(self) for name in DEFERRED} if packing_available() else None

    @classmethod
    def adopt(cls, rssm: RSSM, defer_grads: bool = True) -> CpuRSSM:
        """Turn a plain `RSSM` into a `CpuRSSM` in place: the same parameter tensors (an optimiser built on them
        keeps working), the CPU paths from now on."""
        if type(rssm) is not RSSM:
            raise TypeError(f"CpuRSSM.adopt takes a plain RSSM, not {type(rssm).__name__}")
        rssm.__class__ = cls
        rssm._setup(defer_grads)
        return rssm

    def _gru(
        self, deter: torch.Tensor, stoch: torch.Tensor, action_in: torch.Tensor, slots: Slots = None, classes: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, Taps]:
        """`RSSM.gru_step`, with each deferred layer through `_dense`/`_norm_act`/`_block` and its input in `taps`
        when `slots` are given, or with the gather for the stoch input when the sampled `classes` are."""
        n, g = deter.shape[0], self.blocks
        gather = classes is not None and slots is None  # the deferred path takes plain tensors
        stoch_in = OneHotFeat.from_state(deter[:, :0], stoch, classes) if gather else stoch.reshape(n, -1)
        stoch = stoch.reshape(n, -1)
        taps = {} if slots is None else {"in_deter": deter, "in_stoch": stoch, "gru_hidden": deter.reshape(n, g, -1)}
        shared = torch.cat([self._norm_act("in_deter", deter, slots), self._norm_act("in_stoch", stoch_in, slots), action_in], -1)
        # Block outputs stay (n, g, ·) in block-major memory; each sum or blend below starts from a
        # contiguous operand, whose layout the result takes, so no (n, 3 * deter) copy is made.
        x = self._dense("gru_hidden_shared", shared, slots).reshape(n, g, -1) + self._block("gru_hidden", deter, slots)
        x = F.silu(self.gru_hidden_norm(x.reshape(n, -1)))
        if slots is not None:
            taps.update(gru_hidden_shared=shared, gru_gates=x.reshape(n, g, -1))
        reset, cand, update = self._block("gru_gates", x, slots).unflatten(-1, (3, -1)).unbind(2)
        # tanh(x) as 2 sigmoid(2x) - 1: the same function, and inductor's CPU kernel for the gates ran
        # 4.7 instead of 6.1 ms per imagination step at size12m (1024 states).
        cand = 2.0 * torch.sigmoid(2.0 * torch.sigmoid(reset) * cand) - 1.0
        update = torch.sigmoid(update - 1.0)
        cand, update = cand.to(deter.dtype), update.to(deter.dtype)
        return torch.lerp(deter.reshape(n, g, -1), cand, update).reshape(n, -1), taps

    def gru_step(self, deter: torch.Tensor, stoch: torch.Tensor, action_in: torch.Tensor) -> torch.Tensor:
        return self._gru(deter, stoch, action_in)[0]

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

    def _post_logits(self, deter: torch.Tensor, embed_in: torch.Tensor, slots: Slots) -> tuple[torch.Tensor, Taps]:
        hidden = F.silu(self.post_norm(self._dense("post_deter", deter, slots) + embed_in))
        taps = {} if slots is None else {"post_deter": deter, "post_out": hidden}
        return self.latent_logits(self._dense("post_out", hidden, slots)), taps

    def observe(
        self, embed: torch.Tensor, prev_action: torch.Tensor, is_first: torch.Tensor, state: State
    ) -> tuple[State, torch.Tensor, State]:
        """`RSSM.observe` (its loop, run as it is), with the weight gradients deferred where they are wanted: each
        step takes its slots and leaves its layer inputs in `self._loop` (see observe_step)."""
        B, T = embed.shape[:2]
        inputs, slots = self._deferred_slots(T, B)
        self._loop = {"inputs": inputs, "slots": slots, "t": 0}
        try:
            return super().observe(embed, prev_action, is_first, state)
        finally:
            self._loop = None

    def observe_step(
        self, deter: torch.Tensor, stoch: torch.Tensor, keep: torch.Tensor, action_in: torch.Tensor, embed_in: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """`RSSM.observe_step` through `_observe_step`, with step t's slots of the current loop, recording its taps."""
        loop = self._loop
        slots = None if loop is None or loop["slots"] is None else {name: s[loop["t"]] for name, s in loop["slots"].items()}
        deter, post, stoch, taps = self._observe_step(deter, stoch, keep, action_in, embed_in, slots)
        if loop is not None:
            for name, x in taps.items():
                if name in loop["inputs"]:  # a frozen layer has none
                    loop["inputs"][name].append(x.detach())
            loop["t"] += 1
        return deter, post, stoch

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
        """`RSSM.observe_step` with slots and taps: the unit torch.compile sees."""
        deter, taps = self._gru(deter * keep, stoch * keep[..., None], action_in, slots)
        post, post_taps = self._post_logits(deter, embed_in, slots)
        return deter, post, sample_onehot(post), {**taps, **post_taps}

    def imagine_step(self, state: State, action: torch.Tensor) -> State:
        """`RSSM.imagine_step`; given the sampled `classes` (B, S) in `state`, the stoch input gathers its columns."""
        deter, _ = self._gru(state["deter"], state["stoch"], self.action_input(action), classes=state.get("classes"))
        stoch, classes = sample_onehot_index(self.prior_logits(deter))
        return {"deter": deter, "stoch": stoch, "classes": classes}

    def compile_steps(self) -> None:
        """torch.compile the observe loop's step (run.compile=steps, worldmodels/strategies/compile.py)."""
        self._observe_step = torch.compile(self._observe_step, dynamic=False)

