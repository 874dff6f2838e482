"""Direct Feedback Alignment (Nøkland 2016) at transformer-block granularity.

In DFA each hidden layer is trained with the gradient it would get if the gradient at its
output were ``B_l e``: the output error ``e`` sent through a fixed random matrix, instead of
the error propagated back through the layers above. Here a "layer" is a slot of the residual
stream: slot 0 the token embedding's output, slot l + 1 the output of decoder block l.

The error ``e`` is dL/dx_L, the gradient at the top of the residual stream (the input of
the final norm), [B, S, D], so every feedback matrix is [D, D]. The alternative, the logits
error [B, S, V], would need [D, V] matrices: V / D times more memory per block (32x for
``smoke``, 8x for ``large``, 4.3G entries for its 33 slots), and e already carries the head's
true linear map of it. The final norm and ``lm_head`` sit above ``e`` and are trained by the
true gradient of the loss.

Mechanics, all by module hooks from outside the model (the model code is unchanged):

* each slot's output is recorded and handed on *detached*, so no gradient ever flows from
  block l + 1 into block l, and backward does no work through the chain of block inputs;
* the final norm's input is replaced by ``_Feedback(state, y_0, ..., y_L)``, which returns
  y_L's value; its backward receives e and returns ``e @ B_l.T`` to every slot output y_l at
  once. Capturing e and sending the feedback are one autograd node, so e always exists
  before any block's backward starts, whatever order the engine schedules the rest in.

Inside a block its own backward is ordinary backprop: attention, norms, the MoE router and
the experts (DeepSpeed AutoEP's replacement too) get the gradient of the block's output
``B_l e`` through the block's local graph, plus the balancing loss's direct gradient into
the router. The feedback matrices are not parameters or buffers of the model: they are
drawn from ``seed`` on every rank (the same on all, and again on resume), so checkpoints and
conversion are the same with DFA on or off.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence

import torch
from torch import nn


def feedback_matrices(n_slots: int, d_model: int, seed: int, scale: float) -> list[torch.Tensor]:
    """n_slots fixed [D, D] matrices with entries N(0, scale² / D), so that ``e @ B.T`` has
    scale * |e| as its expected norm (the true gradient of a near-identity residual block
    is about e itself). Drawn on the CPU from one generator: the same on every rank/device."""
    gen = torch.Generator().manual_seed(seed)
    return [torch.randn(d_model, d_model, generator=gen) * (scale / math.sqrt(d_model)) for _ in range(n_slots)]


class _Feedback(torch.autograd.Function):
    """(state, y_0 .. y_L) -> a copy of y_L; backward: e = incoming gradient, y_l gets e @ B_lᵀ."""

    @staticmethod
    def forward(ctx, state: DirectFeedback, *outputs: torch.Tensor) -> torch.Tensor:
        ctx.state = state
        return outputs[-1].clone()

    @staticmethod
    def backward(ctx, error: torch.Tensor):
        state: DirectFeedback = ctx.state
        if state.events is not None:
            state.events.append("error")
        return (None, *(error @ b.t() for b in state.matrices_for(error)))


class DirectFeedback:
    """Installs DFA on a stack: ``embedding`` (or None), ``blocks`` (each x [B, S, D] ->
    [B, S, D] as its first input/output) and ``top``, the module that reads the last block's
    output (the final norm). ``enabled`` switches between DFA and plain backprop per forward.

    Hooks act only while gradients are recorded, so evaluation and generation are untouched.
    """

    def __init__(self, embedding: nn.Module | None, blocks: Sequence[nn.Module], top: nn.Module,
                 d_model: int, seed: int, scale: float):
        self.matrices = feedback_matrices(len(blocks) + (embedding is not None), d_model, seed, scale)
        self.enabled = True
        self.events: list[str] | None = None  # a list: "error" is appended when e arrives (tests)
        self._recorded: list[torch.Tensor] = []
        self._cast: dict[tuple, list[torch.Tensor]] = {}
        self._handles = []
        first = embedding if embedding is not None else blocks[0]
        self._handles.append(first.register_forward_pre_hook(self._start))
        for module in ([embedding] if embedding is not None else []) + list(blocks):
            self._handles.append(module.register_forward_hook(self._record))
        # prepend: DeepSpeed's own pre-hook on `top` then sees the input that needs a gradient
        self._handles.append(top.register_forward_pre_hook(self._feed, prepend=True))
        self.n_slots = len(self.matrices)

    @classmethod
    def for_causal_lm(cls, model: nn.Module, seed: int, scale: float) -> DirectFeedback:
        """KodaForCausalLM (or the engine's module after AutoEP): slots are the embedding and
        every ``model.layers`` block; e is taken at ``model.norm``'s input."""
        body = model.model
        return cls(body.embed_tokens, list(body.layers), body.norm, model.cfg.d_model, seed, scale)

    def matrices_for(self, like: torch.Tensor) -> list[torch.Tensor]:
        key = (like.device, like.dtype)
        if key not in self._cast:
            self._cast[key] = [b.to(device=like.device, dtype=like.dtype) for b in self.matrices]
        return self._cast[key]

    def _active(self) -> bool:
        return self.enabled and torch.is_grad_enabled()

    def _start(self, _module, _inputs):
        self._recorded = []

    def _record(self, _module, _inputs, output):
        if not self._active():
            return None
        if isinstance(output, tuple):
            raise TypeError("DirectFeedback: a block must return one tensor [B, S, D]")
        self._recorded.append(output)
        return output.detach()

    def _feed(self, _module, inputs):
        if not self._active():
            return None
        recorded, self._recorded = self._recorded, []
        if len(recorded) != self.n_slots:
            raise RuntimeError(f"DirectFeedback: {len(recorded)} slot outputs recorded in this forward, "
                               f"expected {self.n_slots}")
        return (_Feedback.apply(self, *recorded), *inputs[1:])

    def remove(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles = []


# ---------------------------------------------------------------------- diagnostics
def slot_of(name: str) -> str | None:
    """The slot label of a parameter name: "emb", a block index as text, or None (the final
    norm and the head, trained by the true gradient, and anything else)."""
    parts = name.split(".")
    if "embed_tokens" in parts:
        return "emb"
    if "layers" in parts:
        i = parts.index("layers")
        if i + 1 < len(parts) and parts[i + 1].isdigit():
            return parts[i + 1]
    return None


def alignment(dfa: dict[str, torch.Tensor], backprop: dict[str, torch.Tensor],
              names: Iterable[str]) -> dict[str, float]:
    """Per slot, cos(g_dfa, g_bp) of the slot's parameters' full gradients concatenated;
    dfa/backprop map parameter names to gradients of any shape. Returns
    ``dfa/layer<N>/alignment`` (``dfa/embedding/alignment`` for slot 0) and the mean over
    slots as ``dfa/alignment``."""
    sums: dict[str, torch.Tensor] = {}
    for name in names:
        slot = slot_of(name)
        if slot is None:
            continue
        a, b = dfa[name].double().reshape(-1), backprop[name].double().reshape(-1)
        sums[slot] = sums.get(slot, torch.zeros(3, dtype=torch.float64)) + torch.stack([a @ b, a @ a, b @ b])
    out = {}
    for slot, (dot, aa, bb) in sums.items():
        label = "embedding" if slot == "emb" else f"layer{slot}"
        out[f"dfa/{label}/alignment"] = float(dot / (aa.sqrt() * bb.sqrt()).clamp_min(1e-30))
    if out:
        out["dfa/alignment"] = sum(out.values()) / len(out)
    return out


def measure_alignment(engine, feedback: DirectFeedback, loss_of_batch) -> dict[str, float]:
    """Per-slot cosine between the DFA and the backprop gradient of the same batch's loss.

    `loss_of_batch()` runs one forward on the engine and returns the loss. Both passes go
    through ``engine.backward``, so the gradients are the data-parallel means DeepSpeed reduces
    (a cosine over this rank's batch alone would measure another quantity), read whole with
    ``engine.gradients().get`` (a collective: every rank calls it in the same order), then
    dropped with ``discard_gradients`` so the training step that follows starts clean. Call it
    between optimizer steps, on every rank.
    """
    grads = engine.gradients()
    names = [n for n in grads.names() if slot_of(n) is not None]
    captured = {}
    try:
        for mode in (False, True):
            feedback.enabled = mode
            engine.backward(loss_of_batch())
            captured[mode] = {n: grads.get(n) for n in names}
            engine.discard_gradients()
    finally:
        feedback.enabled = True
    return alignment(captured[True], captured[False], names)
