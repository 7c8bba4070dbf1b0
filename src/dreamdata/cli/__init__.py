"""The ``dreamdata`` command line: ``train``, ``sample``, ``evaluate``, ``interpolate``, ``dream``, ``distill``,
``search-grid``, ``classifier``, ``augment``, ``study``, ``sweep``, ``report``, ``demo``, ``presets``.

Errors caused by user input (:class:`dreamdata.errors.DreamdataError`) are printed as one line naming
the file/key/value at fault, with exit status 2; anything else is a bug and keeps its traceback. dreamdata's
own warnings are one line too (``dreamdata CMD: warning: ...``, no source line); other libraries' keep
Python's format, which names where they come from.
"""

from __future__ import annotations

import argparse
import os
import sys
import warnings
from typing import Optional, Sequence

from dreamdata.cli.arguments import OneLineErrorParser
from dreamdata.cli.augment import add_augment, add_classifier
from dreamdata.cli.distill import add_distill
from dreamdata.cli.dream import add_dream
from dreamdata.cli.evaluate import add_evaluate
from dreamdata.cli.interpolate import add_interpolate
from dreamdata.cli.report import add_report
from dreamdata.cli.sample import add_sample
from dreamdata.cli.search_grid import add_search_grid
from dreamdata.cli.study import add_study
from dreamdata.cli.sweep import add_sweep
from dreamdata.cli.train import add_demo, add_presets, add_train
from dreamdata.errors import DreamdataError


def build_parser() -> argparse.ArgumentParser:
    from dreamdata import __version__

    parser = OneLineErrorParser(
        prog="dreamdata", description="Train image diffusion models and dream up labelled training data with them.")
    parser.add_argument("--version", action="version", version=f"dreamdata {__version__}")
    subparsers = parser.add_subparsers(dest="command", required=True)
    for add in (add_demo, add_train, add_sample, add_evaluate, add_interpolate, add_dream, add_distill,
                add_search_grid, add_classifier, add_augment, add_study, add_sweep, add_report, add_presets):
        add(subparsers)
    return parser


def parse_arguments(parser: argparse.ArgumentParser, argv: Optional[Sequence[str]]) -> argparse.Namespace:
    """Parse ``argv``, letting ``KEY=VALUE`` overrides follow options as well as precede them.

    argparse fills a ``nargs="*"`` positional only up to the first option, so ``train tiny --dry-run
    train.steps=5`` would reject ``train.steps=5``; such leftovers join ``overrides`` in order. Anything
    else left over is reported by argparse as usual.
    """
    args, extra = parser.parse_known_args(argv)
    if extra and (not hasattr(args, "overrides") or any(arg.startswith("-") or "=" not in arg for arg in extra)):
        parser.parse_args(argv)  # exits with argparse's own "unrecognized arguments" message
    if extra:
        args.overrides = [*args.overrides, *extra]
    return args


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = parse_arguments(build_parser(), argv)
    python_format = warnings.formatwarning
    package = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

    def one_line(message, category, filename, lineno, line=None) -> str:
        if os.path.abspath(filename).startswith(package + os.sep):
            return f"dreamdata {args.command}: warning: {message}\n"
        return python_format(message, category, filename, lineno, line)

    warnings.formatwarning = one_line
    try:
        return args.handler(args)
    except DreamdataError as error:
        print(f"dreamdata {args.command}: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    finally:
        warnings.formatwarning = python_format


if __name__ == "__main__":
    raise SystemExit(main())
