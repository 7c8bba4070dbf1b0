"""``dreamdata report``: one self-contained HTML page for a run, study, augment, sweep or dreamed set.

A page is a pure function of a directory: it only reads what the commands wrote (and draws its own
figures next to the page), so it can be regenerated at any time and says what is missing instead of
failing on a directory that is not finished.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Callable, Optional

from dreamdata.errors import DreamdataError

__all__ = ["KINDS", "detect_kind", "write_report", "write_report_or_warn"]

KINDS = ("run", "study", "augment", "sweep", "dream")
REPORT = "report.html"


def detect_kind(path: str | Path) -> str:
    """Which kind of directory ``path`` is, from the files present (a clear one-line error for none)."""
    path = Path(path).expanduser()
    if not path.is_dir():
        raise DreamdataError(f"{path}: no such directory")
    if (path / "study.yaml").is_file():
        return "study"
    if (path / "sweep.json").is_file():
        return "sweep"
    if (path / "config.yaml").is_file():
        return "run"
    if (path / "manifest.json").is_file():
        try:
            if json.loads((path / "manifest.json").read_text()).get("format", "").startswith("dreamdata-dream"):
                return "dream"
        except (OSError, ValueError, AttributeError):
            pass
    if (path / "results.jsonl").is_file() or (path / "summary.json").is_file():
        return "augment"
    raise DreamdataError(f"{path}: not a run, study, augment, sweep or dreamed-set directory (it has none of "
                         "config.yaml, study.yaml, results.jsonl, sweep.json, manifest.json)")


def write_report(path: str | Path, out: Optional[str | Path] = None) -> Path:
    """Write the report page of directory ``path`` to ``out`` (default ``path/report.html``); returns it."""
    from dreamdata.reports.html.dream_page import build_dream_page
    from dreamdata.reports.html.page import Page
    from dreamdata.reports.html.run_page import build_run_page
    from dreamdata.reports.html.study_page import build_augment_page, build_study_page
    from dreamdata.reports.html.sweep_page import build_sweep_page

    directory = Path(path).expanduser()
    kind = detect_kind(directory)
    out = Path(out).expanduser() if out else directory / REPORT
    builders = {"run": build_run_page, "study": build_study_page, "augment": build_augment_page,
                "sweep": build_sweep_page, "dream": build_dream_page}
    page = Page(out, f"dreamdata {kind}: {directory.resolve().name}")
    builders[kind](directory, page)
    return page.write()


def write_report_or_warn(path: str | Path, log: Callable[[str], None] = print, quiet: bool = False) -> Optional[Path]:
    """Write ``path``'s report after a command has finished its work and print where (unless ``quiet``); a
    failure to write it is a printed warning, never an error (the finished work is kept either way)."""
    try:
        report = write_report(path)
    except Exception as error:  # noqa: BLE001 - the command's own results are already safe on disk
        log(f"warning: could not write the report of {path}: {type(error).__name__}: {error}")
        return None
    if not quiet:
        log(f"report: {report}")
    return report
