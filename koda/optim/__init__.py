"""Optimizers: the K-FAC preconditioner (layers, factors, schedule), Muon, and their config section."""

from koda.optim.config import KFACConfig, MuonConfig, OptimizerConfig
from koda.optim.kfac import KFACPreconditioner, ParamGrads

__all__ = ["KFACConfig", "KFACPreconditioner", "MuonConfig", "OptimizerConfig", "ParamGrads"]
