"""The run report's HTML (deployer/report/render.py), read without a browser:
a chart for each thing shown, drawn from the data, every run reachable, run
data escaped, nothing fetched, and small enough to mail."""

from __future__ import annotations

import base64
import builtins
import copy
import io
import re
import subprocess
import sys
from collections import Counter
from dataclasses import dataclass, field
from html.parser import HTMLParser
from typing import Any
from urllib.parse import unquote

import matplotlib
import pytest
from PIL import Image
from report_fixtures import synthetic_report

from deployer.errors import ConfigError
from deployer.report.data import (
    DeploymentInfo,
    DriftMatrix,
    FailedCheck,
    Histogram,
    MetricSeries,
    ReportData,
    RunSummary,
)
from deployer.report.render import STATUS_COLOURS, anchor, render

HOSTILE = '<script>alert("x")</script>"><img src=x onerror=alert(1)>'


@dataclass
class Outline:
    """What a browser would build from the page: its charts, ids, links and tags."""

    charts: list[str] = field(default_factory=list)  # data-chart of each figure, in order
    ids: Counter[str] = field(default_factory=Counter)
    links: list[tuple[str | None, str]] = field(default_factory=list)  # (chart, href)
    tags: Counter[str] = field(default_factory=Counter)
    attributes: list[tuple[str, str, str]] = field(default_factory=list)  # (tag, name, value)
    text: list[str] = field(default_factory=list)


