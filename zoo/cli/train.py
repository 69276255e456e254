"""CLI command `train`: transfer-learning runs on digits, a folder or a zip (registered by zoo.cli.main)."""

from __future__ import annotations

import argparse
import json
import sys

from zoo.cli.format import table


def _dataset(dataset) -> None:
    print(f"{dataset.name}: {len(dataset.classes)} classes, {len(dataset.train)} train / {len(dataset.val)} "
          "validation images" + (f", {len(dataset.skipped)} skipped" if dataset.skipped else ""), file=sys.stderr)
    for path, why in dataset.skipped[:20]:
        print(f"  skipped {path}: {why}", file=sys.stderr)


def _start(tag: str, strategy: str) -> None:
    print(f"  {tag} / {strategy}", file=sys.stderr, flush=True)


def _progress(tag: str, strategy: str, report) -> None:
    if report.kind == "epoch":
        print(f"    epoch {report.epoch}/{report.epochs}: loss {report.loss:.4f}  "
              f"train {100 * report.train_acc:5.1f}%  val loss {report.val_loss:.4f}  "
              f"val {100 * report.val_acc:5.1f}%  {report.images_per_s:,.0f} img/s",
              file=sys.stderr, flush=True)


def cmd_train(args: argparse.Namespace) -> int:
    from zoo.transfer import distributed, grid
    from zoo.transfer.fit import FitConfig

    tags, strategies = grid.check(args.models, args.heads.split(","))
    config = FitConfig(epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, optimizer=args.optimizer,
                       patience=args.patience, seed=args.seed)
    world = distributed.init(args.device)
    quiet = args.json or not world.is_main  # under torchrun, the main process reports
    trained = grid.train(args.data, tags, strategies, config, size=args.size, val_fraction=args.val_fraction,
                         seed=args.seed, device=args.device, on_dataset=None if quiet else _dataset,
                         on_start=None if quiet else _start, on_report=None if quiet else _progress)
    dataset, results = trained.dataset, trained.results
    if not world.is_main:
        return 0
    if args.json:
        print(json.dumps({"dataset": dataset.name, "classes": dataset.classes, "skipped": dataset.skipped,
                          "runs": [{**r.row(), "per_class_acc": r.scores.per_class, "confusion": r.scores.confusion}
                                   for r in results]}, indent=1))
        return 0
    rows = [[r.tag, r.strategy, f"{100 * r.scores.top1:.2f}", f"{100 * r.scores.macro_f1:.2f}",
             f"{r.train_seconds:.1f}", f"{r.feature_seconds:.1f}", f"{r.trainable_params:,}",
             str(len(r.history.epochs)), r.run_id] for r in results]
    print(table(["model", "strategy", "val top-1", "macro-F1", "train s", "features s", "trainable", "epochs", "run"],
                 rows, right={2, 3, 4, 5, 6, 7}))
    best = trained.best()
    print(f"\nbest: {best.tag} / {best.strategy}; per-class validation accuracy: "
          + ", ".join(f"{c} {100 * a:.0f}%" for c, a in zip(dataset.classes, best.scores.per_class, strict=True)))
    return 0


def cmd_runs(args: argparse.Namespace) -> int:
    from zoo.transfer import runs

    if args.rm:
        for run_id in args.rm:
            print(f"{'deleted' if runs.delete(run_id) else 'no such run'}: {run_id}")
        return 0
    stored = runs.stored()
    if args.json:
        print(json.dumps([{"id": r.id, "tag": r.tag, "strategy": r.strategy, "dataset": r.dataset,
                           "classes": list(r.classes), "val_top1": r.val_top1, "macro_f1": r.macro_f1,
                           "sha256": r.sha256, "created": r.created} for r in stored], indent=1))
        return 0
    print(table(["run", "model", "strategy", "dataset", "classes", "val top-1", "macro-F1"],
                [[r.id, r.tag, r.strategy, r.dataset, str(len(r.classes)), f"{r.val_top1:.2f}", f"{r.macro_f1:.2f}"]
                 for r in stored], right={4, 5, 6}))
    return 0


def add_commands(sub) -> None:
    from zoo.transfer.heads import STRATEGIES

    p = sub.add_parser("train", help="train and compare transfer-learning heads on your data (or the digits)")
    p.add_argument("--data", required=True, metavar="DIR|ZIP|digits",
                   help="a folder of class folders, a .zip of one, or `digits` (built in, offline)")
    p.add_argument("--models", nargs="+", required=True, metavar="TAG", help="pretrained tags to start from")
    p.add_argument("--heads", default="linear,full", help=f"comma-separated: {', '.join(STRATEGIES)}")
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--lr", type=float, help="the new head's learning rate (default: per strategy)")
    p.add_argument("--optimizer", choices=("adamw", "sgd"), default="adamw")
    p.add_argument("--patience", type=int, default=3, help="epochs without a lower validation loss before stopping")
    p.add_argument("--size", type=int, help="input side in pixels (default: the tag's eval size)")
    p.add_argument("--val-fraction", type=float, default=0.2)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", help="auto, cpu, cuda or cuda:N (default: ZOO_DEVICE)")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("runs", help="list stored transfer runs, or delete them with --rm")
    p.add_argument("--rm", nargs="+", metavar="RUN", help="delete these runs")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=cmd_runs)
