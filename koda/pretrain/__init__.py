"""Pre-training: cross-entropy on the corpus (plus MoE balancing, isometry, DFA), one stage of the run loop."""
