"""Read the fp32 master weights of a DeepSpeed ZeRO-3 + AutoEP checkpoint, with no ranks.

Why KODA reads the partitions itself instead of running ``ds_to_universal`` first:
``zero_to_fp32`` refuses AutoEP checkpoints, and ``ds_to_universal`` would work but writes
every parameter's fp32 weights *and* both Adam moments as separate files (three times the
model in fp32, e.g. ~560 GB for Mixtral-8x7B's shape) only for a converter to read a third
of them back. Here each rank's ``optim_states`` file is memory-mapped, so only the fp32
partitions a tensor needs are paged in and the moments are never read, and each tensor is
rebuilt when the writer asks for it, so memory stays at about one safetensors shard.

The layout read (DeepSpeed 0.19.8, as ``ds_to_universal.extract_zero_shards_stage3`` and
``_consolidate_zero3_autoep_expert_states`` read it):

* ``zero_pp_rank_<r>_mp_rank_00_model_states.pt``: ``param_shapes``, one ordered
  name -> shape dict per optimizer sub-group, ``ds_autoep_layers`` (this rank's EP rank and
  the expert placement) and the client state (KODA's ``koda`` record).
* ``zero_pp_rank_<r>_mp_rank_00_optim_states.pt``: per sub-group a flat fp32 partition
  (``fp32_flat_groups``) and its ``ds_zero_partition_groups`` entry (partition count, this
  rank's index, the ranks sharing the group). A parameter of n elements takes
  ceil(n / count) elements of every member's partition, in ``param_shapes`` order; the
  last member's slice is padded.
* Dense parameters form one group over all ranks. Expert parameters form one group per
  EP rank (its expert-data-parallel replicas) holding that rank's local experts
  [E_local, ...]; DeepSpeed's own placement map (``autoep_metadata_to_affine_map``)
  puts the local experts back at their global indices.

The test suite checks every tensor against ``ds_to_universal``'s output bit for bit.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from pathlib import Path

import torch

from koda.errors import KodaError

_FILE = re.compile(r"(?:bf16_)?zero_pp_rank_(\d+)_mp_rank_(\d+)_(model|optim)_states\.pt")


@dataclass
class _Fragment:
    rank: int            # the file it lives in
    group: int           # optimizer sub-group index in that file
    offset: int          # start in the flat fp32 partition
    numel: int           # elements without padding
    shape: tuple         # the (local) shape stored by this rank


@dataclass
class _Param:
    shape: tuple                                          # full shape (all experts)
    fragments: dict[tuple, list] = field(default_factory=dict)   # group ranks -> [(partition rank, fragment)]
    layer: dict | None = None                             # the AutoEP layer entry, for expert tensors


class Zero3Checkpoint:
    """One tag directory of a ZeRO-3 checkpoint, read lazily: ``shapes`` and ``client_state``
    come from the small model-states files; ``tensor(name)`` builds one full fp32 tensor."""

    def __init__(self, tag_dir: str | Path):
        self.dir = Path(tag_dir)
        files: dict[str, dict[int, Path]] = {"model": {}, "optim": {}}
        for path in self.dir.iterdir():
            match = _FILE.fullmatch(path.name)
            if match:
                if int(match.group(2)) != 0:
                    raise KodaError(f"checkpoint {self.dir}: tensor-parallel files ({path.name}) are not supported")
                files[match.group(3)][int(match.group(1))] = path
        if not files["model"]:
            raise KodaError(f"checkpoint {self.dir}: no DeepSpeed ZeRO files (zero_pp_rank_*_model_states.pt)")
        self.world = len(files["model"])
        for kind in ("model", "optim"):
            if sorted(files[kind]) != list(range(self.world)):
                raise KodaError(f"checkpoint {self.dir}: {kind}_states files for ranks {sorted(files[kind])}, "
                                f"expected ranks 0..{self.world - 1}")
        self._model = [self._load(files["model"][r], mmap=False) for r in range(self.world)]
        self._optim = [self._load(files["optim"][r], mmap=True)["optimizer_state_dict"] for r in range(self.world)]
        self.client_state = {k: v for k, v in self._model[0].items() if k not in ("module", "optimizer")}
        self.autoep_layers = self._validated_autoep_layers()
        self._params = self._index()

    def _load(self, path: Path, mmap: bool) -> dict:
        try:
            return torch.load(path, map_location="cpu", weights_only=False, mmap=mmap)
        except Exception as err:   # zip, pickle and mmap errors all mean the same thing here
            raise KodaError(f"checkpoint {self.dir}: {path.name} is unreadable "
                            f"({type(err).__name__}: {' '.join(str(err).split())[:100]})") from None

    def _validated_autoep_layers(self) -> list[list[dict]]:
        """Per rank, its ``ds_autoep_layers`` after DeepSpeed's own metadata validation
        (which also refuses an AutoEP format version this DeepSpeed does not read)."""
        from deepspeed.checkpoint.autoep_zero3_metadata import validate_autoep_zero3_partitioned_metadata

        layers = []
        for rank, state in enumerate(self._model):
            entries = state.get("ds_autoep_layers") or []
            if entries:
                try:
                    validate_autoep_zero3_partitioned_metadata(entries)
                except RuntimeError as err:
                    raise KodaError(f"checkpoint {self.dir}: rank {rank} AutoEP metadata: {err}") from None
            layers.append(entries)
        if self._model[0].get("frozen_param_shapes"):
            raise KodaError(f"checkpoint {self.dir}: frozen parameters are not supported by koda convert")
        return layers

    @property
    def blocks(self) -> list[str]:
        """Module paths of the AutoEP layers (``model.layers.N.mlp``)."""
        return [entry["module_path"] for entry in self.autoep_layers[0]]

    def _index(self) -> dict[str, _Param]:
        params: dict[str, _Param] = {}
        for rank in range(self.world):
            experts = {f"{e['expert_key_prefix']}.{w}": e for e in self.autoep_layers[rank] for w in ("w1", "w2", "w3")}
            groups = self._optim[rank].get("ds_zero_partition_groups")
            flats = self._optim[rank]["fp32_flat_groups"]
            shapes = self._model[rank]["param_shapes"]
            if len(shapes) != len(flats):
                raise KodaError(f"checkpoint {self.dir}: rank {rank} has {len(shapes)} parameter groups "
                                f"but {len(flats)} fp32 partitions")
            for index, group_shapes in enumerate(shapes):
                meta = groups[index] if groups else {"partition_count": self.world, "partition_rank": rank,
                                                     "partition_ranks": list(range(self.world))}
                count, part = meta["partition_count"], meta["partition_rank"]
                offset = 0
                for name, shape in group_shapes.items():
                    shape = tuple(shape)
                    numel = math.prod(shape)
                    share = math.ceil(numel / count)
                    fragment = _Fragment(rank, index, offset, max(0, min(share, numel - part * share)), shape)
                    offset += share
                    layer = experts.get(name)
                    full = (layer["num_experts"], *shape[1:]) if layer else shape
                    param = params.setdefault(name, _Param(full, layer=layer))
                    if param.shape != full:
                        raise KodaError(f"checkpoint {self.dir}: {name} is {full} on rank {rank}, "
                                        f"{param.shape} on another rank")
                    param.fragments.setdefault(tuple(meta["partition_ranks"]), []).append((part, fragment))
                if offset > flats[index].numel():
                    raise KodaError(f"checkpoint {self.dir}: rank {rank} fp32 partition {index} holds "
                                    f"{flats[index].numel()} elements, its parameters need {offset}")
        return params

    @property
    def shapes(self) -> dict[str, tuple[int, ...]]:
        """Every parameter's full shape (experts: all of them), in the checkpoint's order."""
        return {name: param.shape for name, param in self._params.items()}

    def _gather(self, name: str, pieces: list) -> torch.Tensor:
        pieces = sorted(pieces, key=lambda item: item[0])
        if [p for p, _ in pieces] != list(range(len(pieces))):
            raise KodaError(f"checkpoint {self.dir}: {name}: partitions {[p for p, _ in pieces]} "
                            "(a rank's file is missing or from another save)")
        flat = torch.cat([self._optim[f.rank]["fp32_flat_groups"][f.group].narrow(0, f.offset, f.numel)
                          for _, f in pieces])
        return flat.view(pieces[0][1].shape).clone()

    def tensor(self, name: str) -> torch.Tensor:
        """The full fp32 tensor `name` (AutoEP's names), experts at their global indices."""
        param = self._params[name]
        local = {ranks: self._gather(name, pieces) for ranks, pieces in param.fragments.items()}
        if param.layer is None:
            if len(local) != 1:
                raise KodaError(f"checkpoint {self.dir}: dense parameter {name} is split over {len(local)} groups")
            return next(iter(local.values()))
        from deepspeed.checkpoint.autoep_affine import autoep_metadata_to_affine_map

        by_ep_rank = {}
        for ranks, value in local.items():
            entry = next(e for e in self.autoep_layers[ranks[0]] if e["module_path"] == param.layer["module_path"])
            by_ep_rank[entry["ep_rank"]] = value
        try:
            return autoep_metadata_to_affine_map(param.layer, param.shape, name).rebuild(by_ep_rank)
        except (ValueError, RuntimeError, KeyError) as err:
            raise KodaError(f"checkpoint {self.dir}: cannot place the experts of {name}: {err}") from None
