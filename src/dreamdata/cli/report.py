"""`dreamdata report`: one self-contained HTML page for a run, study, augment, sweep or dreamed-set directory."""

from __future__ import annotations


def add_report(subparsers) -> None:
    parser = subparsers.add_parser(
        "report", help="write one HTML page for a run, study, augment, sweep or dreamed-set directory",
        description="Write an offline HTML page (no network; images by relative path, so a copied directory keeps "
                    "working) describing PATH: for a training run its config, data, network, budget, curves, "
                    "samples and checkpoints; for a study or augment directory the accuracy per arm, paired "
                    "differences with 95%% CIs, per-class scores and confusion matrices; for a sweep its table, "
                    "figures and mosaics; for a dreamed set its manifest, counts and mosaic. The kind is told from "
                    "the files present; what is missing (an unfinished run or K) is said on the page.")
    parser.add_argument("path", help="the directory")
    parser.add_argument("--out", help="where the page goes (default PATH/report.html; its drawn figures go "
                                      "into a hidden folder beside it, .report-files/)")
    parser.add_argument("--open", action="store_true", help="open the page in the default web browser")
    parser.set_defaults(handler=_run_report)


def _run_report(args) -> int:
    from dreamdata.reports.html import write_report

    page = write_report(args.path, args.out)
    print(f"report: {page}")
    if args.open:
        import webbrowser

        webbrowser.open(page.resolve().as_uri())
    return 0
