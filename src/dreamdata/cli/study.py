"""`dreamdata study`: the whole synthetic-data study from one config (train -> dream -> augment, per K)."""

from __future__ import annotations

from pathlib import Path


def add_study(subparsers) -> None:
    parser = subparsers.add_parser(
        "study", help="the whole study: train on K real images per class, dream, compare classifiers",
        description="For each K in real.per_class: train the generative model on K real images per class, dream "
                    "images per class with it, and run the augment comparison, at budgets resolved per K before "
                    "anything runs (by the rules classifier_epochs and dream.per_class_multiple, or the lists "
                    "classifier_steps and dream.per_class; written to budgets.json); then write "
                    "summary.md, summary.json and accuracy-vs-k.png into runs_dir/name. Re-running resumes. "
                    "CONFIG is a YAML file (e.g. configs/study-fmnist.yaml); KEY=VALUE arguments override it.")
    parser.add_argument("config", help="study YAML file")
    parser.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="config overrides")
    parser.add_argument("--dry-run", action="store_true",
                        help="print the resolved config, with each K's budgets, and exit (a budget rule is resolved "
                             "from the real data, which is then loaded)")
    parser.add_argument("--run-dir", help="study directory (default runs_dir/name)")
    parser.set_defaults(handler=_run_study)


def _run_study(args) -> int:
    from dreamdata.experiments.study.config import load_study_config
    from dreamdata.experiments.study.budgets import resolved_yaml
    from dreamdata.experiments.study.pipeline import resolve_study, run_study

    config = load_study_config(args.config, list(args.overrides))
    if args.dry_run:
        print(resolved_yaml(*resolve_study(config)), end="")
        return 0
    run_dir = Path(args.run_dir).expanduser() if args.run_dir else None
    run_study(config, run_dir)
    target = run_dir or Path(config.runs_dir).expanduser() / config.name
    print((target / "summary.md").read_text())
    print(f"study written to {target}")
    from dreamdata.reports.html import write_report_or_warn

    write_report_or_warn(target)
    return 0
