"""The study's cross-K report: one table and one figure of accuracy against K for every arm, and the budgets
each K ran at with the rule or list they came from."""

from __future__ import annotations

import math
from pathlib import Path

from dreamdata.atomic import write_text_atomic
from dreamdata.data import describe_hflip
from dreamdata.finite_json import dumps as finite_dumps
from dreamdata.reports.figures import save_figure
from dreamdata.experiments.study.config import StudyConfig


def _pct(value) -> str:
    return "n/a" if value is None or math.isnan(value) else f"{100 * value:.2f}"


def budget_markdown(record: dict) -> list[str]:
    """The budgets table: per K the numbers and how each was found (fixed before anything ran)."""
    lines = ["Budgets, fixed before anything ran: " + "; ".join(record["described"]) + ".", "",
             "| K / class | real images | classifier steps | dreamed per class | generator |",
             "| --- | --: | --- | --- | --- |"]
    for k, entry in record["per_k"].items():
        lines.append(f"| {k} | {entry['real_images']} | {entry['classifier_steps']} = {entry['classifier_steps_from']} "
                     f"| {entry['dream_per_class']} = {entry['dream_per_class_from']} | {entry['generator']} |")
    return lines


def dream_description(entry: dict) -> str:
    """How one K's images were dreamed, from its manifest: sampler, steps, grid, guidance, precision, seed and
    the measured rate, e.g. ``dpm++2m-sde, 25 steps (linspace), guidance 1.5, bf16, seed 0, 9.54 images/s``."""
    w = entry["dreamed_with"]
    text = f"{w['sampler']}, {w['steps']} steps ({w['spacing']}), guidance {w['guidance']:g}"
    if w.get("guidance_interval"):
        text += f" in sigma ({w['guidance_interval'][0]:g}, {w['guidance_interval'][1]:g}]"
    if w.get("autoguide_step") is not None:
        text += f", autoguided by its step-{w['autoguide_step']} EMA (w = {w['autoguide_weight']:g})"
    text += f", {w.get('precision') or 'fp32'}, seed {w['seed']}"
    rate = (entry.get("dreaming") or {}).get("images_per_second")
    text += f", {rate:.2f} images/s ({entry['dreaming']['layout']})" if rate else ""
    return text + (f", {filter_description(entry['filter'])}" if entry.get("filter") else "")


def filter_description(record: dict) -> str:
    """What ``dream.keep_top`` did, from the manifest's ``filter`` record: the synthetic arms train on a
    selection, and the report must say so (the filter classifier has seen the labelled real images), e.g.
    ``kept the top 50% per class by p(label | x) of a classifier trained on the real images (1000 of 2000;
    mean p 0.81 -> 0.97)``."""
    return (f"kept the top {100 * record['keep_top']:g}% per class by p(label | x) of a classifier trained on the "
            f"real images ({record['kept']} of {record['dreamed']}; mean p {record['mean_confidence_all']:.2f} -> "
            f"{record['mean_confidence_kept']:.2f})")


