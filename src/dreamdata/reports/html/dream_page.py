"""The report page of a dreamed dataset: its manifest, per-class counts, a per-class mosaic, filter statistics."""

from __future__ import annotations

import json
import math
from pathlib import Path

from dreamdata.reports.html.page import Page
from dreamdata.reports.html.views import labelled_view

MANIFEST = "manifest.json"
PREVIEW = "preview.png"


def read_manifest(out_dir: Path) -> dict | None:
    try:
        return json.loads((out_dir / MANIFEST).read_text())
    except (OSError, ValueError):
        return None


def dreamed_classes(spec: dict) -> list[str]:
    names = spec.get("class_names", [])
    return [names[c] for c in spec.get("classes", range(len(names))) if c < len(names)]


def add_dream_digest(page: Page, out_dir: Path, name: str, full: bool = False) -> None:
    """Status, what made the set, counts, the mosaic and the manifest; ``full`` (the set's own page) gives each
    its section and adds the filter's statistics."""
    page.block("manifest", "Manifest", full)
    manifest = read_manifest(out_dir)
    if manifest is None:
        page.missing(f"{out_dir / MANIFEST} does not exist yet: nothing has been dreamed")
        return
    spec = manifest.get("spec", {})
    classes = dreamed_classes(spec)
    if manifest.get("status") != "complete":
        total = len(classes) * int(spec.get("per_class", 0))
        chunks = math.ceil(total / max(1, int(spec.get("chunk", 1))))
        done = len(list((out_dir / ".chunks").glob("chunk-*.npz")))
        page.missing(f"the set is {manifest.get('status', 'incomplete')}: {done} of {chunks} chunks dreamed; "
                     "re-running the same `dreamdata dream` command finishes it")
    checkpoint = str(spec.get("checkpoint_sha256", ""))[:16]
    interval = spec.get("guidance_interval")
    where = f" at {interval[0]:g} < σ ≤ {interval[1]:g}" if isinstance(interval, list) and len(interval) == 2 else ""
    page.pairs([
        ("status", manifest.get("status", "?")),
        ("model", f"{spec.get('checkpoint', '?')} (step {spec.get('step', '?')}, {spec.get('weights', '?')} "
                  f"weights, sha256 {checkpoint}…)"),
        ("sampling", f"{spec.get('sampler', '?')}, {spec.get('steps', '?')} steps, {spec.get('spacing', '?')} "
                     f"spacing, guidance w = {spec.get('guidance', '?')}{where}, seed {spec.get('seed', '?')}"),
        ("images", f"{spec.get('per_class', '?')} per class asked, {manifest.get('total', '?')} kept; "
                   f"{spec.get('channels', '?')} x {spec.get('image_size', '?')} x {spec.get('image_size', '?')}"),
        ("time", f"{manifest['seconds']:.1f} s" if isinstance(manifest.get("seconds"), (int, float)) else "(n/a)"),
        ("device", f"{manifest.get('device', '(not recorded)')}, world size {manifest.get('world_size', '?')}"),
    ])
    page.code(json.dumps(manifest, indent=2, sort_keys=True), "the whole manifest.json")
    counts = manifest.get("counts") or {}
    if counts:
        page.block("counts", "Per-class counts", full)
        page.table(["class", "images"], [[cls, counts[cls]] for cls in counts] + [["total", sum(counts.values())]],
                   numeric=(1,))
    page.block("mosaic", "Per-class mosaic", full)
    preview = out_dir / PREVIEW
    if preview.is_file() and spec.get("image_size"):
        view = labelled_view(preview, page.drawn(f"{name}-preview@view.png"), int(spec["image_size"]), classes)
        page.image(view, pixels=True, caption=f"the first images of each class (rows: {', '.join(classes)}), "
                                              f"upscaled with nearest neighbour from {spec['image_size']}-pixel "
                                              f"images; raw file {PREVIEW}")
    else:
        page.missing(f"{PREVIEW} (written when the set is complete)")
    if full:
        page.section("filter", "Filter")
        if manifest.get("filter"):
            page.pairs(sorted((key, value) for key, value in manifest["filter"].items()))
        else:
            page.text("Not filtered (no --keep-top / --filter-classifier): every dreamed image is kept.")


def build_dream_page(out_dir: Path, page: Page) -> None:
    manifest = read_manifest(out_dir) or {}
    page.subtitle = f"dreamed dataset · {manifest.get('status', 'no manifest')}"
    add_dream_digest(page, out_dir, "dream", full=True)
