"""The report page of a sweep directory (``dreamdata sweep --out``; the cold-diffusion study is one too).

The results table as the sweep's ``summary.md`` gives it (or, when that is not written yet, rebuilt from
``results.jsonl``), every figure the sweep drew, its mosaics and trajectories, and the arms with their runs.
"""

from __future__ import annotations

import json
from pathlib import Path

from dreamdata.reports.html.page import Page, markdown_tables
from dreamdata.reports.html.run_page import checkpoints

SETTINGS = "sweep.json"


def _results(out_dir: Path) -> list[dict]:
    path = out_dir / "results.jsonl"
    records = []
    for line in path.read_text().splitlines() if path.is_file() else []:
        try:
            records.append(json.loads(line))
        except ValueError:
            continue
    return records


def build_sweep_page(out_dir: Path, page: Page) -> None:
    try:
        settings = json.loads((out_dir / SETTINGS).read_text())
    except (OSError, ValueError):
        settings = {}
    shared = settings.get("shared", {}) or {}
    results = _results(out_dir)
    arm_names = sorted(settings.get("arms", {}) or {})
    summary_path = out_dir / "summary.md"
    summary = summary_path.read_text() if summary_path.is_file() else ""
    page.subtitle = f"sweep · {len(arm_names)} arms · {len(results)} cells finished"

    page.section("results", "Results")
    if summary:
        first = next((line for line in summary.splitlines()[1:] if line.strip()), "")
        page.text(first.replace("`", ""))
    tables = markdown_tables(summary)
    if not tables and results:
        from dreamdata.experiments.summary import default_table

        tables = markdown_tables(default_table(results))
        page.missing("summary.md is not written yet (the sweep is still running); the table is rebuilt from "
                     "results.jsonl")
    if not results:
        page.missing("no cell has finished yet (results.jsonl is empty or absent); re-running `dreamdata sweep` "
                     "resumes")
    for header, rows in tables:
        page.table(header, rows, numeric=[i for i, cell in enumerate(rows[0]) if _numeric(cell)] if rows else ())

    figures = sorted(path for path in out_dir.glob("*.png"))
    mosaics = [p for p in figures if p.name.startswith("mosaic")]
    trajectories = [p for p in figures if p.name.startswith("trajectory")]
    others = [p for p in figures if p not in mosaics and p not in trajectories]
    page.section("figures", "Figures")
    if not others:
        page.missing("no figure drawn yet (they are drawn when the sweep finishes)")
    for path in others:
        page.image(path, path.name)
    page.section("mosaics", "Mosaics")
    if not mosaics:
        page.missing("no mosaic yet")
    for path in mosaics + trajectories:
        page.image(path, f"{path.name}: same noise in every cell, one row per class")

    page.section("arms", "Arms")
    rows = []
    for name in arm_names:
        run_dir = out_dir / "arms" / name
        saved = checkpoints(run_dir)
        done = (run_dir / "sweep-arm-done.json").is_file()
        report = run_dir / "report.html"
        rows.append([name, "trained" if done else "not finished", saved[-1][0] if saved else "none",
                     sum(1 for r in results if r.get("arm") == name), page.href(report) if report.is_file() else ""])
    page.table(["arm", "training", "newest checkpoint step", "cells finished", "run report"], rows, numeric=(2, 3))
    page.code(json.dumps(shared, indent=1, sort_keys=True), "the settings every finished cell depends on (sweep.json)")


def _numeric(cell: str) -> bool:
    try:
        float(cell.split(" ")[0])
        return True
    except ValueError:
        return False
