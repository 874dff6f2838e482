"""The pre-training loop of one rank: ZeRO-3 + AutoEP actor, cross-entropy + MoE balancing.

Per optimizer step: ``grad_accum`` micro-batches of forward, loss, backward, ``Engine.step``
(DeepSpeed steps at the accumulation boundary, after any gradient transforms); then the
step boundary, where the ranks agree (one all-reduce) on two things: whether the step's
loss or gradient norm was non-finite (``train.on_nonfinite``: stop with an error naming
the step, or count the discarded step and go on), and whether any rank was asked to stop
(SIGTERM/SIGUSR1: save, then leave the loop; ``koda.distributed.preemption``); then
logging, validation and checkpoints on their own periods. Every rank runs the same number
of forwards: ZeRO-3 gathers parameters with collectives, so a rank that skipped one would
hang the others.
"""

from __future__ import annotations

import json
import math
import random
import resource
import time
from pathlib import Path

import numpy as np
import torch

from koda import __version__
from koda.data.loader import BatchLayout, TokenStream, TrainLoader, eval_batches
from koda.data.prepare import prepare
from koda.data.shards import open_split
from koda.distributed import checkpoint, comm, ds_config, preemption, universal
from koda.distributed.accelerator import local_world_size, on_cpu, supports_bf16
from koda.distributed.engine import build_engine
from koda.distributed.gather import full_weights
from koda.distributed.rank_start import start_rank
from koda.errors import KodaError
from koda.model import KodaForCausalLM
from koda.model.favor import set_training_step
from koda.model.init import load_weights
from koda.objectives import next_token_loss
from koda.run_layout import RunLayout
from koda.train.config import RunConfig
from koda.train.dfa import DirectFeedback, measure_alignment
from koda.train.flops import measure_matmul_peak, train_flops_per_token
from koda.train.init_from import initial_state
from koda.train.isometry import OrthoPenalty, merge_spectra, penalty_weight, spectrum_sample, spectrum_summary
from koda.train.metrics import MetricsLogger
from koda.train.optimizer import ClientOptimizer, latency
from koda.train.router_probe import RouterProbe, load_stats


