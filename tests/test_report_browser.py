"""report.html in a real browser, offline: headless Chromium loads the file, a script clicks
the per-question table's 'panel score' header and picks an arm in its filter, and the DOM it
dumps shows the rows sorted and filtered. Skips where no Chromium is installed (.ci/run
installs Debian's)."""

import html
import json
import re
import shutil
import subprocess

import pytest

from localnova.report.collect import collect_run
from localnova.report.render import write_report
from test_report import build_study

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--no-first-run"]

DRIVER = """<script>
var table = document.querySelector('table.datatable');
var headers = Array.prototype.slice.call(table.tHead.rows[0].cells).map(function (th) { return th.textContent; });
var scoreColumn = headers.indexOf('panel score'), armColumn = headers.indexOf('arm');
function column(index) {
  return Array.prototype.filter.call(table.tBodies[0].rows, function (row) { return row.style.display !== 'none'; })
    .map(function (row) { return row.cells[index].textContent; });
}
document.body.setAttribute('data-before', JSON.stringify(column(scoreColumn)));
table.tHead.rows[0].cells[scoreColumn].click();
document.body.setAttribute('data-ascending', JSON.stringify(column(scoreColumn)));
table.tHead.rows[0].cells[scoreColumn].click();
document.body.setAttribute('data-descending', JSON.stringify(column(scoreColumn)));
var select = table.previousElementSibling.querySelector('select[aria-label=arm]');
select.value = 'rag';
select.dispatchEvent(new Event('change'));
document.body.setAttribute('data-arms', JSON.stringify(column(armColumn)));
</script>"""


def _attribute(dom: str, name: str) -> list[str]:
    found = re.search(rf'{name}="([^"]*)"', dom)
    assert found, f"{name} not in the dumped DOM: the script did not run"
    return json.loads(html.unescape(found.group(1)))


@pytest.mark.skipif(CHROMIUM is None, reason="no chromium here (apt-get install chromium)")
def test_the_per_question_table_sorts_and_filters_in_a_headless_browser(tmp_path):
    build_study(tmp_path / "study", "browser-demo")
    _, html_path = write_report([collect_run(tmp_path / "study")], tmp_path / "out")
    page = html_path.read_text(encoding="utf-8")
    driven = tmp_path / "driven.html"
    driven.write_text(page.replace("</body></html>", DRIVER + "</body></html>"), encoding="utf-8")
    dom = subprocess.run(
        [CHROMIUM, *FLAGS, "--virtual-time-budget=5000", "--dump-dom", driven.as_uri()],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    ).stdout

    def scores(values):
        return [float(value) if value else -1.0 for value in values]  # a question no headline judge scored sorts first

    before = _attribute(dom, "data-before")
    ascending, descending = scores(_attribute(dom, "data-ascending")), scores(_attribute(dom, "data-descending"))
    assert len(before) == len(ascending) == 2 * 2 * 6  # two models x two arms x six questions
    assert ascending == sorted(scores(before)) and descending == sorted(scores(before), reverse=True)
    assert ascending != scores(before)  # the click changed the order: the table was not already sorted
    arms = _attribute(dom, "data-arms")
    assert arms == ["rag"] * 12
