"""The report pages of a synthetic-data study directory and of an augment directory.

An augment directory (``dreamdata augment --out``) gives the accuracy per arm (mean ± std over seeds), the
paired differences with their 95% CIs as a table and a forest plot, per-class precision / recall / F1 and
the confusion matrices. A study directory gives that for every K, with the dreamed set and the generator
run of that K, and the cross-K table. A K whose stages have not finished is said to be missing.
"""

from __future__ import annotations

import json
from pathlib import Path

import yaml

from dreamdata.experiments.study.arms import arm_file_stem
from dreamdata.experiments.study.augment import describe_training_images, staged_note
from dreamdata.experiments.study.selection import held_out_means
from dreamdata.reports.html.dream_page import add_dream_digest
from dreamdata.reports.html.figures import forest_plot
from dreamdata.reports.html.page import Page, anchor, percent
from dreamdata.reports.html.run_page import add_digest

RESULTS = "results.jsonl"
SUMMARY = "summary.json"


def _json(path: Path):
    try:
        return json.loads(path.read_text()) if path.is_file() else None
    except (OSError, ValueError):
        return None


def _candidates(steps: list | None) -> str | None:
    """A held-out selection's candidate budgets as a cell: ``one of 1000 / 2000 / 4000``."""
    return "one of " + " / ".join(str(n) for n in steps) if steps else None


def add_selection(page: Page, choice: dict, label: str) -> None:
    """The held-out scores of each arm at each candidate budget, and the budget each arm then trained at."""
    page.heading(f"Classifier steps chosen on held-out training images (K = {label})")
    page.text(f"Every arm trained at every candidate with {choice['seeds']} seeds and scored on "
              f"{choice['heldout']}; {choice['rule']}. Held-out accuracy %, mean over seeds:")
    tried, means = held_out_means(choice)
    rows = [[arm, *("" if mean is None else percent(mean) for mean in row), choice["chosen"][arm]]
            for arm, row in means.items()]
    page.table(["arm", *(f"{n} steps" for n in tried), "chosen"], rows, numeric=range(1, len(tried) + 2))


def _results(out_dir: Path) -> list[dict]:
    path = out_dir / RESULTS
    lines = path.read_text().splitlines() if path.is_file() else []
    records = []
    for line in lines:
        try:
            records.append(json.loads(line))
        except ValueError:
            continue  # a line torn by a crash
    return records


def add_augment(page: Page, out_dir: Path, name: str, expected: int | None = None) -> None:
    """The augment study in ``out_dir``: tables, forest plot, per-class scores, confusion matrices."""
    summary = _json(out_dir / SUMMARY)
    if summary is None:
        done = _results(out_dir)
        arms = sorted({r.get("arm", "?") for r in done})
        of = f" of {expected}" if expected else ""
        page.missing(f"{out_dir / SUMMARY}: the classifier comparison has not finished ({len(done)}{of} "
                     f"(arm, seed) results in {RESULTS}{': ' + ', '.join(arms) if arms else ''})")
        return
    arms, names = summary["arms"], summary["class_names"]
    classifier = summary.get("config", {}).get("classifier", {})
    # a study that chose each arm's budget on held-out images (classifier_selection) trains arms for different steps
    own_steps = len({row.get("steps_per_stage", classifier.get("steps")) for row in arms.values()}) > 1
    budget = "each arm's own steps (the table's steps column)" if own_steps else f"{classifier.get('steps', '?')} steps"
    page.text(f"Classifier for every arm and seed: {classifier.get('network', '?')}, {budget} "
              f"of batch {classifier.get('batch_size', '?')}; "
              f"tested on {(summary.get('test') or {}).get('described', 'the real test split')}; "
              f"N = {len(summary['seeds'])} seeds per arm." + staged_note(summary["arms"]))
    page.heading("Accuracy per arm")
    steps_column = ["steps"] if own_steps else []
    page.table(["arm", "training images", *steps_column, "accuracy % (mean ± std)", "per seed %", "train s / seed"],
               [[arm, describe_training_images(row), *([row.get("steps_per_stage")] if own_steps else []),
                 f"{percent(row['accuracy_mean'])} ± {percent(row['accuracy_std'])}",
                 ", ".join(percent(a) for a in row["accuracies"]), f"{row['train_seconds_mean']:.1f}"]
                for arm, row in arms.items()], numeric=(1, 2, 3, 5) if own_steps else (1, 2, 4))
    comparisons = summary.get("comparisons") or {}
    page.heading("Paired differences (same seeds; Student t, 95% CI)")
    if comparisons:
        page.table(["comparison", "N", "mean difference (points)", "95% CI", "t", "p"],
                   [[label, c.get("n"), percent(c.get("mean_difference")),
                     f"[{percent(c.get('ci_low'))}, {percent(c.get('ci_high'))}]", _fixed(c.get("t"), 2),
                     _fixed(c.get("p_value"), 3, "g")] for label, c in comparisons.items()], numeric=(1, 2, 4, 5))
        plot = forest_plot(comparisons, page.drawn(f"{name}-forest.png"))
        if plot is not None:
            page.image(plot, f"paired differences against {summary.get('baseline', 'the baseline')} with 95% CIs")
    else:
        page.text("One arm only: nothing to compare.")
    page.heading("Per-class precision / recall / F1 (mean over seeds)")
    header = ["class"] + [f"{arm} {score}" for arm in arms for score in ("P", "R", "F1")]
    scores = ("precision", "recall", "f1")
    page.table(header, [[cls] + [f"{arms[arm][score][k]:.3f}" for arm in arms for score in scores]
                        for k, cls in enumerate(names)], numeric=range(1, len(header)))
    page.heading("Confusion matrices (summed over seeds)")
    for arm in arms:
        page.image(out_dir / f"confusion-{arm_file_stem(arm)}.png",
                   f"{arm}: rows true class, columns predicted; N = {len(summary['seeds'])} seeds x test split")


