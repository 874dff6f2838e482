"""Performer FAVOR+ attention: softmax attention estimated with positive random features.

softmax(q·k / sqrt(d)) is approximated by phi(q)·phi(k) with the positive feature map

    phi(x) = exp(W x - |x|^2 / 2) / sqrt(m),    x = q or k scaled by d^-1/4,  W: [m, d]

whose expectation over Gaussian rows of W is exactly exp(q·k / sqrt(d)); positivity keeps the
normaliser away from zero, which trigonometric features do not. Rows of W come in orthogonal
blocks (QR of a Gaussian matrix, rows rescaled to chi-distributed norms) because orthogonal
rows lower the estimator's variance at no cost.

Causal attention becomes a prefix sum: out_i = phi(q_i) S_i / phi(q_i) z_i with
S_i = sum_{j<=i} phi(k_j) v_j^T [m, d] and z_i = sum_{j<=i} phi(k_j) [m]. It is computed in
chunks (exact within a chunk, the running sums carried across), so memory is O(S·m) and
not O(S^2), and decoding keeps (S, z) instead of a key/value cache: O(m·d) per head and
step, independent of the context length.

Stabilisers. The query side subtracts each row's max over features (a per-query factor that
cancels in the ratio). The key side keeps one running max per (batch, kv head) and rescales
the sums when it grows (as online softmax does); it also cancels exactly, so a later token
changes earlier outputs at most at rounding level, and only inside the same chunk.

The features are not in the state_dict: they are regenerated from (favor_seed, layer index,
draw index) on first use on a device, so checkpoints and converted models load strictly
with the same names as SDPA models. With ``favor_redraw`` > 0 the trainer calls
``set_training_step`` once per optimizer step and the draw index is step // favor_redraw; a
freshly loaded model uses draw 0.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from koda.errors import KodaError

STAB_FLOOR = -1e30      # the key stabiliser before any key was seen (finite: -inf - -inf is NaN)


def orthogonal_features(m: int, d: int, generator: torch.Generator) -> torch.Tensor:
    """[m, d] float32: ceil(m / d) blocks of d orthogonal rows (the last block truncated),
    each row rescaled to the norm of an independent d-dimensional Gaussian vector."""
    blocks = []
    for _ in range(math.ceil(m / d)):
        gaussian = torch.randn(d, d, generator=generator)
        q, r = torch.linalg.qr(gaussian)
        q = q * torch.sign(torch.diagonal(r))[None, :]        # unique QR: Haar-distributed q
        blocks.append(q.T)                                     # rows orthonormal
    rows = torch.cat(blocks)[:m]
    norms = torch.randn(m, d, generator=generator).norm(dim=1, keepdim=True)
    return rows * norms


def draw_features(m: int, d: int, seed: int, layer: int, draw: int) -> torch.Tensor:
    """The [m, d] features of one layer and draw; the same on every rank and every load."""
    generator = torch.Generator().manual_seed(int(seed) * 1_000_003 + layer * 10_007 + draw)
    return orthogonal_features(m, d, generator)


def feature_logits(x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """x: [..., S, d] already scaled by d^-1/4; w: [m, d] -> W x - |x|^2/2 - log(m)/2, [..., S, m]."""
    return x @ w.T - (x * x).sum(-1, keepdim=True) / 2 - math.log(w.shape[0]) / 2


def query_features(q: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """q: [..., S, d] scaled -> phi(q) times a per-row constant, [..., S, m] (the constant cancels)."""
    logits = feature_logits(q, w)
    return torch.exp(logits - logits.amax(-1, keepdim=True))


class FavorState:
    """Running sums of one layer over the keys so far, all scaled by exp(-stab):
    kv = sum phi(k) v^T [B, Hkv, m, d], z = sum phi(k) [B, Hkv, m], stab [B, Hkv] the largest
    key feature logit seen (float32 throughout)."""

    def __init__(self, batch: int, n_kv: int, m: int, d: int, device):
        self.kv = torch.zeros(batch, n_kv, m, d, device=device)
        self.z = torch.zeros(batch, n_kv, m, device=device)
        self.stab = torch.full((batch, n_kv), STAB_FLOOR, device=device)

    def select(self, index: torch.Tensor) -> None:
        self.kv, self.z, self.stab = (t.index_select(0, index) for t in (self.kv, self.z, self.stab))


def causal_linear_attention(qf: torch.Tensor, k_logits: torch.Tensor, v: torch.Tensor,
                            state: FavorState, keep: torch.Tensor | None = None,
                            chunk: int = 64) -> torch.Tensor:
    """Causal FAVOR+ over S new tokens, continuing (and updating) `state`.

    qf: [B, Hkv, G, S, m] query features (G = query heads per kv head); k_logits:
    [B, Hkv, S, m] key feature logits; v: [B, Hkv, S, d]; keep: [B, S] bool, False for padded
    keys (they add nothing to the sums). Returns [B, Hkv, G, S, d], float32.
    """
    S = qf.shape[-2]
    if keep is not None:
        k_logits = k_logits.masked_fill(~keep[:, None, :, None], float("-inf"))
    outs = []
    for s in range(0, S, chunk):
        e = min(s + chunk, S)
        logits = k_logits[:, :, s:e]                                               # [B, Hkv, C, m]
        stab = torch.maximum(state.stab, logits.amax((-1, -2)))                    # [B, Hkv]
        rescale = torch.exp(state.stab - stab)
        state.kv = state.kv * rescale[..., None, None]
        state.z = state.z * rescale[..., None]
        state.stab = stab
        kf = torch.exp(logits - stab[..., None, None])                             # [B, Hkv, C, m]
        q = qf[:, :, :, s:e]                                                       # [B, Hkv, G, C, m]
        vc = v[:, :, s:e]                                                          # [B, Hkv, C, d]
        num = q @ state.kv[:, :, None]                                             # [B, Hkv, G, C, d]
        den = q @ state.z[:, :, None, :, None]                                     # [B, Hkv, G, C, 1]
        scores = (q @ kf[:, :, None].transpose(-1, -2)).tril()                     # [B, Hkv, G, C, C]
        num = num + scores @ vc[:, :, None]
        den = den + scores.sum(-1, keepdim=True)
        outs.append(num / den.clamp_min(torch.finfo(den.dtype).tiny))
        state.kv = state.kv + kf.transpose(-1, -2) @ vc
        state.z = state.z + kf.sum(-2)
    return torch.cat(outs, dim=-2)


def quadratic_reference(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """The same kernel in quadratic form (tests and the benchmark): q: [B, H, S, d], k, v:
    [B, H, S, d] (heads already matched), unscaled -> [B, H, S, d]. No stabiliser beyond float64."""
    scale = q.shape[-1] ** -0.25
    a = torch.exp(feature_logits(q * scale, w)) @ torch.exp(feature_logits(k * scale, w)).transpose(-1, -2)
    a = a.tril()
    return (a @ v) / a.sum(-1, keepdim=True)


def padding_of(mask: torch.Tensor, past: int) -> torch.Tensor:
    """The key padding [B, T] behind a [B, 1, S, T] mask, refusing any other pattern.

    FAVOR+ has no score matrix to mask, so only masks that are causal plus key padding (what
    the model builds for left-padded batches) can be honoured; each query row must see the
    causal keys that are real; a padded query row sees only itself (its output is ignored).
    """
    B, _, S, T = mask.shape
    if T - past != S:
        raise KodaError(f"model.attention favor: a [B, 1, {S}, {T}] mask after {past} cached tokens")
    keep = mask[:, 0, -1, :].clone()                                               # [B, T]
    query_pos = torch.arange(past, past + S, device=mask.device)[:, None]
    key_pos = torch.arange(T, device=mask.device)[None, :]
    own = keep[:, past:, None]                                                     # [B, S, 1] query is real
    # a real query sees the causal real keys (itself among them); a padded one only itself
    expected = torch.where(own, (key_pos <= query_pos)[None] & keep[:, None, :], (key_pos == query_pos)[None])
    if not torch.equal(mask[:, 0], expected):
        raise KodaError("model.attention favor takes only causal masks with left padding; this "
                        "[B, 1, S, T] pattern is another (e.g. contrastive search): use sdpa")
    return keep


class FavorCache:
    """Decoding state for FAVOR+ models, in place of ``KVCache``: per layer the running sums
    (``FavorState``), so memory per step does not grow with the context."""

    def __init__(self, n_layers: int, batch: int, n_kv_heads: int, features: int, head_dim: int,
                 capacity: int, device: torch.device | str = "cpu"):
        self.states = [FavorState(batch, n_kv_heads, features, head_dim, device) for _ in range(n_layers)]
        self.capacity = capacity
        self.length = 0

    def advance(self, n: int) -> None:
        self.length += n

    def reorder(self, index: torch.Tensor) -> None:
        for state in self.states:
            state.select(index)

    def keep_alternative(self, start: int, choice: torch.Tensor) -> None:
        raise KodaError("contrastive search needs a key/value cache; model.attention favor keeps running "
                        "sums instead: use sampling or greedy decoding")


class FavorCore(nn.Module):
    """q [B, H, S, d], k/v [B, Hkv, S, d] -> [B, H, S, d] by FAVOR+; no parameters, no buffers."""

    def __init__(self, n_heads: int, n_kv_heads: int, head_dim: int, features: int, redraw: int,
                 seed: int, layer: int, chunk: int = 64):
        super().__init__()
        self.n_heads, self.n_kv_heads, self.head_dim = n_heads, n_kv_heads, head_dim
        self.features, self.redraw, self.seed, self.layer, self.chunk = features, redraw, seed, layer, chunk
        self.draw = 0
        self._w: torch.Tensor | None = None        # [m, d] on the last device used; a plain attribute
                                                    # so it is neither saved nor loaded

    def extra_repr(self) -> str:
        return f"features={self.features}, redraw={self.redraw}, draw={self.draw}"

    def set_step(self, step: int) -> None:
        draw = step // self.redraw if self.redraw else 0
        if draw != self.draw:
            self.draw, self._w = draw, None

    def weights(self, device: torch.device) -> torch.Tensor:
        if self._w is None or self._w.device != device:
            self._w = draw_features(self.features, self.head_dim, self.seed, self.layer, self.draw).to(device)
        return self._w

    def forward(self, q, k, v, mask=None, cache=None, layer: int = 0):
        B, H, S, d = q.shape
        if cache is not None and not isinstance(cache, FavorCache):
            raise KodaError("model.attention favor needs the model's own cache (model.new_cache), not a KVCache")
        past = cache.length if cache is not None else 0
        keep = padding_of(mask, past)[:, past:] if mask is not None else None
        w = self.weights(q.device)
        scale = d ** -0.25
        qf = query_features(q.float() * scale, w).view(B, self.n_kv_heads, H // self.n_kv_heads, S, -1)
        k_logits = feature_logits(k.float() * scale, w)                            # [B, Hkv, S, m]
        state = cache.states[layer] if cache is not None else FavorState(B, self.n_kv_heads, self.features,
                                                                          d, q.device)
        out = causal_linear_attention(qf, k_logits, v.float(), state, keep, self.chunk)
        return out.reshape(B, H, S, d).to(v.dtype)


def set_training_step(model: nn.Module, step: int) -> None:
    """Point every FAVOR+ layer at the draw for optimizer step `step` (no-op for other backends)."""
    for module in model.modules():
        if isinstance(module, FavorCore):
            module.set_step(step)
