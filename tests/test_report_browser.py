"""The run report in a real browser (headless Chromium, tests/browser.py): it
opens from a file with no network, draws every chart, its links and column
chooser work, and it prints."""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path
from typing import Any

import pytest
from browser import ReportPage, browser, page
from report_fixtures import synthetic_report

from deployer.report.data import ReportData
from deployer.report.render import anchor, render

pytestmark = pytest.mark.slow
# pytest finds fixtures by their names in this module.
BROWSER_FIXTURES = (browser, page)

HOSTILE = '<script>alert("x")</script><img src=x onerror=alert(1)>'


@pytest.fixture(scope="module")
def report() -> ReportData:
    return synthetic_report(runs=100, columns=30)


@pytest.fixture(scope="module")
def report_url(report: ReportData, tmp_path_factory: pytest.TempPathFactory) -> str:
    path = tmp_path_factory.mktemp("report") / "churn-scores.html"
    path.write_text(render(report), encoding="utf-8")
    return path.as_uri()


def opened(page: ReportPage, url: str) -> ReportPage:
    page.page.goto(url, wait_until="load")
    return page


def test_the_report_opens_offline_without_errors(page: ReportPage, report_url: str) -> None:
    opened(page, report_url)
    journal = page.journal
    assert journal.console_errors == []
    assert journal.page_errors == []
    assert journal.failed_requests == []
    # data: URLs (the heatmap's PNG) are in the page; anything else would be fetched.
    fetched = [url for url in journal.other_requests(report_url) if not url.startswith("data:")]
    assert fetched == []
    assert journal.requests[0] == report_url


MEASURE_CHARTS = """
async () => {
  const charts = [];
  for (const figure of document.querySelectorAll("figure.chart")) {
    const hidden = figure.hidden;
    figure.hidden = false;  // measure the histograms the chooser hides, too
    const svg = figure.querySelector(":scope > svg");
    const box = svg ? svg.getBBox() : { width: 0, height: 0 };
    const images = [];
    for (const image of figure.querySelectorAll("svg image, img")) {
      const loaded = new Image();
      loaded.src = image.getAttribute("href") || image.getAttribute("xlink:href") || image.src;
      await loaded.decode();
      images.push(loaded.naturalWidth);
    }
    charts.push({
      kind: figure.dataset.chart,
      drawn: svg ? svg.querySelectorAll("path, use, image, text").length : 0,
      box: [box.width, box.height],
      figureWidth: figure.getBoundingClientRect().width,
      svgWidth: svg ? svg.getBoundingClientRect().width : 0,
      svgHeight: svg ? svg.getBoundingClientRect().height : 0,
      images,
    });
    figure.hidden = hidden;
  }
  return charts;
}
"""


def test_every_chart_is_drawn_and_fits_the_window(
    page: ReportPage, report_url: str, report: ReportData
) -> None:
    opened(page, report_url)
    charts: list[dict[str, Any]] = page.page.evaluate(MEASURE_CHARTS)

    assert [chart["kind"] for chart in charts].count("histogram") == len(report.histograms)
    assert len(charts) == 1 + len(report.metrics) + 1 + len(report.histograms)
    for chart in charts:
        assert chart["drawn"] > 20, chart
        assert chart["box"][0] > 100 and chart["box"][1] > 50, chart
        # Scaled to its container, keeping its proportions.
        assert abs(chart["svgWidth"] - chart["figureWidth"]) <= 1, chart
        assert chart["svgHeight"] > 0.2 * chart["svgWidth"], chart
        assert all(width > 0 for width in chart["images"]), chart
    (drift,) = [chart for chart in charts if chart["kind"] == "drift"]
    assert report.drift is not None
    # The heatmap is a PNG of a pixel per run (the drift dots are another).
    assert drift["images"][0] == len(report.drift.run_ids)
    scroll_width = page.page.evaluate("document.documentElement.scrollWidth")
    assert scroll_width <= 1280, "the page scrolls sideways at 1280 px"


FIND_CLICKABLE_POINT = """
() => {
  const points = [...document.querySelectorAll('figure[data-chart="runs"] svg a')];
  // One from the middle whose centre is not covered by another point.
  for (const point of points.slice(Math.floor(points.length / 2))) {
    const box = point.getBoundingClientRect();
    const x = box.x + box.width / 2, y = box.y + box.height / 2;
    if (document.elementFromPoint(x, y)?.closest("a") === point) {
      return { x, y, href: point.getAttribute("xlink:href") };
    }
  }
  return null;
}
"""

WHERE_AM_I = """
() => {
  const target = document.querySelector(":target");
  return {
    hash: location.hash,
    target: target && target.id,
    top: target && target.getBoundingClientRect().top,
    bottom: target && target.getBoundingClientRect().bottom,
  };
}
"""


def assert_shows_run(page: ReportPage, href: str) -> None:
    where = page.page.evaluate(WHERE_AM_I)
    assert where["hash"] == href
    assert where["target"] == href[1:]
    assert where["target"].startswith("run-")
    # Scrolled to it: the section's top is in the window, below the sticky nav.
    assert 0 <= where["top"] < 800, where
    assert len(page.page.context.pages) == 1, "the link opened another window"


def test_a_point_of_the_runs_chart_opens_that_runs_details(
    page: ReportPage, report_url: str
) -> None:
    opened(page, report_url)
    page.page.locator('figure[data-chart="runs"]').scroll_into_view_if_needed()
    point = page.page.evaluate(FIND_CLICKABLE_POINT)
    assert point is not None, "every point of the runs chart is covered by another"
    assert point["href"].startswith("#run-")

    page.page.mouse.click(point["x"], point["y"])
    page.page.wait_for_function("location.hash !== ''")

    assert_shows_run(page, point["href"])


