"""The run report as one HTML page: ``render(report_data(...))``.

Everything is inlined — the charts are SVG drawn by matplotlib, the styles and
the few lines of script sit in the page — so the file opens from a laptop with
no network, from an e-mail attachment or a CI artifact, and prints.

Run data is untrusted (a traceback or a column name can hold ``<script>``):
every string from it goes through ``html.escape``, matplotlib escapes what it
writes into SVG, and the page's Content-Security-Policy runs only its own
script (by hash) and fetches nothing.

Figures are made with ``matplotlib.figure.Figure``, never pyplot, so rendering
a report never changes the backend of the notebook it is called from.
"""

from __future__ import annotations

import base64
import hashlib
import html
import io
import math
import re
from collections import Counter
from collections.abc import Iterator, Sequence
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any, Literal
from urllib.parse import quote

from deployer.errors import ConfigError
from deployer.report.data import (
    STATUSES,
    DeploymentInfo,
    DriftMatrix,
    Histogram,
    MetricSeries,
    ReportData,
    RunSummary,
)
from deployer.tables import format_value

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure
    from matplotlib.lines import Line2D
    from matplotlib.typing import RcKeyType

STATUS_COLOURS = {
    "succeeded": "#2e7d32",
    "warned": "#f2a900",
    "check_failed": "#e8590c",
    "failed": "#c62828",
}
OTHER_STATUS_COLOUR = "#8a8a8a"  # running, lost
TRIGGER_MARKERS = {"schedule": "o", "http": "s", "manual": "^", "map": "D"}
OTHER_TRIGGER_MARKER = "P"

# What a run's detail section shows at most: a traceback is kept from its end
# (where the error is), the sample is a glance, not the output.
TRACEBACK_CHARACTERS = 6000
MESSAGE_CHARACTERS = 2000
SAMPLE_ROWS = 10
SAMPLE_COLUMNS = 12
CELL_CHARACTERS = 60
# A metric chart marks each value up to this many values.
MARKED_POINTS = 120
# Column names are cut in charts so a long one does not squeeze the plot.
CHART_LABEL_CHARACTERS = 40

MATPLOTLIB_STYLE: dict[RcKeyType, Any] = {
    # Text stays text: the SVG is smaller and the browser draws it crisply.
    "svg.fonttype": "none",
    "font.size": 9,
    "font.family": "sans-serif",
    "font.sans-serif": ["DejaVu Sans", "Arial"],
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.grid": True,
    "grid.color": "#e6e6e6",
    "grid.linewidth": 0.6,
    "legend.frameon": False,
}

# Switches the visible histogram; data-index is the option's value, so no
# column name (untrusted) ever reaches a selector.
SCRIPT = """
const chooser = document.getElementById("histogram-column");
function showHistogram() {
  for (const figure of document.querySelectorAll('figure[data-chart="histogram"]')) {
    figure.hidden = figure.dataset.index !== chooser.value;
  }
}
if (chooser) {
  chooser.addEventListener("change", showHistogram);
  showHistogram();
}
"""