def _fixed(value, digits: int, style: str = "f") -> str:
    if value is None or value != value:
        return "n/a"
    return f"{value:.{digits}{style}}"


def build_augment_page(out_dir: Path, page: Page) -> None:
    page.subtitle = "classifier comparison (dreamdata augment)"
    page.section("accuracy", "Accuracy, paired differences, per-class scores")
    add_augment(page, out_dir, "augment")


def _k_label(k) -> str:
    return "all" if k is None else str(k)


def build_study_page(study_dir: Path, page: Page) -> None:
    try:
        config = yaml.safe_load((study_dir / "study.yaml").read_text()) or {}
    except (OSError, yaml.YAMLError):
        config = {}
    real, augment = config.get("real", {}) or {}, config.get("augment", {}) or {}
    ks = list(real.get("per_class") or [])
    arms = list(augment.get("arms") or ["real", "real+synthetic", "synthetic"])
    seeds = augment.get("seeds")
    summary = _json(study_dir / SUMMARY)
    page.subtitle = (f"synthetic-data study · {real.get('dataset', '?')} · K = {', '.join(map(_k_label, ks))} real "
                     f"images per class · {seeds} seeds per arm")

    page.section("overview", "Overview")
    finished = set((summary or {}).get("per_k", {}))
    unfinished = [_k_label(k) for k in ks if _k_label(k) not in finished]
    if unfinished:
        page.missing(f"K = {', '.join(unfinished)} not finished yet (summary.json has "
                     f"{', '.join(sorted(finished)) or 'no K'}); re-running `dreamdata study` resumes")
    rows = []
    for k in ks:
        label = _k_label(k)
        entry = (summary or {}).get("per_k", {}).get(label)
        if entry is None:
            rows.append([label] + ["(not finished)"] * len(arms))
            continue
        rows.append([label] + [f"{percent(entry['arms'][arm]['accuracy_mean'])} ± "
                               f"{percent(entry['arms'][arm]['accuracy_std'])}" if arm in entry["arms"] else "n/a"
                               for arm in arms])
    page.text("Test accuracy %, mean ± std over seeds, per real images per class (K) and arm:")
    page.table(["K / class", *arms], rows, numeric=range(1, len(arms) + 1))
    page.image(study_dir / "accuracy-vs-k.png", "test accuracy against K, mean ± std over seeds")
    budgets = _json(study_dir / "budgets.json")  # written before anything ran; older studies have none
    if budgets:
        page.text("Budgets, fixed before anything ran: " + "; ".join(budgets.get("described", [])) + ".")
        page.table(["K / class", "real images", "classifier steps", "from", "dreamed per class", "from", "generator"],
                   [[label, entry.get("real_images"),
                     _candidates(entry.get("classifier_steps_candidates")) or entry.get("classifier_steps"),
                     entry.get("classifier_steps_from"),
                     entry.get("dream_per_class"), entry.get("dream_per_class_from"), entry.get("generator")]
                    for label, entry in (budgets.get("per_k") or {}).items()], numeric=(1, 2, 4))
    page.code((study_dir / "study.yaml").read_text() if (study_dir / "study.yaml").is_file() else "(no study.yaml)",
              "the resolved study config (study.yaml)")

    for k in ks:
        label = _k_label(k)
        k_dir = study_dir / f"K{label}"
        page.section(f"k{anchor(label)}", f"K = {label} real images per class")
        if not k_dir.is_dir():
            page.missing(f"{k_dir.name}/: this K has not started")
            continue
        timings = _json(k_dir / "timings.json")
        if timings:
            page.pairs(sorted(timings.items()))
        choice = _json(k_dir / "selection" / "choice.json")
        if choice:
            add_selection(page, choice, label)
        page.heading(f"Classifier comparison (K = {label})")
        expected = len(arms) * seeds if isinstance(seeds, int) else None
        add_augment(page, k_dir / "augment", f"k{label}", expected)
        page.heading(f"Dreamed set (K = {label})")
        add_dream_digest(page, k_dir / "synthetic", f"k{label}")
        page.heading(f"Generator (K = {label})")
        if (k_dir / "generator" / "config.yaml").is_file():
            add_digest(page, k_dir / "generator", f"k{label}-generator")
        else:
            page.missing(f"{k_dir.name}/generator: the generator has not started training")
