"""The report pages in a real browser: headless Chromium loads the page of a tiny run, study and sweep with
no console message, every image decoded (naturalWidth > 0), the required sections present, a screenshot.

Chromium is Debian's ``chromium`` package (``.ci/run`` installs it). Without it the test skips, unless
``DREAMDATA_REQUIRE_CHROMIUM=1`` (set by ``.ci/run``), where a missing browser is a failure. The page has no
script of its own; the check runs on a copy with a small script appended that, on load, writes the
images' natural widths and the section ids into the DOM, which ``--dump-dom`` prints.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from dreamdata.reports.html import write_report

CHECK_SCRIPT = """<script>
window.addEventListener("load", () => {
  const out = document.createElement("pre");
  out.id = "dreamdata-check";
  out.textContent = JSON.stringify({
    images: [...document.images].map(i => [i.getAttribute("src"), i.complete ? i.naturalWidth : 0]),
    sections: [...document.querySelectorAll("section[id]")].map(s => s.id)});
  document.body.appendChild(out);
});
</script>"""
CONSOLE = re.compile(r":CONSOLE[:(]\d+\)?\] (.*)")
REQUIRED = {"run": ["overview", "config", "curves", "metrics", "samples", "checkpoints", "reproduce"],
            "study": ["overview", "k4"], "sweep": ["results", "figures", "mosaics", "arms"]}


def chromium() -> str:
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found is None:
        message = "chromium is not installed (apt-get install chromium; .ci/run installs it)"
        if os.environ.get("DREAMDATA_REQUIRE_CHROMIUM") == "1":
            pytest.fail(f"DREAMDATA_REQUIRE_CHROMIUM=1 but {message}")
        pytest.skip(message)
    return found


def browse(browser: str, page: Path, profile: Path, *arguments: str) -> subprocess.CompletedProcess:
    command = [browser, "--headless=new", "--no-sandbox", "--disable-gpu", f"--user-data-dir={profile}",
               "--enable-logging=stderr", "--v=0", "--virtual-time-budget=5000", *arguments, page.resolve().as_uri()]
    return subprocess.run(command, capture_output=True, text=True, timeout=120)


def check_page(browser: str, page: Path, profile: Path) -> tuple[dict, list[str]]:
    """``(what the check script found, console messages)`` for ``page``, loaded from a checking copy beside it
    (so its relative image paths resolve the same)."""
    checking = page.with_name(f".check-{page.name}")
    checking.write_text(page.read_text().replace("</body>", CHECK_SCRIPT + "\n</body>"))
    try:
        result = browse(browser, checking, profile, "--dump-dom")
    finally:
        checking.unlink()
    found = re.search(r'<pre id="dreamdata-check">(.*?)</pre>', result.stdout, re.S)
    assert found, f"the check script did not run: {result.stderr[-2000:]}"
    console = [match.group(1) for match in map(CONSOLE.search, result.stderr.splitlines()) if match]
    return json.loads(found.group(1).replace("&quot;", '"').replace("&amp;", "&")), console


def test_the_check_sees_console_errors_and_broken_images(tmp_path):
    """The check itself: a page with a console error and an image that does not exist fails both tests."""
    browser = chromium()
    page = tmp_path / "broken.html"
    page.write_text('<!DOCTYPE html><html><body><section id="a"></section><img src="absent.png">'
                    '<script>console.error("boom")</script></body></html>')
    found, console = check_page(browser, page, tmp_path / "profile")
    assert found["images"] == [["absent.png", 0]] and found["sections"] == ["a"]
    assert any("boom" in line for line in console)


@pytest.mark.parametrize("kind", ["run", "study", "sweep"])
def test_report_renders_in_chromium(report_dirs, kind, tmp_path):
    browser = chromium()
    page = write_report(report_dirs[kind])
    found, console = check_page(browser, page, tmp_path / "profile")
    assert console == [], f"console messages: {console}"
    assert found["images"], "the page shows no image"
    assert [src for src, width in found["images"] if width <= 0] == [], "images that did not load"
    assert set(REQUIRED[kind]) <= set(found["sections"]), found["sections"]
    screenshot = tmp_path / f"{kind}.png"
    browse(browser, page, tmp_path / "profile", f"--screenshot={screenshot}", "--window-size=1280,2000",
           "--hide-scrollbars")
    assert screenshot.is_file() and screenshot.stat().st_size > 10_000
    keep = os.environ.get("DREAMDATA_SCREENSHOTS")  # a folder to keep them in, to look at them
    if keep:
        Path(keep).mkdir(parents=True, exist_ok=True)
        shutil.copy(screenshot, Path(keep) / screenshot.name)