STYLE = """
:root { --ink: #1d1d1f; --muted: #666; --line: #ddd; --paper: #fff; }
* { box-sizing: border-box; }
body { margin: 0; font: 14px/1.45 system-ui, -apple-system, "Segoe UI", sans-serif;
  color: var(--ink); background: var(--paper); }
header, main { max-width: 1200px; margin: 0 auto; padding: 0 20px; }
header h1 { margin: 18px 0 2px; font-size: 24px; }
header p { margin: 0 0 6px; color: var(--muted); }
nav { position: sticky; top: 0; z-index: 1; background: var(--paper);
  border-bottom: 1px solid var(--line); padding: 6px 20px; }
nav a { margin-right: 16px; }
h2 { margin: 28px 0 8px; font-size: 19px; border-bottom: 1px solid var(--line); }
h3 { margin: 0 0 4px; font-size: 15px; }
a { color: #0b57d0; text-decoration: none; }
a:hover { text-decoration: underline; }
section, .run { scroll-margin-top: 48px; }
dl.facts { display: grid; grid-template-columns: max-content 1fr; gap: 2px 16px; margin: 0; }
dl.facts dt { color: var(--muted); }
dl.facts dd { margin: 0; }
code, pre { font: 12px/1.4 ui-monospace, "DejaVu Sans Mono", monospace; }
pre { background: #f6f6f6; padding: 8px; overflow-x: auto; white-space: pre-wrap;
  word-break: break-all; margin: 4px 0; }
figure.chart { margin: 8px 0; }
figure.chart svg { display: block; width: 100%; height: auto; }
figure.chart svg text { font-family: "DejaVu Sans", Arial, sans-serif; }
figure.chart figcaption { color: var(--muted); font-size: 12px; }
figure[hidden] { display: none; }
.metrics { display: grid; grid-template-columns: repeat(auto-fit, minmax(340px, 1fr));
  gap: 8px 24px; }
figure[data-chart="histogram"] { max-width: 820px; }
table { border-collapse: collapse; font-size: 13px; }
th, td { text-align: left; padding: 2px 10px 2px 0; border-bottom: 1px solid #eee;
  vertical-align: top; }
td.number { text-align: right; font-variant-numeric: tabular-nums; }
.table-scroll { max-height: 420px; overflow-y: auto; border: 1px solid var(--line);
  padding: 0 8px; }
.table-scroll th { position: sticky; top: 0; background: var(--paper); }
.table-scroll td { white-space: nowrap; }
.table-scroll td:last-child { white-space: normal; }
.status { display: inline-block; padding: 0 6px; border-radius: 8px; color: #fff;
  font-size: 12px; background: #8a8a8a; }
/* The charts' colours; amber darker than in the charts, for white text on it. */
.status-succeeded { background: #2e7d32; } .status-warned { background: #b67f00; }
.status-check_failed { background: #e8590c; } .status-failed { background: #c62828; }
.run { border-left: 4px solid var(--line); padding: 4px 10px; margin: 10px 0; }
.run:target { border-left-color: #0b57d0; background: #eef3fd; }
.run p { margin: 2px 0; }
.run ul { margin: 2px 0; padding-left: 20px; }
.muted { color: var(--muted); }
@media print {
  nav, .table-scroll th { position: static; }
  nav { display: none; }
  .table-scroll { max-height: none; overflow: visible; border: 0; padding: 0; }
  figure.chart, .run, tr { break-inside: avoid; }
  h2, h3 { break-after: avoid; }
  body { font-size: 11px; }
  a { color: inherit; }
}
"""


def render(data: ReportData) -> str:
    """The report of ``data`` as one self-contained HTML document.

    ``html = render(report_data("churn-scores"))`` then write it to a file and
    open it in a browser; it needs no network.
    """
    try:
        import matplotlib
    except ImportError:
        raise ConfigError(
            "the report draws its charts with matplotlib: pip install 'deployer[report]'"
        ) from None
    with matplotlib.rc_context(MATPLOTLIB_STYLE):
        body = "\n".join(
            [
                _summary(data),
                _deployment(data.deployment),
                _runs(data.runs),
                _metrics(data.metrics),
                _drift(data.drift, data.runs),
                _histograms(data.histograms),
                _details(data.runs),
            ]
        )
    return _page(data, body)


def anchor(run_id: str) -> str:
    """The id of a run's detail section."""
    return f"run-{run_id}"


def link(run_id: str) -> str:
    """A link to a run's detail section (quoted: a run id is data)."""
    return "#" + quote(anchor(run_id), safe="")


# --- the page ------------------------------------------------------------


def _page(data: ReportData, body: str) -> str:
    script_hash = base64.b64encode(hashlib.sha256(SCRIPT.encode()).digest()).decode()
    # Nothing is fetched and only the page's own script runs, whatever a run's
    # data holds; the PNG inside the heatmap is a data: URL.
    policy = (
        "default-src 'none'; img-src data:; style-src 'unsafe-inline'; "
        f"script-src 'sha256-{script_hash}'"
    )
    return f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta http-equiv="Content-Security-Policy" content="{policy}">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{_text(data.name)}: run report</title>