def study_markdown(config: StudyConfig, per_k: dict, record: dict | None = None) -> str:
    arms = list(config.augment.arms)
    lines = [f"# Study {config.name}: {config.real.dataset}, {config.augment.seeds} seeds per arm", "",
             ("Accuracy on the real test split, % (mean ± std over seeds). Paired differences against "
              f"`{arms[0]}` with Student-t 95% CI and p-value. Classifiers trained with horizontal flips "
              f"{describe_hflip(config.augment.classifier.hflip, config.real.dataset)}."), "",
             "| K / class | " + " | ".join(arms) + " | " + " | ".join(f"{arm} - {arms[0]}" for arm in arms[1:]) + " |",
             "| --- | " + " | ".join("--:" for _ in arms) + " | " + " | ".join("---" for _ in arms[1:]) + " |"]
    for k, entry in per_k.items():
        summary = entry["summary"]
        cells = [f"{_pct(summary['arms'][arm]['accuracy_mean'])} ± {_pct(summary['arms'][arm]['accuracy_std'])}"
                 for arm in arms]
        for arm in arms[1:]:
            c = summary["comparisons"][f"{arm} - {arms[0]}"]
            cells.append(f"{_pct(c['mean_difference'])} [{_pct(c['ci_low'])}, {_pct(c['ci_high'])}], "
                         f"p={c['p_value']:.3g}")
        lines.append(f"| {k} | " + " | ".join(cells) + " |")
    distilled = any("distill_s" in entry["timings"] for entry in per_k.values())
    selected = any("selection_s" in entry["timings"] for entry in per_k.values())
    lines += ["", "| K / class | real images | synthetic images | generator s | "
              + ("distill s | " if distilled else "") + "dream s | " + ("selection s | " if selected else "")
              + "augment s |",
              "| --- | --: | --: | --: | --: | --: |" + (" --: |" if distilled else "")
              + (" --: |" if selected else "")]
    for k, entry in per_k.items():
        t = entry["timings"]
        lines.append(f"| {k} | {entry['real_images']} | {entry['synthetic_images']} | {t['generator_s']} | "
                     + (f"{t.get('distill_s', '')} | " if distilled else "") + f"{t['dream_s']} | "
                     + (f"{t.get('selection_s', '')} | " if selected else "") + f"{t['augment_s']} |")
    dreamed = [f"K = {k}: {dream_description(entry)}" for k, entry in per_k.items() if entry.get("dreamed_with")]
    if dreamed:
        lines += ["", "Dreamed with: " + "; ".join(dreamed) + "."]
    if record is not None:
        lines += ["", *budget_markdown(record)]
    for k, entry in per_k.items():
        if entry.get("selection"):
            from dreamdata.experiments.study.selection import selection_markdown

            chosen = ", ".join(f"{arm} {steps}" for arm, steps in entry["selection"]["chosen"].items())
            lines += ["", f"K = {k}: classifier steps chosen on {entry['selection']['heldout']}: {chosen} "
                          "(held-out accuracy %, mean over seeds; each arm's choice in bold):", "",
                      *selection_markdown(entry["selection"])]
    lines += ["", ("Per-K details (per-class precision/recall/F1, confusion matrices): `K*/augment/summary.md`, "
                   "`K*/augment/confusion-*.png`.")]
    return "\n".join(lines) + "\n"


def write_accuracy_figure(path: Path, config: StudyConfig, per_k: dict) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = list(per_k)
    figure, axes = plt.subplots(figsize=(5.5, 3.8))
    for offset, arm in enumerate(config.augment.arms):
        means = [100 * per_k[k]["summary"]["arms"][arm]["accuracy_mean"] for k in labels]
        stds = [100 * (per_k[k]["summary"]["arms"][arm]["accuracy_std"] or 0) for k in labels]
        stds = [0.0 if math.isnan(s) else s for s in stds]
        positions = [i + 0.08 * (offset - 1) for i in range(len(labels))]
        axes.errorbar(positions, means, yerr=stds, marker="o", capsize=3, label=arm)
    axes.set_xticks(range(len(labels)), labels)
    axes.set_xlim(-0.5, len(labels) - 0.5)
    axes.set_xlabel("real images per class (K)")
    axes.set_ylabel("test accuracy % (mean ± std)")
    axes.set_title(f"{config.real.dataset}: {config.augment.seeds} seeds per arm", fontsize=9)
    axes.grid(alpha=0.3)
    axes.legend(fontsize=8)
    figure.tight_layout()
    save_figure(figure, path, dpi=110)


def write_study_report(study_dir: Path, config: StudyConfig, per_k: dict, record: dict | None = None) -> dict:
    """``summary.md``, ``summary.json`` and ``accuracy-vs-k.png`` in ``study_dir``; returns the summary.
    ``record`` is the budgets' record (:func:`~dreamdata.experiments.study.budgets.resolve_budgets`)."""
    compact = {k: {key: value for key, value in entry.items() if key != "summary"} |
               {"arms": {arm: {name: row[name] for name in ("accuracy_mean", "accuracy_std", "accuracies")}
                         for arm, row in entry["summary"]["arms"].items()},
                "comparisons": entry["summary"]["comparisons"]}
               for k, entry in per_k.items()}
    if record is not None:
        for k, entry in compact.items():
            entry["budget"] = record["per_k"].get(k)
    summary = {"name": config.name, "dataset": config.real.dataset, "budgets": record, "per_k": compact}
    write_text_atomic(study_dir / "summary.json", finite_dumps(summary, indent=2) + "\n")
    write_text_atomic(study_dir / "summary.md", study_markdown(config, per_k, record))
    write_accuracy_figure(study_dir / "accuracy-vs-k.png", config, per_k)
    return summary
