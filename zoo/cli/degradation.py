"""CLI command `degradation`: plain against residual networks trained side by side (registered by zoo.cli.main)."""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path

from zoo.cli.format import table


def _progress(report) -> None:
    if report.kind == "epoch":
        cells = "  ".join(f"{n} {100 * e:5.1f}%" for n, e in zip(report.names, report.error, strict=True))
        print(f"  epoch {report.epoch}/{report.epochs}  training error: {cells}  "
              f"({report.images_per_s:,.0f} img/s per network, ETA {report.eta_s:.0f} s)", file=sys.stderr, flush=True)


def _n(count: int, noun: str) -> str:
    return f"{count} {noun}{'' if count == 1 else 's'}"


def _ints(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(x) for x in text.split(",") if x.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a comma-separated list of depths, e.g. 20,56") from None


def cmd_degradation(args: argparse.Namespace) -> int:
    from zoo.degradation import lab, results
    from zoo.degradation.experiment import Config

    if args.list:
        stored = results.list_results()
        if args.json:
            print(json.dumps([{"key": r.key, "created": r.created, "dataset": r.dataset["name"], "device": r.device,
                               "config": dataclasses.asdict(r.config)} for r in stored], indent=1))
            return 0
        for r in stored:
            c = r.config
            print(f"{r.key}  {r.created}  {r.dataset['name']} ({r.dataset['train']} images)  depths "
                  f"{','.join(map(str, c.depths))}  option {c.shortcut}  {_n(c.epochs, 'epoch')}  {c.size} px  "
                  f"batch {c.batch_size}  lr {c.lr:g}  seed {c.seed}  on {r.device}")
        return 0
    if args.rm:
        missing = 0
        for key in args.rm:
            gone = results.delete(key)
            missing += not gone
            print(f"{'deleted' if gone else 'no such result'}: {key}")
        return 1 if missing else 0
    config = Config(data=args.data, depths=args.depths, shortcut=args.shortcut.upper(), epochs=args.epochs,
                    size=args.size, batch_size=args.batch_size, lr=args.lr, seed=args.seed, limit=args.limit)
    if not args.json:
        print(f"{', '.join(f'plain-{d} and ResNet-{d}' for d in config.depths)} on {config.data} "
              f"({_n(config.epochs, 'epoch')}, {config.size} px, option {config.shortcut}, batch {config.batch_size})",
              file=sys.stderr, flush=True)
    result = lab.run(config, device=args.device, callback=None if args.json else _progress,
                     reuse=not args.retrain)
    if result.store_error:
        print(f"warning: {result.store_error}", file=sys.stderr)
    if args.plot:
        from zoo.degradation import report

        try:
            args.plot.write_text(report.result_curves(result))
        except OSError as exc:
            print(f"error: could not write the plot to {args.plot}: {exc.strerror or exc} (the result itself is "
                  f"{'stored as ' + result.key if result.stored else 'not stored'}).", file=sys.stderr)
            return 2
    if args.json:
        out = {**result.to_dict(), "cached": result.cached, "stored": result.stored, "store_error": result.store_error}
        print(json.dumps(results.json_safe(out), indent=1, allow_nan=False))  # strict JSON: NaN becomes null
        return 0
    _print(result)
    return 0


def _print(result) -> None:
    from zoo.degradation import report

    frame = report.table(result)
    print(table(list(frame.columns), [[str(v) for v in row] for row in frame.itertuples(index=False)],
                 right={2, 3, 4, 5, 6}))
    print()
    print(report.summary(result).replace("**", "").replace("`", ""))
    print("\nThe paper (" + report.paper.CITATION + "):")
    for row in report.paper.rows():
        print(f"  {row['dataset']:<24} {row['network']:<12} {row['error %']:6.2f}%  ({row['source']})")


def add_commands(sub) -> None:
    p = sub.add_parser("degradation", help="train plain and residual networks side by side: the degradation problem",
                       description="Train the paper's CIFAR-style plain and residual networks (6n+2 layers) in "
                                   "lockstep on the same batches, and show why shortcuts win. A result with the "
                                   "same settings and data is shown at once from weights/degradation/.")
    p.add_argument("--data", default="digits", metavar="digits|cifar10|DIR|ZIP",
                   help="`digits` (built in, offline), `cifar10` (from the Hub), or a folder / .zip of class folders")
    p.add_argument("--depths", type=_ints, default=(20, 56), help="6n+2 depths, comma-separated (default 20,56)")
    p.add_argument("--shortcut", default="A", choices=["A", "B", "a", "b"],
                   help="A: identity with zero-padded channels (the paper's CIFAR runs); B: projections")
    p.add_argument("--epochs", type=int, default=8)
    p.add_argument("--size", type=int, default=16, help="input side in px (default 16; CIFAR's own is 32)")
    p.add_argument("--batch-size", type=int, default=32, help="default 32 (the paper's 128 suits 50,000 images)")
    p.add_argument("--lr", type=float, default=0.1)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--limit", type=int, help="train on only the first N training images (quick runs)")
    p.add_argument("--device", help="auto, cpu, cuda or cuda:N (default: ZOO_DEVICE)")
    p.add_argument("--retrain", action="store_true", help="train again even if a stored result matches")
    p.add_argument("--plot", type=Path, metavar="FILE.svg", help="also write the training-error curves as SVG")
    p.add_argument("--json", action="store_true", help="print one JSON object (networks, measurements, findings)")
    p.add_argument("--list", action="store_true", help="list the stored results (with --json: as JSON)")
    p.add_argument("--rm", nargs="+", metavar="KEY", help="delete stored results")
    p.set_defaults(func=cmd_degradation)