<style>{STYLE}</style>
</head>
<body>
<header>
<h1>{_text(data.name)}</h1>
<p>{_text(data.output)} · generated {_time(data.generated_at)} · \
the last {len(data.runs)} of {max(data.total_runs, len(data.runs))} runs</p>
</header>
<nav><a href="#deployment">Deployment</a><a href="#runs">Runs</a>\
<a href="#metrics">Metrics</a><a href="#drift">Drift</a><a href="#histograms">Histograms</a>\
<a href="#details">Run details</a></nav>
<main>
{body}
</main>
<script>{SCRIPT}</script>
</body>
</html>
"""


def _summary(data: ReportData) -> str:
    counts = Counter(run.status for run in data.runs)
    order = [*STATUSES, *sorted(set(counts) - set(STATUSES))]
    parts = [f"{_status(status)} {counts[status]}" for status in order if counts[status]]
    return f'<p class="summary">{" ".join(parts) or "no runs yet"}</p>'


def _deployment(deployment: DeploymentInfo | None) -> str:
    if deployment is None:
        return (
            '<section id="deployment"><h2>Deployment</h2>'
            "<p>Not deployed: this report is read from the store only.</p></section>"
        )
    facts = {
        "provider": _text(deployment.provider),
        "triggers": "<br>".join(_text(trigger) for trigger in deployment.triggers) or "none",
        "code": f"<code>{_text(deployment.code_hash[:12])}</code>",
        "dependencies": (
            f"<code>{_text(deployment.deps_hash[:12])}</code>" if deployment.deps_hash else "—"
        ),
        "deployed at": _time(deployment.deployed_at) if deployment.deployed_at else "—",
        "url": _text(deployment.url) if deployment.url else "—",
    }
    rows = "".join(f"<dt>{name}</dt><dd>{value}</dd>" for name, value in facts.items())
    return f'<section id="deployment"><h2>Deployment</h2><dl class="facts">{rows}</dl></section>'


def _runs(runs: Sequence[RunSummary]) -> str:
    if not runs:
        return '<section id="runs"><h2>Runs</h2><p>No runs yet.</p></section>'
    left_out = sum(1 for run in runs if _point(run) is None)
    caption = "Duration of each run; click a point for the run's details."
    if left_out:
        caption += f" {left_out} runs without a start time or duration are not drawn."
    header = "<tr><th>run</th><th>status</th><th>trigger</th><th>started</th>"
    header += "<th>duration</th><th>rows</th><th>why</th></tr>"
    rows = "".join(_run_row(run) for run in reversed(runs))
    return f"""<section id="runs"><h2>Runs</h2>
<figure class="chart" data-chart="runs">{runs_chart(runs)}\
<figcaption>{caption}</figcaption></figure>
<div class="table-scroll"><table>{header}{rows}</table></div>
</section>"""


def _run_row(run: RunSummary) -> str:
    rows = _rows(run)
    return (
        f'<tr><td><a href="{link(run.run_id)}"><code>{_text(run.run_id)}</code></a></td>'
        f"<td>{_status(run.status)}</td><td>{_text(run.trigger)}</td>"
        f"<td>{_time(run.started)}</td><td class=number>{_duration(run.duration_ms)}</td>"
        f"<td class=number>{rows}</td><td>{_text(_why(run))}</td></tr>"
    )


def _metrics(series: Sequence[MetricSeries]) -> str:
    if not series:
        return '<section id="metrics"><h2>Metrics</h2><p>No metrics are computed.</p></section>'
    figures = "".join(
        f'<figure class="chart" data-chart="metric">{metric_chart(metric)}</figure>'
        for metric in series
    )
    return f"""<section id="metrics"><h2>Metrics</h2>
<p class="muted">The shaded band is a metric's bounds; a red cross is a value outside them.</p>
<div class="metrics">{figures}</div></section>"""


def _drift(drift: DriftMatrix | None, runs: Sequence[RunSummary]) -> str:
    if drift is None or not drift.run_ids or not drift.columns:
        return '<section id="drift"><h2>Drift</h2><p>No profiles yet.</p></section>'
    started = {run.run_id: run.started for run in runs}
    caption = (
        "Each column in each run against the reference (Jensen–Shannon distance): "
        "a dot is a column that drifted, a cross a schema change."
    )
    changes = "".join(
        f"<li>{_text(drift.run_ids[run_index] if run_index < len(drift.run_ids) else '?')}: "
        f"{_text(change)}</li>"
        for run_index, _, change in drift.schema_changes
    )
    listing = f"<p>Schema changes:</p><ul>{changes}</ul>" if changes else ""
    return f"""<section id="drift"><h2>Drift</h2>
