"""`dreamdata sweep`: train every arm of a sweep file once, sample and score every cell once, tabulate, draw."""

from __future__ import annotations

from pathlib import Path

from dreamdata.errors import DreamdataError


def add_sweep(subparsers) -> None:
    parser = subparsers.add_parser(
        "sweep", help="an experiment as one config: training axes x sampling axes x checkpoints -> metrics",
        description="Run a sweep file (e.g. configs/experiments/schedules-and-steps.yaml): every combination "
                    "of the training axes is one arm, trained once into OUT/arms/<arm>; every (arm, checkpoint, "
                    "sampling settings) is one cell, sampled with the same per-sample seeds as every other cell "
                    "and scored with the one evaluation protocol. Re-running resumes (finished cells are never "
                    "redone; new axis values run only their cells). Writes OUT/results.jsonl, OUT/summary.md "
                    "and the figures. KEY=VALUE overrides go to the base run config (train.steps=100), or to "
                    "the sweep's own sections (evaluation.n=500, sampling.guidance=1, metrics=[fid]).")
    parser.add_argument("sweep", help="sweep YAML file")
    parser.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="overrides (see above)")
    parser.add_argument("--out", help="output directory (default runs/sweep-<name>)")
    parser.add_argument("--dry-run", action="store_true",
                        help="list the arms and cells with their network evaluations and estimated CPU minutes")
    parser.add_argument("--shard", metavar="I/N",
                        help="run the I-th of N shares of the cells (0-based); under torchrun the rank decides")
    parser.add_argument("--arm", action="append", metavar="NAME",
                        help="train and score only this arm (repeatable): one resumable piece of a long sweep")
    parser.set_defaults(handler=_run_sweep)


def _parse_shard(text):
    from dreamdata.experiments.runner import shard_from_environment

    if text is None:
        return shard_from_environment()
    try:
        index, count = (int(part) for part in text.split("/"))
    except ValueError:
        raise DreamdataError(f"--shard {text!r}: expected I/N, e.g. 0/2") from None
    if not 0 <= index < count:
        raise DreamdataError(f"--shard {text!r}: expected 0 <= I < N")
    return index, count


def _done_mark(cell: dict) -> str:
    done, count = cell.get("done", 0), cell["checkpoints"]
    return "" if not done else " [done]" if done >= count else f" [{done} of {count} checkpoints done]"


def _print_plan(report: dict) -> None:
    for arm in report["arms"]:
        axes = ", ".join(f"{k}={v}" for k, v in arm["axes"].items()) or "base config"
        training = "" if arm["train_images_per_s"] is None else f"training {arm['train_images_per_s']} img/s, "
        trained = " [trained]" if arm.get("trained") else ""
        minutes = (f"{arm['train_minutes']} min as logged" if arm.get("train_minutes_logged")
                   else f"~{arm['train_minutes']} CPU min")
        print(f"arm {arm['arm']} ({axes}): train {arm['train_steps']} steps, {minutes} "
              f"({training}forward {arm['forward_images_per_s']} img/s here) -> {arm['run_dir']}{trained}")
        for cell in arm["cells"]:
            s = cell["sampling"]
            interval = s.get("guidance_interval")
            where = f" at {interval[0]:g} < sigma <= {interval[1]:g}" if interval else ""
            where += f", {s['precision']} network" if s.get("precision") else ""
            print(f"    cell {s['sampler']} {s['steps']} steps, w={s['guidance']}{where}, spacing {s['spacing']}"
                  f" x {cell['checkpoints']} checkpoint(s): {cell['network_evaluations']:,} network "
                  f"evaluations, ~{cell['cpu_minutes']} CPU min{_done_mark(cell)}")
    print(f"total: {len(report['arms'])} arms, {report['total_cells']} cells, "
          f"{report['total_network_evaluations']:,} network evaluations, ~{report['total_cpu_minutes']} CPU min "
          "(sampling and training only; Inception features not counted; rates measured now, low if the CPU is busy)")
    if report["left_network_evaluations"] != report["total_network_evaluations"] or any(
            arm.get("trained") for arm in report["arms"]):
        print(f"left to run in this directory: {report['left_network_evaluations']:,} network evaluations, "
              f"~{report['left_cpu_minutes']} CPU min")


def _run_sweep(args) -> int:
    from dreamdata.experiments.runner import resolve_arms, run_sweep, select_arms
    from dreamdata.experiments.sweep_config import load_sweep

    sweep = load_sweep(args.sweep, list(args.overrides))
    out = Path(args.out).expanduser() if args.out else Path("runs") / f"sweep-{sweep.name}"
    shard = _parse_shard(args.shard)
    if args.dry_run:
        from dreamdata.experiments.cost import estimate_sweep

        _print_plan(estimate_sweep(sweep, select_arms(resolve_arms(sweep, out), args.arm), out))
        return 0
    summary = run_sweep(sweep, out, shard=shard, only_arms=args.arm)
    print(summary.read_text(), end="")
    print(f"wrote {summary} (and results.jsonl, figures) in {out}")
    if shard[0] == 0:  # one page per sweep, from the first shard
        from dreamdata.reports.html import write_report_or_warn

        write_report_or_warn(out)
    return 0
