"""Scaling laws: (compute, loss) points from runs, a piecewise power-law fit, its plot."""