<figure class="chart" data-chart="drift">{drift_chart(drift, started)}\
<figcaption>{caption}</figcaption></figure>{listing}</section>"""


def _histograms(histograms: Sequence[Histogram]) -> str:
    if not histograms:
        return '<section id="histograms"><h2>Histograms</h2><p>No profiles yet.</p></section>'
    options = "".join(
        f'<option value="{index}">{_text(histogram.column)}{_text(_verdict(histogram))}</option>'
        for index, histogram in enumerate(histograms)
    )
    figures = "".join(
        f'<figure class="chart" data-chart="histogram" data-index="{index}"'
        f"{' hidden' if index else ''}>{histogram_chart(histogram)}</figure>"
        for index, histogram in enumerate(histograms)
    )
    return f"""<section id="histograms"><h2>Histograms</h2>
<p><label>Column (the most drifted first): <select id="histogram-column" autocomplete="off">\
{options}</select></label></p>
{figures}</section>"""


def _details(runs: Sequence[RunSummary]) -> str:
    sections = "".join(_detail(run) for run in reversed(runs))
    return f'<section id="details"><h2>Run details</h2>{sections}</section>'


def _detail(run: RunSummary) -> str:
    facts = [
        _text(run.trigger),
        f"started {_time(run.started)}",
        _duration(run.duration_ms),
        f"rows {_rows(run)}",
        f"code <code>{_text(run.code_hash[:12])}</code>",
    ]
    parts = [
        f'<section class="run" id="{_text(anchor(run.run_id))}">'
        f'<h3><a href="{link(run.run_id)}"><code>{_text(run.run_id)}</code></a> '
        f"{_status(run.status)}</h3>",
        f"<p>{' · '.join(facts)}</p>",
    ]
    if run.error_type or run.error_message:
        message = _cut(run.error_message or "", MESSAGE_CHARACTERS)
        parts.append(f"<p><b>{_text(run.error_type or 'error')}</b>: {_text(message)}</p>")
    if run.reasons:
        parts.append(_list(run.reasons))
    if run.failed_checks:
        checks = "".join(
            f"<tr><td>{_text(check.name)}</td><td>{_text(check.severity)}</td>"
            f"<td>{_text(check.error or 'returned false')}</td></tr>"
            for check in run.failed_checks
        )
        parts.append(
            f"<table><tr><th>failed check</th><th>severity</th><th></th></tr>{checks}</table>"
        )
    if run.schema_changes:
        parts.append(_list(f"schema: {change}" for change in run.schema_changes))
    if run.metrics:
        metrics = " · ".join(
            f"{_text(name)} {_text(format_value(value)) or '—'}"
            for name, value in run.metrics.items()
        )
        parts.append(f'<p class="muted">{metrics}</p>')
    if run.traceback:
        traceback = run.traceback
        if len(traceback) > TRACEBACK_CHARACTERS:
            left_out = len(traceback) - TRACEBACK_CHARACTERS
            traceback = f"… ({left_out} characters left out)\n" + traceback[-TRACEBACK_CHARACTERS:]
        parts.append(f"<pre>{_text(traceback)}</pre>")
    if run.sample:
        parts.append(_sample(run.sample))
    parts.append("</section>")
    return "".join(parts)


def _sample(records: Sequence[dict[str, Any]]) -> str:
    columns: list[str] = []
    for record in records:
        columns.extend(str(column) for column in record if str(column) not in columns)
    shown = columns[:SAMPLE_COLUMNS]
    header = "".join(f"<th>{_text(column)}</th>" for column in shown)
    by_name = [{str(key): value for key, value in record.items()} for record in records]
    rows = "".join(
        "<tr>"
        + "".join(
            f"<td>{_text(_cut(format_value(record.get(column)), CELL_CHARACTERS))}</td>"
            for column in shown
        )
        + "</tr>"
        for record in by_name[:SAMPLE_ROWS]
    )
    more = []
    if len(columns) > len(shown):
        more.append(f"{len(columns) - len(shown)} more columns")
    if len(records) > SAMPLE_ROWS:
        more.append(f"{len(records) - SAMPLE_ROWS} more rows")
    note = f'<p class="muted">{", ".join(more)} not shown</p>' if more else ""
    table = f"<table><tr>{header}</tr>{rows}</table>"
    return f'<p class="muted">Sample of the predictions:</p>{table}{note}'


# --- the charts ----------------------------------------------------------


def runs_chart(runs: Sequence[RunSummary]) -> str:
    """Duration over start time, a marker per run: colour is its status, shape
    its trigger, and the marker links to the run's detail section. A run
    without a start time or a duration has no point."""
    figure = _figure(11, 3.4)
    axes = figure.add_subplot()
    groups: dict[tuple[str, str], list[tuple[RunSummary, tuple[float, float]]]] = {}
    for run in runs:
        if (point := _point(run)) is not None:
            groups.setdefault((run.status, run.trigger), []).append((run, point))
    for (status, trigger), members in groups.items():
        points = axes.scatter(
            [point[0] for _, point in members],
            [point[1] for _, point in members],
            s=26,
            c=_status_colour(status),
            marker=_trigger_marker(trigger),
            edgecolors="white",
            linewidths=0.5,
            zorder=3,
        )
        points.set_urls([link(run.run_id) for run, _ in members])
        # Every point is inside the axes (they fit the data); unclipped, the
        # SVG has no clip group around each of them.
        points.set_clip_on(False)
    axes.set_ylabel("duration (s)")
    axes.set_ylim(bottom=0)
    _dates(axes)
    statuses = [status for status in STATUSES if any(status == run.status for run in runs)]
    statuses += sorted({run.status for run in runs} - set(STATUSES))
    triggers = sorted({run.trigger for run in runs})
    handles = [_handle(_status_colour(status), "o") for status in statuses]
    handles += [_handle("#555555", _trigger_marker(trigger)) for trigger in triggers]
    axes.legend(
        handles,
        [_label(name) for name in [*statuses, *triggers]],
        loc="upper left",
        bbox_to_anchor=(1.0, 1.0),
    )
    return _svg(figure, "runs")


def metric_chart(series: MetricSeries) -> str:
    """A metric over time, its bounds as a band; values outside it are red
    crosses that link to their run."""
    figure = _figure(4.4, 2.4)
    axes = figure.add_subplot()
    points = [
        (day, value, run_id)
        for run_id, started, value in zip(
            series.run_ids, series.started, series.values, strict=True
        )
        if value is not None and not math.isnan(value) and (day := _day(started)) is not None
    ]
    axes.plot(
        [point[0] for point in points],
        [point[1] for point in points],
        color="#1f5fa8",
        lw=0.8,
        # Beyond this many, the markers touch: they would thicken the line
        # and the page, and show nothing more.
        marker="o" if len(points) <= MARKED_POINTS else None,
        markersize=2.5,
    )
    outside = [point for point in points if not _within(point[1], series.lower, series.upper)]
    if outside:
        crosses = axes.scatter(
            [point[0] for point in outside],
            [point[1] for point in outside],
            s=36,
            c="#c62828",
            marker="X",
            zorder=3,
        )
        crosses.set_urls([link(point[2]) for point in outside])
        crosses.set_clip_on(False)
    bottom, top = axes.get_ylim()
    for bound in (series.lower, series.upper):
        if bound is not None:
            bottom, top = min(bottom, bound), max(top, bound)
            axes.axhline(bound, color="#2e7d32", lw=0.8, ls="--")
    if series.lower is not None or series.upper is not None:
        axes.axhspan(
            series.lower if series.lower is not None else bottom,
            series.upper if series.upper is not None else top,
            color="#2e7d32",
            alpha=0.1,
            lw=0,
        )
    axes.set_ylim(bottom, top)
    title = _label(series.name)
    if series.lower is not None or series.upper is not None:
        lower = format_value(series.lower) if series.lower is not None else "−∞"
        upper = format_value(series.upper) if series.upper is not None else "∞"
        title += f"  (bounds {lower} … {upper}"
        title += f", {_label(series.severity)})" if series.severity else ")"
    axes.set_title(title, loc="left", fontsize=10)
    if not points:
        axes.text(0.5, 0.5, "no values", transform=axes.transAxes, ha="center", color="#666666")
    _dates(axes)
    return _svg(figure, f"metric-{series.name}")


def drift_matrix(drift: DriftMatrix) -> list[list[float]]:
    """The heatmap's cells, columns x runs (oldest run left): NaN where a
    column was not profiled or not comparable."""
    return [
        [math.nan if (score := row[column]) is None else float(score) for row in drift.scores]
        for column in range(len(drift.columns))
    ]


def drift_chart(drift: DriftMatrix, started: dict[str, str]) -> str:
    """Runs (x) by columns (y) coloured by drift score, with drifted cells and
    schema changes marked."""
    import matplotlib
    import numpy as np
    from matplotlib.lines import Line2D
    from matplotlib.ticker import FuncFormatter, MaxNLocator

    columns = len(drift.columns)
    figure = _figure(11, min(1.6 + 0.16 * columns, 14))
    axes = figure.add_subplot()
    axes.grid(False)
    colours = matplotlib.colormaps["YlOrRd"].with_extremes(bad="#ececec")
    cells = np.ma.masked_invalid(np.array(drift_matrix(drift), dtype=float).reshape(columns, -1))
    # "none": the SVG holds one pixel per cell, which the browser draws crisp.
    image = axes.imshow(cells, aspect="auto", interpolation="none", cmap=colours, vmin=0, vmax=1)
    drifted = [
        (run, column)
        for run, row in enumerate(drift.verdicts)
        for column, verdict in enumerate(row)
        if verdict == "drift"
    ]
    if drifted:
        dots = axes.scatter(
            [run for run, _ in drifted], [column for _, column in drifted], s=3, c="#222222", lw=0
        )
        # Hundreds of dots are smaller as pixels in the page than as shapes.
        dots.set_rasterized(True)
    if drift.schema_changes:
        axes.scatter(
            [run for run, _, _ in drift.schema_changes],
            [column for _, column, _ in drift.schema_changes],
            s=40,
            marker="x",
            c="#0b57d0",
            lw=1.6,
        )
    axes.set_yticks(range(columns), [_label(_short(column)) for column in drift.columns])
    if columns > 40:
        axes.yaxis.set_major_locator(MaxNLocator(40, integer=True))
    axes.tick_params(axis="y", labelsize=7 if columns > 20 else 8)

    def run_label(position: float, _: object) -> str:
        index = int(round(position))
        if not 0 <= index < len(drift.run_ids):
            return ""
        moment = _parse(started.get(drift.run_ids[index], ""))
        return f"{moment:%Y-%m-%d}" if moment else f"run {index + 1}"

    axes.xaxis.set_major_locator(MaxNLocator(10, integer=True))
    axes.xaxis.set_major_formatter(FuncFormatter(run_label))
    bar = figure.colorbar(image, ax=axes, fraction=0.03, pad=0.01)
    bar.set_label("drift score (JS distance)")
    markers = [
        Line2D([], [], marker="o", ls="none", color="#222222", markersize=3),
        Line2D([], [], marker="x", ls="none", color="#0b57d0", markersize=6),
    ]
    axes.legend(
        markers, ["drift", "schema change"], loc="lower left", bbox_to_anchor=(0, 1), ncols=2
    )
    return _svg(figure, "drift")


def histogram_chart(histogram: Histogram) -> str:
    """The column's latest distribution next to the reference's: steps over
    the bins of a numeric column, bars for the categories of another."""
    import numpy as np

    positions = np.arange(len(histogram.labels))
    step = max(1, math.ceil(len(histogram.labels) / 24))
    labels = [_label(_short(label)) for label in histogram.labels[::step]]
    rotate = histogram.kind == "numeric" or len(histogram.labels) > 8
    # A fixed layout, not matplotlib's constrained one: a report has a
    # histogram per column and the layout would take half of its render time.
    # The labels' room is estimated from their length (7 pt text at 45°).
    label_room = (2 + 2.8 * max(map(len, labels), default=0)) / 72 if rotate else 0.2
    height = 2.4 + label_room
    figure = _figure(8, height, layout=None)
    figure.subplots_adjust(
        left=0.08, right=0.99, top=1 - 0.3 / height, bottom=(0.2 + label_room) / height
    )
    axes = figure.add_subplot()
    axes.grid(axis="x", visible=False)
    if histogram.kind == "numeric":
        edges = np.arange(len(histogram.labels) + 1) - 0.5
        if histogram.reference is not None:
            axes.stairs(histogram.reference, edges, fill=True, color="#c9d0da", label="reference")
        axes.stairs(histogram.current, edges, color="#1f5fa8", lw=1.6, label="latest run")
    else:
        width = 0.42 if histogram.reference is not None else 0.8
        offset = width / 2 if histogram.reference is not None else 0
        axes.bar(positions - offset, histogram.current, width, color="#1f5fa8", label="latest run")
        if histogram.reference is not None:
            axes.bar(
                positions + offset, histogram.reference, width, color="#c9d0da", label="reference"
            )
    axes.set_xticks(positions[::step], labels)
    if rotate:
        axes.tick_params(axis="x", labelrotation=45, labelsize=7)
        for tick in axes.get_xticklabels():
            tick.set_horizontalalignment("right")
            tick.set_rotation_mode("anchor")
    axes.set_ylim(bottom=0)
    axes.set_ylabel("fraction of rows")
    axes.set_title(_label(histogram.column) + _label(_verdict(histogram)), loc="left", fontsize=10)
    axes.legend(loc="upper right")
    return _svg(figure, f"histogram-{histogram.column}")


def _figure(
    width: float, height: float, layout: Literal["constrained"] | None = "constrained"
) -> Figure:
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), layout=layout)


def _dates(axes: Axes) -> None:
    from matplotlib.dates import AutoDateLocator, ConciseDateFormatter

    axes.xaxis_date("UTC")
    locator = AutoDateLocator(maxticks=10)
    axes.xaxis.set_major_locator(locator)
    axes.xaxis.set_major_formatter(ConciseDateFormatter(locator))


def _handle(colour: str, marker: str) -> Line2D:
    from matplotlib.lines import Line2D

    return Line2D([], [], marker=marker, ls="none", color=colour, markersize=6)


# Only whole tags are edited: text between them is data and stays as written.
TAG = re.compile(r"<[^>]*>")
ID = re.compile(r' id="([^"]*)"')
REFERENCE = re.compile(r'(?:href="#|url\(#)([^")]+)')
# Coordinates: a hundredth of a point is finer than any screen or printer.
COORDINATES = re.compile(r' (d|x|y)="([^"]*)"')
# Text is placed by x and y; matplotlib adds a rotation even by 0 degrees.
NO_ROTATION = re.compile(r' transform="rotate\(-?0 [^"]*\)"')
ROTATION = re.compile(r' transform="rotate\(([^"]*)\)"')
DECIMAL = re.compile(r"-?\d+\.\d+")
# The page's CSS sets the charts' font once instead of in every text.
FONT_FAMILY = re.compile(r"font-family: [^;\"]*(; )?")


def _svg(figure: Figure, name: str) -> str:
    """The figure as an inline ``<svg>``: no prolog, scaled to its container,
    links opening in the page, ids unique within the page, and small."""
    import matplotlib

    buffer = io.StringIO()
    # A salt per chart makes matplotlib's ids (markers, clip paths) differ
    # between the charts of one page and stay the same from render to render.
    with matplotlib.rc_context({"svg.hashsalt": name}):
        figure.savefig(buffer, format="svg", metadata={"Date": None})
    svg = buffer.getvalue()
    svg = svg[svg.index("<svg") :]
    svg = re.sub(r"<metadata>.*?</metadata>\s*", "", svg, count=1, flags=re.DOTALL)
    referenced = set(REFERENCE.findall(svg))

    def tidy(match: re.Match[str]) -> str:
        tag = match.group(0)
        if tag.startswith("<svg "):
            # The viewBox keeps the aspect ratio; CSS sets the width.
            tag = re.sub(r' (width|height)="[^"]*"', "", tag)
            return tag.replace("<svg ", '<svg role="img" ', 1)
        # matplotlib's links open a new window; these lead to a section of the page.
        tag = tag.replace(' target="_blank"', "")
        tag = ID.sub(lambda found: found.group(0) if found.group(1) in referenced else "", tag)
        tag = FONT_FAMILY.sub("", tag)
        tag = NO_ROTATION.sub("", tag)
        tag = ROTATION.sub(lambda found: f' transform="rotate({_rounded(found.group(1))})"', tag)
        return COORDINATES.sub(lambda found: f' {found.group(1)}="{_rounded(found.group(2))}"', tag)

    return _unwrap_groups(TAG.sub(tidy, svg))


def _rounded(numbers: str) -> str:
    """Coordinates to a hundredth of a point, single-spaced."""

    def rounded(number: re.Match[str]) -> str:
        text = f"{float(number.group(0)):.2f}".rstrip("0").rstrip(".")
        return "0" if text == "-0" else text

    return " ".join(DECIMAL.sub(rounded, numbers).split())


def _unwrap_groups(svg: str) -> str:
    """Drops the ``<g>`` without attributes (left by dropping matplotlib's
    ids): they group nothing a browser needs."""
    pieces: list[str] = []
    kept: list[bool] = []  # for each open <g>: was it written?
    position = 0
    for match in re.finditer(r"<g\b[^>]*>|</g>", svg):
        pieces.append(svg[position : match.start()])
        position = match.end()
        tag = match.group(0)
        if tag == "</g>":
            if kept.pop():
                pieces.append(tag)
        elif tag == "<g>":
            kept.append(False)
        else:
            kept.append(True)
            pieces.append(tag)
    pieces.append(svg[position:])
    return re.sub(r">\s+<", ">\n<", "".join(pieces))


# --- words ---------------------------------------------------------------


def _text(value: object) -> str:
    return html.escape(str(value))


def _label(value: object) -> str:
    """A string from the data for a matplotlib text: its ``$`` are literal, not math."""
    return str(value).replace("$", r"\$")


def _short(text: str) -> str:
    return _cut(text, CHART_LABEL_CHARACTERS)


def _cut(text: str, characters: int) -> str:
    return text if len(text) <= characters else text[: characters - 1] + "…"


def _list(items: Iterator[str] | Sequence[str]) -> str:
    return "<ul>" + "".join(f"<li>{_text(item)}</li>" for item in items) + "</ul>"


def _status(status: str) -> str:
    kind = status if status in STATUSES else "other"
    return f'<span class="status status-{kind}">{_text(status)}</span>'


def _status_colour(status: str) -> str:
    return STATUS_COLOURS.get(status, OTHER_STATUS_COLOUR)


def _trigger_marker(trigger: str) -> str:
    return TRIGGER_MARKERS.get(trigger, OTHER_TRIGGER_MARKER)


def _verdict(histogram: Histogram) -> str:
    parts = []
    if histogram.js is not None:
        parts.append(f"JS {histogram.js:.3f}")
    if histogram.verdict:
        parts.append(histogram.verdict)
    return f" ({', '.join(parts)})" if parts else ""


def _why(run: RunSummary) -> str:
    if run.error_type:
        return run.error_type
    if run.failed_checks:
        return ", ".join(check.name for check in run.failed_checks)
    return run.reasons[0] if run.reasons else ""


def _rows(run: RunSummary) -> str:
    if run.rows_in is None and run.rows_out is None:
        return "—"
    rows_in = "—" if run.rows_in is None else f"{run.rows_in:,}"
    rows_out = "—" if run.rows_out is None else f"{run.rows_out:,}"
    return rows_in if rows_in == rows_out else f"{rows_in} → {rows_out}"


def _duration(milliseconds: float | None) -> str:
    if milliseconds is None:
        return "—"
    if milliseconds < 1000:
        return f"{milliseconds:.0f} ms"
    seconds = milliseconds / 1000
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, seconds = divmod(round(seconds), 60)
    return f"{minutes} min {seconds} s"


def _point(run: RunSummary) -> tuple[float, float] | None:
    """Where a run is drawn in the runs chart: (start day, duration in s)."""
    day = _day(run.started)
    if day is None or run.duration_ms is None:
        return None
    return day, run.duration_ms / 1000


def _within(value: float, lower: float | None, upper: float | None) -> bool:
    return (lower is None or value >= lower) and (upper is None or value <= upper)


def _parse(moment: str) -> datetime | None:
    """An ISO 8601 time as an aware datetime (UTC when it names no zone)."""
    try:
        # Python 3.10 does not read a "Z" suffix.
        parsed = datetime.fromisoformat(moment.replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=timezone.utc)


def _day(moment: str) -> float | None:
    """An ISO 8601 time as matplotlib's date number (days since its epoch)."""
    from matplotlib.dates import date2num

    parsed = _parse(moment)
    return None if parsed is None else float(date2num(parsed))


def _time(moment: str) -> str:
    parsed = _parse(moment)
    if parsed is None:
        return _text(moment)
    return f"{parsed.astimezone(timezone.utc):%Y-%m-%d %H:%M:%S} UTC"
