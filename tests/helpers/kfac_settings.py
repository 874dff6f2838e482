"""K-FAC's textbook settings, which the K-FAC unit, reference and equality tests are written
against: kfac-pytorch's schedule (statistics every step, inverses every 10), the KL clip 1e-3
and fp64 inverses. ``KFACConfig``'s own defaults are the benchmark's tuned ones (every 5 / 25
steps, ``update_rms`` 0.2, ``inverse_dtype`` auto), which tests name where they use them."""

from koda.optim import KFACConfig

TEXTBOOK = {"factor_update_steps": 1, "inv_update_steps": 10, "kl_clip": 1e-3, "update_rms": None,
            "inverse_dtype": "float64"}


def textbook(**overrides) -> KFACConfig:
    """KFACConfig on the textbook settings, with `overrides`."""
    return KFACConfig(**{**TEXTBOOK, **overrides})
