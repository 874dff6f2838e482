"""The stage-neutral run layer: the one training loop, its metrics and throughput figures, and
the parts both stages share (initial weights, the router probe). A stage supplies its step."""