class OutlineParser(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.outline = Outline()
        self.chart: str | None = None
        self.depth = 0  # figures open inside the current chart

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        attributes = {name: value or "" for name, value in attrs}
        self.outline.tags[tag] += 1
        self.outline.attributes += [(tag, name, value) for name, value in attributes.items()]
        if tag == "figure":
            if self.chart is None and "data-chart" in attributes:
                self.chart = attributes["data-chart"]
                self.outline.charts.append(self.chart)
            elif self.chart is not None:
                self.depth += 1
        if "id" in attributes:
            self.outline.ids[attributes["id"]] += 1
        for name in ("href", "xlink:href"):
            if name in attributes:
                self.outline.links.append((self.chart, attributes[name]))

    def handle_endtag(self, tag: str) -> None:
        if tag == "figure" and self.chart is not None:
            if self.depth:
                self.depth -= 1
            else:
                self.chart = None

    def handle_data(self, data: str) -> None:
        self.outline.text.append(data)


def outline(html: str) -> Outline:
    parser = OutlineParser()
    parser.feed(html)
    parser.close()
    return parser.outline


def charts(html: str, kind: str) -> list[str]:
    """The markup of each chart of ``kind``, in page order."""
    return re.findall(rf'<figure class="chart" data-chart="{kind}".*?</figure>', html, re.DOTALL)


@pytest.fixture(scope="module")
def report() -> ReportData:
    return synthetic_report(runs=100, columns=30)


@pytest.fixture(scope="module")
def html(report: ReportData) -> str:
    return render(report)


def test_there_is_a_chart_for_the_runs_each_metric_the_drift_and_each_histogram(
    report: ReportData, html: str
) -> None:
    assert Counter(outline(html).charts) == {
        "runs": 1,
        "metric": len(report.metrics),
        "drift": 1,
        "histogram": len(report.histograms),
    }
    assert len(report.metrics) == 3 and len(report.histograms) == 30


def test_every_run_has_one_detail_section(report: ReportData, html: str) -> None:
    ids = outline(html).ids
    assert all(ids[anchor(run.run_id)] == 1 for run in report.runs)


def test_every_link_leads_to_an_element_of_the_page(html: str) -> None:
    page = outline(html)
    fragments = [href for _, href in page.links if href.startswith("#")]
    assert fragments, "the page has no links"
    missing = [href for href in fragments if unquote(href[1:]) not in page.ids]
    assert missing == []


def test_each_point_of_the_runs_chart_links_to_its_run_in_its_status_colour(
    report: ReportData,
) -> None:
    changed = copy.deepcopy(report)
    changed.runs[5].duration_ms = None  # still running: it has no point
    html = render(changed)
    (chart,) = charts(html, "runs")
    points = re.findall(
        r'<a xlink:href="#([^"]+)">\s*<(?:path|use)\b[^>]*fill: (#[0-9a-f]{6})', chart
    )
    drawn = [run for run in changed.runs if run.duration_ms is not None]
    assert len(points) == len(drawn) == len(report.runs) - 1
    assert dict(points) == {anchor(run.run_id): STATUS_COLOURS[run.status] for run in drawn}
    assert "1 runs without a start time or duration are not drawn" in chart
    assert "target=" not in chart  # a point opens its run in this page, not a new window


def test_a_metric_value_outside_its_bounds_is_a_cross_linked_to_its_run(
    report: ReportData, html: str
) -> None:
    for series, chart in zip(report.metrics, charts(html, "metric"), strict=True):
        outside = [
            run_id
            for run_id, value in zip(series.run_ids, series.values, strict=True)
            if value is not None
            and (
                (series.lower is not None and value < series.lower)
                or (series.upper is not None and value > series.upper)
            )
        ]
        assert outside, f"the fixture has no value outside the bounds of {series.name}"
        linked = re.findall(r'<a xlink:href="#([^"]+)">', chart)
        assert linked == [anchor(run_id) for run_id in outside]
        assert series.name in chart


def test_the_heatmap_has_a_pixel_per_run_and_column_in_the_colour_of_its_score(
    report: ReportData, html: str
) -> None:
    drift = report.drift
    assert drift is not None
    (chart,) = charts(html, "drift")
    encoded = re.search(r'xlink:href="data:image/png;base64,\s*([A-Za-z0-9+/=\s]+)"', chart)
    assert encoded is not None
    image = Image.open(io.BytesIO(base64.b64decode(encoded.group(1)))).convert("RGBA")
    # Runs left to right, columns top to bottom.
    assert image.size == (len(drift.run_ids), len(drift.columns))
    colours = matplotlib.colormaps["YlOrRd"]
    missing = 0
    for run, row in enumerate(drift.scores):
        for column, score in enumerate(row):
            pixel = image.getpixel((run, column))
            if score is None:
                missing += 1
                assert pixel == (0xEC, 0xEC, 0xEC, 255)
            else:
                expected = [round(255 * channel) for channel in colours(score)]
                assert max(abs(a - b) for a, b in zip(pixel, expected, strict=True)) <= 2
    assert missing, "the fixture has no column that was not profiled"
    drifted = sum(verdict == "drift" for row in drift.verdicts for verdict in row)
    assert drifted, "the fixture has no drifted cell"


def test_histograms_are_offered_most_drifted_first_and_only_the_first_is_shown(
    report: ReportData, html: str
) -> None:
    options = re.findall(r'<option value="(\d+)">([^<]*)</option>', html)
    assert [int(value) for value, _ in options] == list(range(len(report.histograms)))
    assert [label.split(" (")[0] for _, label in options] == [
        histogram.column for histogram in report.histograms
    ]
    shown = [
        chart for chart in charts(html, "histogram") if " hidden>" not in chart.split("<svg")[0]
    ]
    assert len(shown) == 1 and report.histograms[0].column in shown[0]


def test_run_data_is_escaped_everywhere() -> None:
    report = synthetic_report(runs=12, columns=4)
    run = report.runs[-1]
    run.run_id = HOSTILE
    run.error_type, run.error_message, run.traceback = HOSTILE, HOSTILE, HOSTILE
    run.reasons = [HOSTILE]
    run.failed_checks = [FailedCheck(HOSTILE, HOSTILE, HOSTILE)]
    run.metrics = {HOSTILE: 1.0}
    run.schema_changes = [HOSTILE]
    run.sample = [{HOSTILE: HOSTILE}]
    run.trigger = HOSTILE
    run.status = HOSTILE
    report.name = report.output = HOSTILE
    report.metrics[0].name = HOSTILE
    report.metrics[0].run_ids[-1] = HOSTILE
    assert report.drift is not None
    report.drift.columns[0] = HOSTILE
    report.drift.schema_changes.append((0, 0, HOSTILE))
    report.histograms[0].column = HOSTILE
    report.histograms[0].labels[0] = HOSTILE
    report.deployment = DeploymentInfo(HOSTILE, [HOSTILE], HOSTILE, HOSTILE, HOSTILE, HOSTILE)

    html = render(report)
    page = outline(html)

    assert page.tags["script"] == 1  # the page's own
    assert page.tags["img"] == 0
    assert [attribute for attribute in page.attributes if attribute[1].startswith("on")] == []
    # Shown as text, not dropped: in the page and in the charts' SVG.
    assert "".join(page.text).count(HOSTILE) >= 15
    for kind in ("runs", "metric", "drift", "histogram"):
        assert any("&lt;script&gt;" in chart for chart in charts(html, kind)), kind
    # And the hostile run is still reachable from its point and its row.
    assert page.ids[anchor(HOSTILE)] == 1
    assert [href for _, href in page.links if unquote(href[1:]) == anchor(HOSTILE)]


def test_dollars_in_names_are_text_not_mathtext() -> None:
    report = synthetic_report(runs=6, columns=3)
    report.metrics[0].name = r"cost in $ per $\frac{row"  # not valid mathtext
    html = render(report)
    assert r"cost in $ per $\frac{row" in charts(html, "metric")[0]


def test_nothing_is_fetched_every_reference_is_in_the_page(html: str) -> None:
    page = outline(html)
    assert page.tags["link"] == page.tags["img"] == page.tags["iframe"] == 0
    assert [value for tag, name, value in page.attributes if name == "src"] == []
    references = [href for _, href in page.links]
    assert [href for href in references if not href.startswith(("#", "data:image/png"))] == []
    assert 'http-equiv="Content-Security-Policy" content="default-src \'none\'' in html


def test_500_runs_by_30_columns_stay_under_2_mb() -> None:
    html = render(synthetic_report(runs=500, columns=30))
    size = len(html.encode())
    assert size < 2_000_000, f"{size:,} bytes"


def test_a_long_traceback_keeps_its_end() -> None:
    report = synthetic_report(runs=3, columns=2)
    report.runs[-1].traceback = "frame\n" * 5000 + "ValueError: the last line"
    html = render(report)
    assert "ValueError: the last line" in html
    assert "characters left out" in html
    assert html.count("frame\n") < 1100


def test_a_function_without_deployment_runs_or_profiles_still_has_a_report() -> None:
    empty = ReportData(
        name="never-ran",
        output="/tmp/store",
        generated_at="2024-05-01T00:00:00Z",
        runs=[],
        metrics=[],
        drift=None,
        histograms=[],
        deployment=None,
    )
    html = render(empty)
    assert outline(html).charts == []
    assert "Not deployed" in html and "No runs yet" in html and "No profiles yet" in html


def test_a_metric_without_values_and_a_histogram_without_reference_are_drawn() -> None:
    run = RunSummary("r1", "failed", "manual", "2024-05-01T06:00:00", None, None, None, "abc")
    report = ReportData(
        name="f",
        output="/tmp/store",
        generated_at="2024-05-01T07:00:00Z",
        runs=[run],
        metrics=[MetricSeries("auc", ["r1"], [run.started], [None], lower=0.7)],
        drift=DriftMatrix(["r1"], ["output.label"], [[None]], [[None]]),
        histograms=[Histogram("output.label", "categorical", ["a", "b"], [0.5, 0.5], None)],
        deployment=None,
    )
    html = render(report)
    assert Counter(outline(html).charts) == {"runs": 1, "metric": 1, "drift": 1, "histogram": 1}
    assert "no values" in charts(html, "metric")[0]


def test_rendering_is_deterministic(report: ReportData, html: str) -> None:
    assert render(report) == html


def test_matplotlib_missing_is_a_config_error(
    report: ReportData, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_import = builtins.__import__

    def without_matplotlib(name: str, *args: Any, **kwargs: Any) -> Any:
        if name == "matplotlib" or name.startswith("matplotlib."):
            raise ModuleNotFoundError(f"No module named {name!r}")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", without_matplotlib)
    with pytest.raises(ConfigError, match=r"pip install 'deployer\[report\]'"):
        render(report)


def test_rendering_leaves_the_callers_matplotlib_alone(report: ReportData) -> None:
    importing = subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys, deployer.report.render; print('matplotlib' in sys.modules)",
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    assert importing.stdout.strip() == "False"
    backend, settings = matplotlib.get_backend(), dict(matplotlib.rcParams)
    render(synthetic_report(runs=5, columns=3))
    assert matplotlib.get_backend() == backend
    assert dict(matplotlib.rcParams) == settings
