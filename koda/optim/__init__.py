"""Optimizers: the K-FAC preconditioner (layers, factors, schedule) and its config section."""

from koda.optim.config import KFACConfig, OptimizerConfig
from koda.optim.kfac import KFACPreconditioner, ParamGrads

__all__ = ["KFACConfig", "KFACPreconditioner", "OptimizerConfig", "ParamGrads"]
