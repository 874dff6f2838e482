"""The one place DeepSpeed engines are built, and the handle KODA drives them through.

``build_engine`` is called once per trained network (today the actor; the critic and the
discriminator encoder of the hybrid objective will be two more calls with their own
plans), so engine construction is never copied per network. It takes a model *factory*,
not a model: under ZeRO-3 the network is constructed already partitioned
(``koda.distributed.construct``), so no rank ever holds the whole of it.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable

import torch

from koda.distributed.construct import construct, host_buffers_returned
from koda.distributed.ds_config import DeepSpeedPlan
from koda.distributed.gradients import GradientAccess, GradientTransform
from koda.errors import KodaError


class Engine:
    """A DeepSpeed engine behind the calls a KODA trainer makes.

    The wrapped ``module`` is the model after DeepSpeed's changes: AutoEP has replaced every
    MoE block by ``AutoEPMoELayer`` and ZeRO-3 has partitioned the parameters.
    """

    def __init__(self, name: str, ds_engine, plan: DeepSpeedPlan):
        self.name, self.ds, self.plan = name, ds_engine, plan
        self.transforms: list[GradientTransform] = []
        self._grads: GradientAccess | None = None
        self._since_boundary = 0          # micro-batches stepped since the last boundary

    @property
    def module(self) -> torch.nn.Module:
        return self.ds.module

    @property
    def device(self) -> torch.device:
        """Where the engine computes: inputs built on the CPU (loaders) must be moved here."""
        return torch.device(self.ds.device)

    def __call__(self, *args, **kwargs):
        return self.ds(*args, **kwargs)

    def train(self) -> None:
        self.ds.train()

    def eval(self) -> None:
        self.ds.eval()

    def add_gradient_transform(self, transform: GradientTransform) -> None:
        """Run `transform` at every accumulation boundary. Refused where DeepSpeed reports no
        boundary before ``step()`` (``managed_gradient_accumulation: false`` makes ``step()``
        itself the boundary), since the transform would then never run."""
        if not self.ds.managed_gradient_accumulation():
            raise KodaError(f"engine {self.name}: gradient transforms need managed_gradient_accumulation "
                            "(with it false DeepSpeed reports no accumulation boundary before step())")
        self.transforms.append(transform)

    def backward(self, loss: torch.Tensor) -> None:
        """Backward of one micro-batch; DeepSpeed scales by 1/gradient_accumulation_steps."""
        self.ds.backward(loss)

    def step(self) -> bool:
        """End of a micro-batch: at an accumulation boundary run the gradient transforms,
        then let DeepSpeed clip and step. Returns True when an optimizer step happened."""
        boundary = self.ds.is_gradient_accumulation_boundary()
        self._since_boundary = 0 if boundary else self._since_boundary + 1
        accumulation = self.ds.gradient_accumulation_steps()
        if self.transforms and self._since_boundary >= accumulation:
            # e.g. set_gradient_accumulation_boundary(False) left on: the step would go on
            # accumulating and the transforms would be skipped without a word.
            raise KodaError(f"engine {self.name}: {self._since_boundary} micro-batches without a gradient "
                            f"accumulation boundary (gradient_accumulation_steps {accumulation}); "
                            "its gradient transforms would never run")
        if boundary and self.transforms:
            if self._grads is None:
                self._grads = GradientAccess(self.module)
            for transform in self.transforms:
                transform(self._grads)
        self.ds.step()
        return boundary

    def gradients(self) -> GradientAccess:
        """The gradients between backward and step, by the engine module's parameter names."""
        if self._grads is None:
            self._grads = GradientAccess(self.module)
        return self._grads

    def discard_gradients(self) -> None:
        """Forget the gradients of the backward passes since the last step without stepping (a
        diagnostic backward): ZeRO-3 reduces every micro-batch into its gradient partitions and
        copies rather than adds on the first micro-batch after ``zero_grad``."""
        self.ds.optimizer.zero_grad()

    def grad_norm(self) -> float:
        norm = self.ds.get_global_grad_norm()
        return float(norm) if norm is not None else float("nan")

    def lr(self) -> float:
        return float(self.ds.get_lr()[0])

    @property
    def global_steps(self) -> int:
        return int(self.ds.global_steps)

    @property
    def skipped_steps(self) -> int:
        """Optimizer steps DeepSpeed discarded: ZeRO-3 drops any step whose gradient norm is
        not finite (``stage3.step``), in every precision, leaving the weights untouched."""
        return int(self.ds.skipped_steps)

    def save(self, directory: str, tag: str, client_state: dict) -> None:
        self.ds.save_checkpoint(directory, tag=tag, client_state=client_state, save_latest=False)

    def load(self, directory: str, tag: str, load_optimizer: bool = True) -> dict:
        path, client_state = self.ds.load_checkpoint(directory, tag=tag, load_optimizer_states=load_optimizer,
                                                      load_lr_scheduler_states=load_optimizer)
        if path is None:
            from koda.errors import KodaError

            raise KodaError(f"checkpoint {directory}/{tag}: DeepSpeed could not load it")
        return client_state or {}


def build_engine(name: str, factory: Callable[[], torch.nn.Module], plan: DeepSpeedPlan,
                 parameters: Callable[[torch.nn.Module], object] | None = None,
                 optimizer: Callable[[object], torch.optim.Optimizer] | None = None,
                 full_build: bool = False) -> Engine:
    """Construct the network `factory` returns and wrap it with DeepSpeed under `plan`
    (see ``ds_config.resolve``).

    Seed torch before calling for reproducible weights (every rank gets rank 0's draw). `parameters`
    picks what the optimizer trains (default: every parameter); DeepSpeed builds the
    optimizer and scheduler named in the config unless `optimizer` builds a client optimizer
    from those parameters (the config then needs ``zero_allow_untested_optimizer``).
    `full_build` builds the whole network on every rank first (the path before partitioned
    construction; for comparisons only).
    """
    import deepspeed

    with contextlib.nullcontext() if full_build else host_buffers_returned():
        model = construct(name, factory, plan, full_build=full_build)
        params = parameters(model) if parameters is not None else model.parameters()
        if optimizer is not None:
            ds_engine, _, _, _ = deepspeed.initialize(model=model, optimizer=optimizer(params), config=plan.config)
        else:
            ds_engine, _, _, _ = deepspeed.initialize(model=model, model_parameters=params, config=plan.config)
    return Engine(name, ds_engine, plan)
