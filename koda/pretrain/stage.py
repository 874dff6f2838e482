"""The pre-training stage on one rank: ZeRO-3 + AutoEP actor, cross-entropy + MoE balancing.

Per optimizer step: ``grad_accum`` micro-batches of forward, loss, backward, ``Engine.step``
(DeepSpeed steps at the accumulation boundary, after any gradient transforms). The loop
around it (step boundary, stop signals, time budget, non-finite policy, cadence) is
``koda.run.loop.RunLoop``; this stage supplies the step, its metrics, validation and its
checkpoint. Every rank runs the same number of forwards: ZeRO-3 gathers parameters with
collectives, so a rank that skipped one would hang the others.
"""

from __future__ import annotations

import math
import random
from pathlib import Path

import numpy as np
import torch

from koda import __version__
from koda.config.run import RunConfig
from koda.data.loader import BatchLayout, TokenStream, TrainLoader, document_starts, eval_batches
from koda.data.shards import open_split
from koda.distributed import checkpoint, comm, ds_config, universal
from koda.distributed.accelerator import supports_bf16
from koda.distributed.engine import build_engine
from koda.distributed.gather import full_weights
from koda.errors import KodaError
from koda.model import KodaForCausalLM
from koda.model.favor import set_training_step
from koda.model.init import load_weights
from koda.objectives import next_token_loss
from koda.pretrain.dfa import DirectFeedback, measure_alignment
from koda.pretrain.isometry import OrthoPenalty, merge_spectra, penalty_weight, spectrum_sample, spectrum_summary
from koda.pretrain.optimizer import ClientOptimizer, latency
from koda.run.flops import Throughput, memory_metrics
from koda.run.init_from import initial_state
from koda.run.loop import LoopState, Stage, StepOutcome
from koda.run.router_probe import RouterProbe, load_stats
from koda.run.start import RunStart, check_model, open_run, run_stage


