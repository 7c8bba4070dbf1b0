"""`dreamdata augment` (does synthetic data help a classifier?) and `dreamdata classifier` (train one)."""

from __future__ import annotations

import argparse
from pathlib import Path

from dreamdata.cli.arguments import positive_float
from dreamdata.errors import DreamdataError


def _add_real_arguments(parser) -> None:
    parser.add_argument("--real", required=True, metavar="SPEC",
                        help="real dataset (fashion-mnist, cifar10, zip:PATH, folder:PATH, npz:PATH); its test "
                             "split is the test set")
    parser.add_argument("--real-test", metavar="SPEC", help="the images every classifier is scored on (default: "
                                                            "--real's own test split); e.g. npz:held-out.npz, used "
                                                            "whole, to choose settings without the test set")
    parser.add_argument("--real-per-class", type=int, metavar="K",
                        help="train on at most K real images per class (default all)")
    parser.add_argument("--split-seed", type=int, default=0, help="which K images are kept (default 0, as in "
                                                                  "data.split_seed of `dreamdata train`)")
    parser.add_argument("--data-root", default="~/.cache/dreamdata/data")
    parser.add_argument("--classifier", default="small_cnn", help="small_cnn or resnet18 (default small_cnn)")
    parser.add_argument("--steps", type=int, default=500, help="optimiser steps per classifier: the same for "
                                                               "every arm (default 500)")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--lr", type=positive_float, default=2e-3)
    parser.add_argument("--hflip", action=argparse.BooleanOptionalAction, default=None,
                        help="random horizontal flips while training the classifier (default: the dataset's - on "
                             "for fashion-mnist, cifar10, cifar100; off for mnist and folder:/zip:/npz: data)")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--threads", type=int, help="torch CPU threads (default: torch's choice)")


def add_augment(subparsers) -> None:
    parser = subparsers.add_parser(
        "augment", help="train classifiers on real, synthetic and real+synthetic data over seeds and compare",
        description="Train a classifier per arm and seed with the same budget, test each on the real test split, "
                    "and write results.jsonl, summary.json, summary.md (accuracy mean ± std, paired differences "
                    "with 95%% CI and p-value, per-class precision/recall/F1) and confusion-<arm>.png into --out. "
                    "The synthetic-only arm is the Classification Accuracy Score. Re-running resumes; "
                    "with another --synthetic into the same --out, the real-only arm is not trained again; "
                    "with another --real-test, every arm is (results are tied to the images they were scored on).")
    _add_real_arguments(parser)
    parser.add_argument("--synthetic", metavar="DIR", help="dreamed dataset (`dreamdata dream --out`), image "
                                                           "folder or .npz")
    parser.add_argument("--arms", default="real,real+synthetic,synthetic",
                        help="comma-separated arms; the first is the baseline of the paired comparisons. An arm "
                             "is a training set (real, synthetic, real+synthetic) or sets trained in turn, "
                             "joined by '>' (synthetic>real: pre-train on the dreamed images, then fine-tune on "
                             "the real ones, --steps each; real>real is its control)")
    parser.add_argument("--seeds", type=int, default=5, help="seeds per arm (default 5)")
    parser.add_argument("--synthetic-ratio", type=positive_float, metavar="R",
                        help="use R synthetic images per real image of each class (default: all)")
    parser.add_argument("--expect-model", metavar="RUN", help="fail unless --synthetic's manifest names this "
                                                              "run's (or .safetensors') checkpoint")
    parser.add_argument("--out", required=True, help="study directory")
    parser.set_defaults(handler=_run_augment)


def add_classifier(subparsers) -> None:
    parser = subparsers.add_parser(
        "classifier", help="train a classifier on real data (e.g. to filter dreamed images by confidence)",
        description="Train one classifier on the real training split with the fast trainer, report its test "
                    "accuracy, and save it as .safetensors (for `dreamdata dream --filter-classifier`).")
    _add_real_arguments(parser)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", required=True, help="output .safetensors file")
    parser.set_defaults(handler=_run_classifier)


def load_real(args):
    """``(train, test)`` of the real dataset (and the thread count set, since every command calls this first)."""
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    from dreamdata.config import DataConfig
    from dreamdata.data import load_dataset

    if args.real_per_class is not None and args.real_per_class < 1:
        raise DreamdataError(f"--real-per-class must be a positive integer, got {args.real_per_class}")
    train = load_dataset(DataConfig(dataset=args.real, data_root=args.data_root, per_class=args.real_per_class,
                                    split_seed=args.split_seed), "train")
    test = load_dataset(DataConfig(dataset=args.real_test or args.real, data_root=args.data_root), "test")
    return train, test


def classifier_config(args):
    from dreamdata.classify.networks import CLASSIFIERS
    from dreamdata.classify.train import ClassifierConfig
    from dreamdata.data import resolve_hflip

    if args.classifier not in CLASSIFIERS:
        raise DreamdataError(f"--classifier {args.classifier!r}: expected one of {', '.join(CLASSIFIERS)}")
    if args.steps < 1 or args.batch_size < 1:
        raise DreamdataError(f"--steps and --batch-size must be positive, got {args.steps} and {args.batch_size}")
    return ClassifierConfig(network=args.classifier, steps=args.steps, batch_size=args.batch_size, lr=args.lr,
                            hflip=resolve_hflip(args.hflip, args.real))


def hflip_choice(args) -> str:
    """What ``--hflip/--no-hflip`` (or its absence) means for ``--real``, for the command's output."""
    from dreamdata.data import describe_hflip

    return "horizontal flips " + describe_hflip(args.hflip, args.real).replace("(asked)", (
        "(--hflip)" if args.hflip else "(--no-hflip)"))


def _run_augment(args) -> int:
    from dreamdata.dream.load import load_synthetic
    from dreamdata.dream.manifest import file_sha256
    from dreamdata.experiments.study.arms import parse_arms, uses_synthetic
    from dreamdata.experiments.study.augment import AugmentConfig, run_augment
    from dreamdata.training.setup import resolve_device

    if args.seeds < 1:
        raise DreamdataError(f"--seeds must be a positive integer, got {args.seeds}")
    arms = parse_arms(args.arms)
    config = AugmentConfig(arms=arms, seeds=args.seeds, synthetic_ratio=args.synthetic_ratio,
                           classifier=classifier_config(args))
    real, test = load_real(args)
    print(f"augment: {hflip_choice(args)}")
    synthetic = None
    if args.synthetic:
        expected = None
        if args.expect_model:
            from dreamdata.training.pretrained import load_trained

            expected = file_sha256(load_trained(args.expect_model).checkpoint)
        synthetic, _ = load_synthetic(args.synthetic, real, expected)
    elif any(uses_synthetic(arm) for arm in arms):
        raise DreamdataError(f"--arms {args.arms}: the synthetic arms need --synthetic DIR")
    summary = run_augment(real, test, synthetic, config, args.out, device=resolve_device(args.device))
    from dreamdata.experiments.study.augment import summary_markdown

    print(summary_markdown(summary).split("\n## Per-class")[0])
    print(f"wrote {Path(args.out) / 'summary.md'}, summary.json, confusion-*.png")
    from dreamdata.reports.html import write_report_or_warn

    write_report_or_warn(args.out)
    return 0


def _run_classifier(args) -> int:
    from dreamdata.classify.checkpoint import save_classifier
    from dreamdata.classify.metrics import accuracy, confusion_matrix
    from dreamdata.classify.train import predict_probabilities, train_classifier
    from dreamdata.training.setup import resolve_device

    config = classifier_config(args)
    real, test = load_real(args)
    device = resolve_device(args.device)
    network = train_classifier(real.images, real.labels, real.num_classes, config, seed=args.seed, device=device,
                               progress=f"classifier seed {args.seed}")
    predicted = predict_probabilities(network, test.images, config.eval_batch_size).argmax(1)
    test_accuracy = accuracy(confusion_matrix(test.labels, predicted, real.num_classes))
    save_classifier(args.out, network, config.network, real.channels, real.image_size, real.class_names,
                    extra={"real": args.real, "real_per_class": args.real_per_class, "steps": config.steps,
                           "seed": args.seed, "hflip": config.hflip, "test_accuracy": test_accuracy})
    print(f"classifier: test accuracy {100 * test_accuracy:.2f}% on {len(test)} images ({hflip_choice(args)}); "
          f"wrote {args.out}")
    return 0
