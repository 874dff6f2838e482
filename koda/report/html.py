"""The one-page HTML summary: a table of runs side by side, then every plot.

The page is self-contained on purpose: the PNGs are embedded as data URIs (each also links
to its file beside the page), the CSS is inline, and there is no script or external URL,
so the page opens offline, survives being mailed or attached to an issue on its own, and
cannot leak a run's existence to a third-party server. Every run-derived string is
escaped: run names and config values come from files anyone could have written.
"""

from __future__ import annotations

import base64
import datetime
from html import escape

from koda.report.plots import COLORS
from koda.report.runs import Run
from koda.report.summary import Rows

STYLE = """
body { font: 14px/1.45 system-ui, -apple-system, "Segoe UI", sans-serif; margin: 2em auto; max-width: 1100px;
       padding: 0 1em; color: #222; }
h1 { font-size: 1.5em; margin-bottom: 0.2em; } h2 { font-size: 1.2em; margin-top: 2em; }
.meta { color: #666; margin-top: 0; }
table { border-collapse: collapse; margin: 1em 0; }
th, td { border: 1px solid #ddd; padding: 0.3em 0.7em; text-align: left; vertical-align: top; }
th[scope=row] { background: #f6f6f6; font-weight: 600; white-space: nowrap; }
.swatch { display: inline-block; width: 0.9em; height: 0.9em; margin-right: 0.4em; vertical-align: -0.1em; }
figure { margin: 1.5em 0; } figure img { max-width: 100%; border: 1px solid #eee; }
figcaption { color: #444; margin-top: 0.3em; }
.warn { color: #8a4b00; } nav a { margin-right: 1em; white-space: nowrap; }
"""


def _table(runs: list[Run], summaries: list[Rows]) -> str:
    """Rows are the union of every run's labels, in first-seen order; a gap is a dash."""
    labels: list[str] = []
    for rows in summaries:
        labels += [label for label, _ in rows if label not in labels]
    head = "".join(f'<th scope="col"><span class="swatch" style="background:{COLORS[i % len(COLORS)]}"></span>'
                   f"{escape(run.name)}</th>" for i, run in enumerate(runs))
    body = [f'<tr><th scope="row">directory</th>{"".join(f"<td>{escape(str(r.path))}</td>" for r in runs)}</tr>']
    for label in labels:
        cells = "".join(f"<td>{escape(dict(rows).get(label, '-'))}</td>" for rows in summaries)
        body.append(f'<tr><th scope="row">{escape(label)}</th>{cells}</tr>')
    return f'<table><tr><th scope="col">run</th>{head}</tr>\n' + "\n".join(body) + "</table>"


def _warnings(runs: list[Run]) -> str:
    items = [f"<li><b>{escape(run.name)}</b>: {escape(w)}</li>" for run in runs for w in run.warnings]
    return f'<h2>Warnings</h2><ul class="warn">{"".join(items)}</ul>' if items else ""


def _figure(name: str, title: str, png: bytes) -> str:
    data = base64.b64encode(png).decode("ascii")
    file = escape(f"{name}.png")
    return (f'<figure id="{escape(name)}"><a href="{file}"><img alt="{escape(title)}" '
            f'src="data:image/png;base64,{data}"></a>'
            f'<figcaption>{escape(title)} (<a href="{file}">{file}</a>)</figcaption></figure>')


def render(runs: list[Run], summaries: list[Rows], images: list[tuple[str, str, bytes]]) -> str:
    """The page for `runs` (their summaries in the same order) and `images`: (name, title, PNG)."""
    names = ", ".join(run.name for run in runs)
    title = f"KODA run report: {names}" if len(runs) == 1 else f"KODA run comparison: {names}"
    generated = datetime.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z")
    nav = "".join(f'<a href="#{escape(name)}">{escape(plot_title)}</a>' for name, plot_title, _ in images)
    figures = "\n".join(_figure(*image) for image in images) or "<p>No metric to plot.</p>"
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{escape(title)}</title><style>{STYLE}</style></head>
<body>
<h1>{escape(title)}</h1>
<p class="meta">Written by <code>koda report</code> on {escape(generated)} from each run's
<code>metrics.jsonl</code>, <code>config.json</code> and <code>ds_config.json</code>.</p>
<h2>Summary</h2>
{_table(runs, summaries)}
{_warnings(runs)}
<h2>Plots</h2>
<nav>{nav}</nav>
{figures}
</body></html>
"""