def test_a_run_in_the_runs_table_opens_its_details(
    page: ReportPage, report_url: str, report: ReportData
) -> None:
    opened(page, report_url)
    run = report.runs[-20]  # newest first: the 20th row
    page.page.locator(".table-scroll a", has_text=run.run_id).click()
    page.page.wait_for_function("location.hash !== ''")

    assert_shows_run(page, f"#{anchor(run.run_id)}")


VISIBLE_HISTOGRAMS = """
() => [...document.querySelectorAll('figure[data-chart="histogram"]')]
  .filter((figure) => figure.getBoundingClientRect().height > 0)
  .map((figure) => figure.querySelector("svg").textContent)
"""


def test_the_column_chooser_switches_the_histogram(
    page: ReportPage, report_url: str, report: ReportData
) -> None:
    opened(page, report_url)
    (first,) = page.page.evaluate(VISIBLE_HISTOGRAMS)
    assert report.histograms[0].column in first

    chooser = page.page.locator("#histogram-column")
    for index in (3, len(report.histograms) - 1, 0):
        chooser.select_option(str(index))
        (shown,) = page.page.evaluate(VISIBLE_HISTOGRAMS)
        assert report.histograms[index].column in shown
    assert page.journal.console_errors == page.journal.page_errors == []


def test_the_report_prints(page: ReportPage, report_url: str, report: ReportData) -> None:
    opened(page, report_url)
    page.page.locator("#histogram-column").select_option("2")
    page.page.emulate_media(media="print")
    printed = page.page.evaluate(
        """() => ({
          nav: getComputedStyle(document.querySelector("nav")).display,
          table: getComputedStyle(document.querySelector(".table-scroll")).maxHeight,
          histograms: [...document.querySelectorAll('figure[data-chart="histogram"]')]
            .filter((figure) => figure.getBoundingClientRect().height > 0)
            .map((figure) => figure.dataset.index),
        })"""
    )
    assert printed == {"nav": "none", "table": "none", "histograms": ["2"]}

    pdf = page.page.pdf(format="A4", print_background=True)

    assert pdf.startswith(b"%PDF")
    pages = len(re.findall(rb"/Type\s*/Page\b(?!s)", pdf))
    assert pages > 5, f"{pages} pages"
    assert len(pdf) > 100_000


def test_a_screenshot_of_the_report(page: ReportPage, report_url: str, tmp_path: Path) -> None:
    """For people: the charts part of the page as a PNG (in tmp_path, and at
    $DEPLOYER_REPORT_SCREENSHOT when it is set)."""
    opened(page, report_url)
    details_top = page.page.evaluate("document.getElementById('details').offsetTop")
    screenshot = tmp_path / "report.png"
    page.page.screenshot(
        path=screenshot,
        full_page=True,
        clip={"x": 0, "y": 0, "width": 1280, "height": details_top + 600},
    )
    assert screenshot.read_bytes().startswith(b"\x89PNG")
    assert screenshot.stat().st_size > 50_000
    if destination := os.environ.get("DEPLOYER_REPORT_SCREENSHOT"):
        shutil.copyfile(screenshot, destination)


def test_hostile_run_data_runs_no_script(page: ReportPage, tmp_path: Path) -> None:
    report = synthetic_report(runs=10, columns=4)
    report.name = HOSTILE
    report.runs[-1].error_message = HOSTILE
    report.runs[-1].traceback = HOSTILE
    assert report.drift is not None
    report.drift.columns[0] = HOSTILE
    report.histograms[0].column = HOSTILE
    path = tmp_path / "hostile.html"
    path.write_text(render(report), encoding="utf-8")
    dialogs: list[str] = []
    page.page.on("dialog", lambda dialog: (dialogs.append(dialog.message), dialog.dismiss()))

    opened(page, path.as_uri())

    assert dialogs == []
    assert page.journal.console_errors == page.journal.page_errors == []
    assert page.page.locator("h1").inner_text() == HOSTILE
    assert page.page.locator("img").count() == 0


def test_the_served_report_signs_a_browser_in_then_shows_it(
    page: ReportPage, deployer_home: Path, tmp_path: Path
) -> None:
    from test_report import deploy_with_history

    from deployer.providers.local.server import LocalServer

    deploy_with_history()
    lines: list[str] = []
    server = LocalServer(port=0, log=lines.append)
    server.start()
    try:
        base = f"http://127.0.0.1:{server.port}"
        # No session: the sign-in form, and not a byte of the report.
        response = page.page.goto(f"{base}/functions/scored")
        assert response is not None and response.status == 401
        assert page.page.locator("input[name=token]").count() == 1
        assert page.page.locator("figure.chart").count() == 0
        assert page.journal.console_errors == [
            "Failed to load resource: the server responded with a status of 401 (Unauthorized)"
        ]
        page.journal.console_errors.clear()
        # Signing in with the token, as a person would, lands on the report asked for.
        page.page.fill("input[name=token]", server.token)
        page.page.click("button[type=submit]")
        page.page.wait_for_url(f"{base}/functions/scored")
        assert page.page.locator("figure.chart").count() >= 4
        assert page.page.locator('section[id^="run-"]').count() == 5
        # The index lists the function with its last status and links to it.
        page.page.goto(f"{base}/")
        page.page.click("text=scored")
        page.page.wait_for_url(f"{base}/functions/scored")
        assert page.journal.console_errors == [] and page.journal.page_errors == []
        page.page.screenshot(path=str(tmp_path / "served.png"), full_page=True)
        if os.environ.get("DEPLOYER_REPORT_SCREENSHOT"):
            shutil.copy(tmp_path / "served.png", os.environ["DEPLOYER_REPORT_SCREENSHOT"])
    finally:
        server.stop()
    assert server.token not in "\n".join(lines)
