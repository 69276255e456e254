"""CLI commands for the local weight store: `fetch`, `verify`, `import`, `rm` (registered by zoo.cli.main)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from zoo import registry
from zoo.errors import ZooError


def _names(args: argparse.Namespace) -> list[str]:
    if getattr(args, "all", False):
        return [e.name for e in registry.load()]
    if getattr(args, "default", False):
        return [e.name for e in registry.load().defaults()]
    return [registry.get(n).name for n in args.names]


def cmd_fetch(args: argparse.Namespace) -> int:
    from zoo import weights

    names = _names(args)
    if not names:
        print("error: name at least one model, or use --default or --all", file=sys.stderr)
        return 2
    failed = 0
    for name in names:
        progress, close = _progress_bar(name)
        try:
            path = weights.resolve(name, progress=progress)
        except ZooError as exc:
            failed += 1
            print(f"{name}: FAILED: {exc}", file=sys.stderr)
            continue
        finally:
            close()
        rec = weights.store().record(name)
        print(f"{name}: {rec.size / 1e6:.1f} MB, sha256 {rec.sha256[:16]}, from {rec.source} -> {path}")
    return 1 if failed else 0


def _progress_bar(name: str):
    """A download bar on stderr (only on a terminal), fed by the same callback the UI uses."""
    from tqdm import tqdm

    bar: list[tqdm] = []

    def progress(done: int, total: int | None) -> None:
        if not bar:
            bar.append(tqdm(total=total, unit="B", unit_scale=True, desc=name, file=sys.stderr, disable=None))
        bar[0].update(done - bar[0].n)

    return progress, lambda: bar and bar[0].close()


def cmd_verify(args: argparse.Namespace) -> int:
    from zoo import weights

    st = weights.store()
    names = _names(args) if args.names else sorted({r.name for r in st.records()} |
                                                  {name for name, _ in st.unreadable_records()})
    if not names:
        print(f"no weights in {st.root}")
        return 0
    bad = 0
    for name in names:
        ok, message = st.verify(name)
        bad += not ok
        print(f"{name}: {message}")
    return 1 if bad else 0


def cmd_import(args: argparse.Namespace) -> int:
    from zoo import weights

    path = weights.import_file(args.file, args.name)
    rec = weights.store().record(registry.get(args.name).name)
    print(f"{rec.name}: imported {args.file} ({rec.size / 1e6:.1f} MB, sha256 {rec.sha256[:16]}) -> {path}")
    return 0


def cmd_rm(args: argparse.Namespace) -> int:
    from zoo import weights

    missing = 0
    for name in _names(args):
        removed = weights.store().remove(name)
        missing += not removed
        print(f"{name}: {'removed' if removed else 'not in the store'}")
    return 1 if missing else 0


def add_commands(sub) -> None:
    p = sub.add_parser("fetch", help="download weights into the local store (verified against the Hub's hash)")
    p.add_argument("names", nargs="*", metavar="NAME")
    group = p.add_mutually_exclusive_group()
    group.add_argument("--default", action="store_true", help="the default tag of every architecture")
    group.add_argument("--all", action="store_true", help="every tag in the registry (about 10 GB)")
    p.set_defaults(func=cmd_fetch)

    p = sub.add_parser("verify", help="recompute SHA-256 of stored weights; corrupt files are moved aside")
    p.add_argument("names", nargs="*", metavar="NAME", help="default: everything in the store")
    p.set_defaults(func=cmd_verify)

    p = sub.add_parser("import", help="store a local .safetensors (or convert a .pth/.bin) for a tag")
    p.add_argument("file", type=Path)
    p.add_argument("--name", required=True, help="the tag it holds weights for, e.g. resnet50.a1_in1k")
    p.set_defaults(func=cmd_import)

    p = sub.add_parser("rm", help="delete weights from the local store")
    p.add_argument("names", nargs="+", metavar="NAME")
    p.set_defaults(func=cmd_rm)