class PretrainStage(Stage):
    name = "pretrain"
    console = (("train/ce", "loss", ".4f"), ("val/loss", "val", ".4f"), ("train/lr", "lr", ".2e"),
               ("train/grad_norm", "gnorm", ".3f"), ("perf/tokens_per_s", "tok/s", ",.0f"),
               ("perf/mfu", "mfu", ".1%"), ("moe/load_max_min", "load max/min", ".2f"),
               ("dfa/alignment", "dfa align", ".3f"))

    def __init__(self, cfg: RunConfig, start: RunStart, init_from: str | None = None):
        self.cfg, self.rank, self.world = cfg, comm.rank(), comm.world_size()
        self.layout, self.ckpt_dir = start.layout, start.layout.checkpoints
        self.metrics = None                     # the run's MetricsLogger, set by run_stage
        log = print if self.rank == 0 else (lambda *_: None)
        self.plan = ds_config.resolve(ds_config.load(cfg.ds_config), model=cfg.model, world_size=self.world,
                                      train_steps=cfg.train.steps, bf16_supported=supports_bf16())
        # the run config's optimizer section: KODA's optimizer (K-FAC or AdamW) replaces the DeepSpeed config's
        self.client = None
        if cfg.optimizer is not None:
            self.plan = ds_config.with_client_optimizer(self.plan, cfg.optimizer.lr)
            self.client = ClientOptimizer(cfg.optimizer, cfg.train.seed,
                                          latency(cfg.optimizer, self.rank, self.world, ep_size=self.plan.ep_size))
            self.plan = self.client.plan(self.plan)      # muon: the clipping moves into its transform
        # The checkpoint to resume is chosen before the engine exists: one written by another
        # world or expert-parallel size needs an engine that loads DeepSpeed's universal format.
        found = start.found
        self.universal = universal.needed(self.ckpt_dir, found, self.plan) if found else None
        if self.universal:
            if self.client is not None:
                # the universal format keeps DeepSpeed's own optimizer state only: K-FAC's factors would be lost
                raise KodaError(f"checkpoint {self.ckpt_dir / found}: resuming KODA's optimizer on another world "
                                f"or expert-parallel size ({self.universal}) is not supported")
            self.plan = universal.enable(self.plan)
        torch.manual_seed(cfg.train.seed)          # the same initial weights on every rank
        # fine-tuning: the source's full weights, copied in module by module while the network is
        # built partitioned (every rank reads the source; see docs/tasks.md)
        initial = initial_state(init_from, cfg.model) if init_from else None
        self.init_from = init_from

        def network() -> KodaForCausalLM:
            model = KodaForCausalLM(cfg.model)
            if initial is not None:
                load_weights(model, initial)
            return model

        if self.client is None:
            self.engine = build_engine("actor", network, self.plan)
        else:
            self.engine = build_engine("actor", network, self.plan, parameters=self.client.parameters,
                                       optimizer=self.client)
            self.client.attach(self.engine)
        self.probe = RouterProbe(self.engine.module, cfg.model.top_k, log=log)
        iso = cfg.isometry
        # expert terms scaled by ep_size: DeepSpeed averages expert gradients over the whole world
        self.ortho = (OrthoPenalty(self.engine.module, iso.ortho_patterns, expert_scale=self.plan.ep_size)
                      if iso.ortho_lambda > 0 else None)
        matrices = [n for n, p in self.engine.module.named_parameters()
                    if len(getattr(p, "ds_shape", p.shape)) in (2, 3)]
        self.spectrum_names = (spectrum_sample(matrices, cfg.model.n_layers, iso.spectrum_layers)
                               if iso.spectrum_every else [])
        # train.feedback: dfa trains the blocks by direct feedback alignment (docs/dfa.md)
        self.dfa = (DirectFeedback.for_causal_lm(self.engine.module, cfg.train.dfa_seed, cfg.train.dfa_scale)
                    if cfg.train.feedback == "dfa" else None)
        self.dfa_metrics: dict = {}
        self.dtype = self.plan.dtype

        layout = BatchLayout(cfg.data.seq_len, self.plan.micro_batch, self.plan.grad_accum, self.rank, self.world)
        self.global_batch = layout.global_batch
        shards = Path(cfg.data.shards_dir)
        fingerprint = start.tokenizer.fingerprint
        train = TokenStream(open_split(shards, "train", fingerprint))
        starts = document_starts(train, cfg.data.seq_len) if cfg.data.windows == "documents" else None
        self.loader = TrainLoader(train, layout, cfg.train.seed, starts)
        self.val_batches = eval_batches(TokenStream(open_split(shards, "val", fingerprint)), layout,
                                        cfg.train.eval_batches)
        self.tokens_per_step = layout.global_batch * cfg.data.seq_len
        self.throughput = Throughput(cfg.model, cfg.data.seq_len, self.dtype, cfg.logging.peak_tflops)
        # Per-rank RNG streams for anything stochastic later (sampling); the data order
        # does not use them (it is a function of the seed and the step).
        torch.manual_seed(cfg.train.seed + 1000 * (self.rank + 1))
        np.random.seed(cfg.train.seed + self.rank)
        random.seed(cfg.train.seed + self.rank)
        self.step, self.window = 0, torch.zeros(5)
        self.resumed = self._resume(found) if found else LoopState()
        # latency scaling on: every rank's applied scales, logged once (rank r's at index r)
        self.latency_report = {}
        if self.client is not None and cfg.optimizer.kappa > 0:
            ranks = comm.all_gather_object(self.client.applied_scales())
            self.latency_report = {f"optim/latency_scale/{kind}": [r[kind] for r in ranks]
                                   for kind in ("dense", "expert")}

    def summary(self) -> str:
        return (f"world {self.world}, expert-parallel {self.plan.ep_size}, {self.dtype}, global batch "
                f"{self.global_batch} x {self.cfg.data.seq_len} tokens"
                + (f", resumed at step {self.resumed.step}" if self.resumed.step else "")
                + (f", weights from {self.init_from}" if self.init_from else "")
                + (f" ({self.universal}, via DeepSpeed's universal checkpoint)" if self.universal else ""))

    # ----------------------------------------------------------------- checkpoints
    def _resume(self, found: str) -> LoopState:
        loaded = checkpoint.load({checkpoint.ACTOR: self.engine}, self.ckpt_dir, found,
                                 universal=bool(self.universal))
        state, rank_state = loaded.client_state.get("koda"), loaded.rank_state
        where = self.ckpt_dir / found
        if state is None:
            raise KodaError(f"checkpoint {where}: not written by KODA (no 'koda' state)")
        if state.get("stage", "pretrain") != "pretrain":
            raise KodaError(f"checkpoint {where}: written by the {state['stage']} stage; "
                            f"resume it with --stage {state['stage']}")
        check_model(state, self.cfg, where)
        saved = state.get("optimizer", "deepspeed")
        if saved != self._optimizer_label():
            raise KodaError(f"checkpoint {where}: written with optimizer {saved!r}, this run uses "
                            f"{self._optimizer_label()!r} (the optimizer states do not carry over)")
        loop = LoopState.from_dict({**state, "skipped_steps": state.get("skipped_steps", 0)})
        self.step = loop.step
        self.loader.load_state_dict(state["loader"])
        if rank_state is not None:
            checkpoint.set_rng_state(rank_state["rng"])
        else:   # a rank the saving world did not have: a fresh stream, a function of (seed, step, rank)
            seed = int(np.random.default_rng([self.cfg.train.seed, self.step, self.rank]).integers(2**31))
            torch.manual_seed(seed)
            np.random.seed(seed)
            random.seed(seed)
        return loop

    def _optimizer_label(self) -> str:
        """Which optimizer's states a checkpoint holds: the DeepSpeed config's, or KODA's rule."""
        return "deepspeed" if self.cfg.optimizer is None else f"koda:{self.cfg.optimizer.name}"

    def save(self, state: LoopState) -> str:
        record = {"koda": {**state.state_dict(), "loader": self.loader.state_dict(), "world_size": self.world,
                           "model": self.cfg.model.to_dict(), "tokens": state.step * self.tokens_per_step,
                           "optimizer": self._optimizer_label(), "stage": self.name,
                           "format": checkpoint.FORMAT, "koda_version": __version__}}
        meta = {"stage": self.name, "ep_size": self.plan.ep_size, "optimizer": self._optimizer_label(),
                "source": self.init_from}
        saved = checkpoint.save({checkpoint.ACTOR: self.engine}, self.ckpt_dir, state.step, record,
                                {"rng": checkpoint.rng_state()}, self.cfg.train.keep_checkpoints, meta=meta)
        return (f"saved checkpoint {self.ckpt_dir / saved.tag} ({saved.bytes / 1e6:,.1f} MB in "
                f"{saved.seconds:.2f} s, hashing {saved.hash_seconds:.2f} s)")

    # ------------------------------------------------------------------ the step
    def train_step(self, step: int) -> StepOutcome:
        """One optimizer step; adds this rank's [ce, aux, z, ortho, lambda·ortho] means over
        its micro-batches to the logging window (ortho: this rank's orthogonality penalty, 0 when off)."""
        self.step = step
        self.engine.train()
        set_training_step(self.engine.module, step)      # FAVOR+ feature redraws; no-op otherwise
        discarded_before = self.engine.skipped_steps
        sums = torch.zeros(5)
        iso = self.cfg.isometry
        lam = penalty_weight(iso.ortho_lambda, iso.ortho_warmup_steps, step)
        batches = [b.to(self.engine.device, non_blocking=True) for b in self.loader.next_batches()]
        every = self.cfg.train.dfa_align_every
        if self.dfa is not None and every and (step == 0 or (step + 1) % every == 0):
            self.dfa_metrics = measure_alignment(self.engine, self.dfa, lambda: self._diagnostic_ce(batches[0]))
        for batch in batches:
            logits = self.engine(batch[:, :-1])
            ce = next_token_loss(logits, batch[:, 1:])
            aux, z = self.probe.losses()
            ortho = self.ortho.take() if self.ortho is not None else torch.zeros(())
            loss = ce + self.cfg.moe.aux_loss_weight * aux + self.cfg.moe.z_loss_weight * z + lam * ortho
            self.engine.backward(loss)
            self.engine.step()
            terms = (ce, aux, z, ortho, lam * ortho)
            sums += torch.stack([t.detach().float().cpu().reshape(()) for t in terms])
        losses = sums / len(batches)
        self.window += losses
        self.step = step + 1
        return StepOutcome(nonfinite=None if bool(torch.isfinite(losses).all()) else "loss",
                           discarded=self.engine.skipped_steps > discarded_before)

    def _diagnostic_ce(self, batch: torch.Tensor) -> torch.Tensor:
        """CE of one micro-batch [b, S+1] for a diagnostic backward; its router logits are
        dropped so the load statistics and balancing loss see training forwards only."""
        logits = self.engine(batch[:, :-1])
        self.probe.discard()
        if self.ortho is not None:
            self.ortho.take()          # the penalty hooks also saw this forward: not a training term
        return next_token_loss(logits, batch[:, 1:])

    def step_metrics(self, steps: int, seconds: float) -> dict:
        # ortho: the mean over ranks of each rank's term is the whole model's penalty
        ce, aux, z, ortho, weighted = (comm.all_reduce_sum(self.window / steps) / self.world).tolist()
        self.window = torch.zeros(5)
        moe, iso = self.cfg.moe, self.cfg.isometry
        metrics = {"train/loss": ce + moe.aux_loss_weight * aux + moe.z_loss_weight * z + weighted,
                   "train/ce": ce, "train/aux_loss": aux, "train/z_loss": z,
                   "train/lr": self.engine.lr(), "train/grad_norm": self.engine.grad_norm(),
                   **self.throughput.metrics(self.tokens_per_step * steps, seconds, steps),
                   **self._load_metrics(), **memory_metrics()}
        metrics.update(self.latency_report)
        self.latency_report = {}
        if self.client is not None and self.client.kfac is not None:
            metrics["kfac/kl_scale"] = self.client.kfac.last_kl_scale   # 1: the KL clip was idle
        if self.client is not None and self.client.raw_grad_norm is not None:
            # DeepSpeed's norm would be the rewritten updates'; this is the raw gradient's
            metrics["train/grad_norm"] = self.client.raw_grad_norm
        if self.ortho is not None:
            metrics["train/ortho"] = ortho
            metrics["train/ortho_lambda"] = penalty_weight(iso.ortho_lambda, iso.ortho_warmup_steps, self.step - 1)
        every = iso.spectrum_every
        if every and (self.step % every == 0 or self.step == self.cfg.train.steps):
            metrics.update(self._spectrum())
        if self.dfa_metrics:
            metrics.update(self.dfa_metrics)
            self.dfa_metrics = {}
        return metrics

    # ---------------------------------------------------------------- evaluation
    def evaluates(self) -> bool:
        return True

    @torch.no_grad()
    def evaluate(self) -> dict:
        self.engine.eval()
        self.probe.enabled = False
        total = torch.zeros(2)
        for batch in self.val_batches:
            batch = batch.to(self.engine.device, non_blocking=True)
            logits = self.engine(batch[:, :-1])
            total += torch.stack([next_token_loss(logits, batch[:, 1:]).float().cpu() * batch[:, 1:].numel(),
                                  torch.tensor(float(batch[:, 1:].numel()))])
        self.probe.enabled = True
        loss_sum, count = comm.all_reduce_sum(total).tolist()
        loss = loss_sum / count
        metrics = {"val/loss": loss, "val/ppl": math.exp(min(loss, 50.0))}
        if self.step == 0 and self.cfg.isometry.spectrum_every:
            metrics.update(self._spectrum())
        return metrics

    def _spectrum(self) -> dict:
        """iso/<kind>/* statistics of the sampled weights. Collective: every rank gathers the
        same weights; dense ones are summarised by rank 0 alone, experts (3-D: this rank's
        share) by every rank, so each kind is counted uniformly (see ``merge_spectra``)."""
        weights = full_weights(self.engine.module, self.spectrum_names)
        mine = {name: w for name, w in weights.items() if w.dim() == 3 or self.rank == 0}
        return merge_spectra(comm.all_gather_object(spectrum_summary(mine)))

    def _load_metrics(self) -> dict:
        counts = self.probe.take_counts()
        if not counts:
            return {}
        layers = sorted(counts)
        table = comm.all_reduce_sum(torch.stack([counts[i].double() for i in layers]))   # [L, E]
        return load_stats(dict(zip(layers, table, strict=True)))


def build(cfg: RunConfig, resume: bool = False, resume_tag: str | None = None, init_from: str | None = None,
          resume_older: bool = False) -> PretrainStage:
    """The stage on this rank (the process group is up), resumed when asked."""
    return PretrainStage(cfg, open_run(cfg, resume, resume_tag, resume_older), init_from)


def train(cfg: RunConfig, **options) -> dict:
    """Run the pre-training stage on this rank; `options` as ``build``'s. Returns the last metrics."""
    stage = build(cfg, **options)
    return run_stage(stage, cfg, stage.layout, stage.resumed, stage.plan.config, stage.summary())
