"""Deterministic, resumable, rank-disjoint batches of fixed-length token windows.

The token stream of a split (all shards back to back) is cut into windows of seq_len + 1
tokens starting every seq_len tokens (inputs and shifted targets share the overlap token),
or, given ``starts`` (``document_starts``), one window per document starting at the
end-of-text token in front of it.
Each epoch visits the windows in a permutation drawn from (seed, epoch) alone; optimizer
step s of an epoch takes permutation entries [s·G, (s+1)·G) for the global batch G, and
data-parallel rank r takes its own contiguous part of those. So the whole sequence of
batches is a function of (seed, epoch, step, world layout): a resumed run that restores
(epoch, step) sees exactly the batches the uninterrupted run would have seen.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from koda.data.shards import Shard
from koda.errors import KodaError


class TokenStream:
    """Random access to the concatenation of several shards' tokens."""

    def __init__(self, shards: list[Shard]):
        self.shards = shards
        self.starts = np.cumsum([0] + [len(s) for s in shards])      # [n_shards + 1]

    def __len__(self) -> int:
        return int(self.starts[-1])

    def window(self, start: int, length: int) -> np.ndarray:
        out = np.empty(length, dtype=np.int64)
        filled = 0
        shard = int(np.searchsorted(self.starts, start, side="right") - 1)
        while filled < length:
            offset = start + filled - int(self.starts[shard])
            take = min(length - filled, len(self.shards[shard]) - offset)
            out[filled:filled + take] = self.shards[shard].tokens[offset:offset + take]
            filled += take
            shard += 1
        return out


@dataclass(frozen=True)
class BatchLayout:
    seq_len: int
    micro_batch: int     # sequences per rank per forward
    grad_accum: int      # forwards per optimizer step
    dp_rank: int
    dp_size: int

    @property
    def global_batch(self) -> int:
        return self.micro_batch * self.grad_accum * self.dp_size


def document_starts(stream: TokenStream, seq_len: int) -> np.ndarray:
    """[n_docs - 1] int64: the stream position of the end-of-text token in front of every document
    but the first (its window then holds the document from its start, as generation feeds a prompt
    after that token), keeping those with seq_len + 1 tokens of stream from there."""
    ends = np.concatenate([int(first) + s.doc_ends.astype(np.int64)
                           for first, s in zip(stream.starts[:-1], stream.shards, strict=True)])
    starts = ends[:-1] - 1
    return starts[starts + seq_len + 1 <= len(stream)]


class TrainLoader:
    def __init__(self, stream: TokenStream, layout: BatchLayout, seed: int, starts: np.ndarray | None = None):
        self.stream, self.layout, self.seed = stream, layout, seed
        self.starts = starts     # window w begins at starts[w]; None: at w * seq_len
        self.n_windows = (len(stream) - 1) // layout.seq_len if starts is None else len(starts)
        self.steps_per_epoch = self.n_windows // layout.global_batch
        if self.steps_per_epoch < 1:
            raise KodaError(f"data: the train split has {self.n_windows} windows of {layout.seq_len} tokens, "
                            f"fewer than one global batch of {layout.global_batch}")
        self.epoch, self.step = 0, 0
        self._perm_epoch, self._perm = -1, np.empty(0, dtype=np.int64)

    def _permutation(self) -> np.ndarray:
        if self._perm_epoch != self.epoch:
            rng = np.random.default_rng([self.seed, self.epoch])
            self._perm, self._perm_epoch = rng.permutation(self.n_windows), self.epoch
        return self._perm

    def next_batches(self) -> list[torch.Tensor]:
        """This rank's grad_accum micro-batches for the next optimizer step, each
        [micro_batch, seq_len + 1] int64 (inputs are [:, :-1], targets [:, 1:])."""
        lay = self.layout
        per_rank = lay.micro_batch * lay.grad_accum
        start = self.step * lay.global_batch + lay.dp_rank * per_rank
        windows = self._permutation()[start:start + per_rank]
        at = windows * lay.seq_len if self.starts is None else self.starts[windows]
        rows = np.stack([self.stream.window(int(a), lay.seq_len + 1) for a in at])
        self.step += 1
        if self.step == self.steps_per_epoch:
            self.epoch, self.step = self.epoch + 1, 0
        return list(torch.from_numpy(rows).split(lay.micro_batch))

    def state_dict(self) -> dict:
        return {"epoch": self.epoch, "step": self.step, "seed": self.seed, "n_windows": self.n_windows,
                "global_batch": self.layout.global_batch}

    def load_state_dict(self, state: dict) -> None:
        if state["n_windows"] != self.n_windows or state["seed"] != self.seed:
            raise KodaError("resume: the training data or seed changed since the checkpoint "
                            f"(windows {state['n_windows']} -> {self.n_windows}, seed {state['seed']} -> {self.seed})")
        if state["global_batch"] != self.layout.global_batch:
            # Another world size: keep the position in samples, which is what the data has seen.
            consumed = state["step"] * state["global_batch"]
            self.epoch, self.step = state["epoch"], consumed // self.layout.global_batch
        else:
            self.epoch, self.step = state["epoch"], state["step"]


def eval_batches(stream: TokenStream, layout: BatchLayout, n_batches: int) -> list[torch.Tensor]:
    """A fixed validation set: windows rank, rank + dp, ... in stream order, n_batches
    micro-batches per rank ([micro_batch, seq_len + 1] each), the same at every evaluation."""
    n_windows = (len(stream) - 1) // layout.seq_len
    needed = n_batches * layout.micro_batch * layout.dp_size
    if n_windows < needed:
        raise KodaError(f"data: the validation split has {n_windows} windows, {needed} needed "
                        f"(lower train.eval_batches or raise data.val_fraction)")
    windows = np.arange(layout.dp_rank, needed, layout.dp_size)
    rows = np.stack([stream.window(int(w) * layout.seq_len, layout.seq_len + 1) for w in windows])
    return list(torch.from_numpy(rows).split(layout.micro_batch))
