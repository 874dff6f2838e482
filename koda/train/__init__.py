"""The ``koda train`` command: validates a run, starts the ranks, runs the chosen stage on each."""
