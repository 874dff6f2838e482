"""Run reports: PNG plots and a one-page HTML summary from runs' metrics files.

For people who do not use W&B (which stays the live dashboard): ``runs`` reads a run
directory, ``summary`` picks the headline numbers, ``plots`` draws, ``html`` lays out the
page and ``build`` writes it all; ``cli`` is ``koda report``.
"""

from koda.report.build import write_report

__all__ = ["write_report"]