class Trainer:
    def __init__(self, cfg: RunConfig, resume: bool = False, resume_tag: str | None = None,
                 init_from: str | None = None):
        self.stop = start_rank()
        self.cfg, self.rank, self.world = cfg, comm.rank(), comm.world_size()
        self.layout = RunLayout(cfg.run_dir)
        self.run_dir, self.ckpt_dir = self.layout.root, self.layout.checkpoints
        log = print if self.rank == 0 else (lambda *_: None)

        if self.rank == 0:
            # checked again here: a launcher (deepspeed --module koda.train) skips koda train's checks
            checkpoint.refuse_overwrite(self.ckpt_dir, resuming=bool(resume or resume_tag))
            self.run_dir.mkdir(parents=True, exist_ok=True)
            prepare(cfg.data, cfg.model.vocab_size, log=log)
        comm.barrier()
        tokenizer = prepare(cfg.data, cfg.model.vocab_size, build_missing=False, log=lambda *_: None)

        self.plan = ds_config.resolve(ds_config.load(cfg.ds_config), model=cfg.model, world_size=self.world,
                                      train_steps=cfg.train.steps, bf16_supported=supports_bf16())
        # the run config's optimizer section: KODA's optimizer (K-FAC or AdamW) replaces the DeepSpeed config's
        self.client = None
        if cfg.optimizer is not None:
            self.plan = ds_config.with_client_optimizer(self.plan, cfg.optimizer.lr)
            self.client = ClientOptimizer(cfg.optimizer, cfg.train.seed,
                                          latency(cfg.optimizer, self.rank, self.world))
        # The checkpoint to resume is chosen before the engine exists: one written by another
        # world or expert-parallel size needs an engine that loads DeepSpeed's universal format.
        found = checkpoint.resolve_tag(self.ckpt_dir, resume_tag) if (resume or resume_tag) else None
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
        shards = Path(cfg.data.shards_dir)
        self.loader = TrainLoader(TokenStream(open_split(shards, "train", tokenizer.fingerprint)), layout,
                                  cfg.train.seed)
        self.val_batches = eval_batches(TokenStream(open_split(shards, "val", tokenizer.fingerprint)), layout,
                                        cfg.train.eval_batches)
        self.tokens_per_step = layout.global_batch * cfg.data.seq_len
        self.flops_per_token = train_flops_per_token(cfg.model, cfg.data.seq_len)
        # Per-rank RNG streams for anything stochastic later (sampling); the data order
        # does not use them (it is a function of the seed and the step).
        torch.manual_seed(cfg.train.seed + 1000 * (self.rank + 1))
        np.random.seed(cfg.train.seed + self.rank)
        random.seed(cfg.train.seed + self.rank)

        self.step, self.skipped = 0, 0
        resumed = self._resume(found) if (resume or resume_tag) else None
        self.peak_flops = self._peak_flops()
        if self.rank == 0:
            self.layout.config.write_text(json.dumps(cfg.to_dict(), indent=1))
            self.layout.ds_config.write_text(json.dumps(self.plan.config, indent=1))
        self.metrics = MetricsLogger(self.run_dir, cfg.logging, cfg.to_dict(), cfg.train.steps,
                                     enabled=self.rank == 0, resume_step=resumed)
        self.metrics.print(f"world {self.world}, expert-parallel {self.plan.ep_size}"
                           f", {self.dtype}, global batch {layout.global_batch} x {cfg.data.seq_len} tokens"
                           + (f", resumed at step {resumed}" if resumed is not None else "")
                           + (f", weights from {init_from}" if init_from else "")
                           + (f" ({self.universal}, via DeepSpeed's universal checkpoint)" if self.universal else ""))

    # ----------------------------------------------------------------- checkpoints
    def _resume(self, found: str | None) -> int | None:
        if found is None:
            if self.rank == 0:
                print(f"no complete checkpoint in {self.ckpt_dir}: starting from step 0")
            return None
        loaded = checkpoint.load({checkpoint.ACTOR: self.engine}, self.ckpt_dir, found,
                                 universal=bool(self.universal))
        state, rank_state = loaded.client_state.get("koda"), loaded.rank_state
        if state is None:
            raise KodaError(f"checkpoint {self.ckpt_dir / found}: not written by KODA (no 'koda' state)")
        if state.get("stage", "pretrain") != "pretrain":
            raise KodaError(f"checkpoint {self.ckpt_dir / found}: written by the {state['stage']} stage; "
                            f"resume it with --stage {state['stage']}")
        if state["model"] != self.cfg.model.to_dict():
            raise KodaError(f"checkpoint {self.ckpt_dir / found}: written for another model configuration")
        saved = state.get("optimizer", "deepspeed")
        if saved != self._optimizer_label():
            raise KodaError(f"checkpoint {self.ckpt_dir / found}: written with optimizer {saved!r}, this run uses "
                            f"{self._optimizer_label()!r} (the optimizer states do not carry over)")
        self.step, self.skipped = state["step"], state.get("skipped_steps", 0)
        self.loader.load_state_dict(state["loader"])
        if rank_state is not None:
            checkpoint.set_rng_state(rank_state["rng"])
        else:   # a rank the saving world did not have: a fresh stream, a function of (seed, step, rank)
            seed = int(np.random.default_rng([self.cfg.train.seed, self.step, self.rank]).integers(2**31))
            torch.manual_seed(seed)
            np.random.seed(seed)
            random.seed(seed)
        return self.step

    def _optimizer_label(self) -> str:
        """Which optimizer's states a checkpoint holds: the DeepSpeed config's, or KODA's rule."""
        return "deepspeed" if self.cfg.optimizer is None else f"koda:{self.cfg.optimizer.name}"

    def _save(self) -> None:
        state = {"koda": {"step": self.step, "loader": self.loader.state_dict(), "world_size": self.world,
                          "model": self.cfg.model.to_dict(), "tokens": self.step * self.tokens_per_step,
                          "skipped_steps": self.skipped, "optimizer": self._optimizer_label(),
                          "format": checkpoint.FORMAT, "koda_version": __version__}}
        saved = checkpoint.save({checkpoint.ACTOR: self.engine}, self.ckpt_dir, self.step, state,
                                {"rng": checkpoint.rng_state()}, self.cfg.train.keep_checkpoints)
        self.metrics.print(f"saved checkpoint {self.ckpt_dir / saved.tag} ({saved.bytes / 1e6:,.1f} MB in "
                           f"{saved.seconds:.2f} s, hashing {saved.hash_seconds:.2f} s)")

    # ------------------------------------------------------------- step boundary
    def _boundary(self, losses: torch.Tensor, discarded_before: int) -> str | None:
        """Collective, after every optimizer step. `losses`: this rank's [ce, aux, z, ortho, lambda·ortho].
        Raises on a non-finite step under ``on_nonfinite: stop``; returns the name of the
        stop signal any rank received, or None to go on."""
        received = [float(self.stop.signal == sig) for sig in preemption.STOP_SIGNALS]
        flags = comm.all_reduce_sum(torch.tensor([*received, float(not bool(torch.isfinite(losses).all()))]))
        *counts, bad_loss = (bool(v) for v in flags.tolist())
        stop = next((sig.name for sig, seen in zip(preemption.STOP_SIGNALS, counts, strict=True) if seen), None)
        discarded = self.engine.skipped_steps > discarded_before     # the gradient norm was not finite
        if bad_loss or discarded:
            what = "loss" if bad_loss else f"gradient norm ({self.engine.grad_norm()})"
            if self.cfg.train.on_nonfinite == "stop" or not discarded:
                applied = "" if discarded else "; the update was applied"
                raise KodaError(f"step {self.step}: non-finite {what}{applied}; stopped without saving it "
                                f"(train.on_nonfinite={self.cfg.train.on_nonfinite}; last checkpoint: "
                                f"{checkpoint.resolve_tag(self.ckpt_dir) or 'none'})")
            self.skipped += 1
            self.metrics.print(f"step {self.step}: non-finite {what}, update discarded "
                               f"({self.skipped} skipped so far; train.on_nonfinite=skip)")
        return stop

    # --------------------------------------------------------------------- metrics
    def _peak_flops(self) -> float:
        """Per-device matmul peak in the training dtype: the configured figure, else measured
        by local rank 0 with every core while the other ranks wait (CPU ranks share cores)."""
        if self.cfg.logging.peak_tflops:
            return self.cfg.logging.peak_tflops * 1e12
        if not on_cpu():
            return measure_matmul_peak(self.dtype, torch.device("cuda", torch.cuda.current_device()), 4096, 0.5)
        peak = torch.zeros(1)
        if self.rank == 0:
            threads = torch.get_num_threads()
            torch.set_num_threads(max(1, torch.get_num_threads() * local_world_size()))
            peak[0] = measure_matmul_peak(self.dtype, "cpu", 1024, 1.0)
            torch.set_num_threads(threads)
        return float(comm.all_reduce_sum(peak)[0])

    def _devices(self) -> int:
        """Devices MFU is taken over: GPUs, or machines when ranks share a CPU."""
        return self.world if not on_cpu() else max(1, self.world // local_world_size())

    def _memory(self) -> dict:
        if not on_cpu():
            return {"mem/gpu_peak_gb": torch.cuda.max_memory_allocated() / 2**30}
        with open("/proc/self/statm") as statm:
            rss = int(statm.read().split()[1]) * resource.getpagesize()
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024     # ru_maxrss is in KiB
        return {"mem/rss_gb": rss / 2**30, "mem/peak_rss_gb": peak / 2**30}

    # ------------------------------------------------------------------- the loop
    def train_step(self) -> torch.Tensor:
        """One optimizer step; returns this rank's [ce, aux, z, ortho, lambda·ortho] means over
        its micro-batches (ortho: this rank's orthogonality penalty term, 0 when off)."""
        self.engine.train()
        set_training_step(self.engine.module, self.step)      # FAVOR+ feature redraws; no-op otherwise
        sums = torch.zeros(5)
        iso = self.cfg.isometry
        lam = penalty_weight(iso.ortho_lambda, iso.ortho_warmup_steps, self.step)
        batches = self.loader.next_batches()
        every = self.cfg.train.dfa_align_every
        if self.dfa is not None and every and (self.step == 0 or (self.step + 1) % every == 0):
            self.dfa_metrics = measure_alignment(self.engine, self.dfa, lambda: self._diagnostic_ce(batches[0]))
        for batch in batches:
            logits = self.engine(batch[:, :-1])
            ce = next_token_loss(logits, batch[:, 1:])
            aux, z = self.probe.losses()
            ortho = self.ortho.take() if self.ortho is not None else torch.zeros(())
            loss = ce + self.cfg.moe.aux_loss_weight * aux + self.cfg.moe.z_loss_weight * z + lam * ortho
            self.engine.backward(loss)
            self.engine.step()
            sums += torch.stack([ce.detach(), aux.detach(), z.detach(), ortho.detach(), lam * ortho.detach()]).float()
        self.step += 1
        return sums / len(batches)

    def _diagnostic_ce(self, batch: torch.Tensor) -> torch.Tensor:
        """CE of one micro-batch [b, S+1] for a diagnostic backward; its router logits are
        dropped so the load statistics and balancing loss see training forwards only."""
        logits = self.engine(batch[:, :-1])
        self.probe.discard()
        if self.ortho is not None:
            self.ortho.take()          # the penalty hooks also saw this forward: not a training term
        return next_token_loss(logits, batch[:, 1:])

    @torch.no_grad()
    def evaluate(self) -> dict:
        self.engine.eval()
        self.probe.enabled = False
        total = torch.zeros(2)
        for batch in self.val_batches:
            logits = self.engine(batch[:, :-1])
            total += torch.stack([next_token_loss(logits, batch[:, 1:]) * batch[:, 1:].numel(),
                                  torch.tensor(float(batch[:, 1:].numel()))])
        self.probe.enabled = True
        loss_sum, count = comm.all_reduce_sum(total).tolist()
        loss = loss_sum / count
        return {"val/loss": loss, "val/ppl": math.exp(min(loss, 50.0))}

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

    def run(self) -> dict:
        cfg = self.cfg.train
        window, window_time, window_steps, last_val = torch.zeros(5), 0.0, 0, {}
        spectrum_every = self.cfg.isometry.spectrum_every
        try:
            if self.step == 0:              # the untrained baseline the validation curve starts from
                last_val = self.evaluate()
                self.metrics.log(0, {**last_val, **(self._spectrum() if spectrum_every else {})})
                self.metrics.print(_console_line(0, cfg.steps, last_val))
            while self.step < cfg.steps:
                start = time.perf_counter()        # logging, eval and saving are not training time
                discarded_before = self.engine.skipped_steps
                losses = self.train_step()
                window += losses
                window_time += time.perf_counter() - start
                window_steps += 1
                stop = self._boundary(losses, discarded_before)
                self.metrics.advance()
                metrics = {}
                if self.step % cfg.log_every == 0 or self.step == cfg.steps:
                    # ortho: the mean over ranks of each rank's term is the whole model's penalty
                    ce, aux, z, ortho, weighted = (comm.all_reduce_sum(window / window_steps) / self.world).tolist()
                    tokens_per_s = self.tokens_per_step * window_steps / window_time
                    moe = self.cfg.moe
                    mfu = tokens_per_s * self.flops_per_token / (self.peak_flops * self._devices())
                    metrics = {"train/loss": ce + moe.aux_loss_weight * aux + moe.z_loss_weight * z + weighted,
                               "train/ce": ce, "train/aux_loss": aux, "train/z_loss": z,
                               "train/lr": self.engine.lr(), "train/grad_norm": self.engine.grad_norm(),
                               "perf/tokens_per_s": tokens_per_s, "perf/step_s": window_time / window_steps,
                               "perf/mfu": mfu, "train/skipped_steps": self.skipped, **self._load_metrics(),
                               **self._memory()}
                    if self.client is not None and self.client.kfac is not None:
                        metrics["kfac/kl_scale"] = self.client.kfac.last_kl_scale   # 1: the KL clip was idle
                    if self.ortho is not None:
                        metrics["train/ortho"] = ortho
                        metrics["train/ortho_lambda"] = penalty_weight(self.cfg.isometry.ortho_lambda,
                                                                       self.cfg.isometry.ortho_warmup_steps,
                                                                       self.step - 1)
                    window, window_time, window_steps = torch.zeros(5), 0.0, 0
                if self.step % cfg.eval_every == 0 or self.step == cfg.steps:
                    last_val = self.evaluate()
                    metrics.update(last_val)
                if spectrum_every and (self.step % spectrum_every == 0 or self.step == cfg.steps):
                    metrics.update(self._spectrum())
                if self.dfa_metrics:
                    metrics.update(self.dfa_metrics)
                    self.dfa_metrics = {}
                if metrics:
                    self.metrics.log(self.step, metrics)
                    self.metrics.print(_console_line(self.step, cfg.steps, metrics))
                saving = self.step % cfg.checkpoint_every == 0 or self.step == cfg.steps
                if saving or stop:
                    self._save()
                if stop:
                    self.metrics.print(f"stopped at step {self.step}/{cfg.steps} on {stop}: "
                                       "checkpoint saved; continue with --resume")
                    break
        finally:
            self.metrics.close()
        return last_val


def _console_line(step: int, total: int, m: dict) -> str:
    parts = [f"step {step}/{total}"]
    for key, label, fmt in (("train/ce", "loss", ".4f"), ("val/loss", "val", ".4f"), ("train/lr", "lr", ".2e"),
                            ("train/grad_norm", "gnorm", ".3f"), ("perf/tokens_per_s", "tok/s", ",.0f"),
                            ("perf/mfu", "mfu", ".1%"), ("moe/load_max_min", "load max/min", ".2f"),
                            ("dfa/alignment", "dfa align", ".3f")):
        if key in m and m[key] is not None:
            parts.append(f"{label} {m[key]:{fmt}}")
    return "  ".join(parts)
