"""CLI commands that run models: `predict`, `compare`, `eval`, `explain` (registered by zoo.cli.main)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from zoo import registry
from zoo.cli.format import num, table

BACKEND_HELP = ("CPU backend: auto uses an ONNX graph exported earlier, else eager; onnx exports one now "
                "(seconds, once per weights file) and uses it; eager is plain PyTorch. Default: ZOO_CPU_BACKEND")


def _engine(args: argparse.Namespace):
    from zoo.inference import Engine

    return Engine(backend=args.backend, background_export=False)


def _pct(p: float) -> str:
    return f"{100 * p:6.2f}%"


def cmd_predict(args: argparse.Namespace) -> int:
    eng = _engine(args)
    tags = args.model or [registry.get("resnet50").name]
    results = eng.classify([str(p) for p in args.images], tags, top_k=args.top_k, device=args.device)
    if args.json:
        print(json.dumps([{"image": str(img), "predictions": [p.as_dict() for p in preds]}
                          for img, preds in zip(args.images, results, strict=True)], indent=1))
        return 0
    for img, preds in zip(args.images, results, strict=True):
        print(f"{img}")
        for p in preds:
            print(f"  {p.model}  ({p.latency_ms:.1f} ms, {p.backend}, batch {p.batch_size})")
            for s in p.top:
                print(f"    {_pct(s.probability)}  {s.label.name:<28} {s.label.synset}")
    return 0


def cmd_compare(args: argparse.Namespace) -> int:
    from zoo import compare

    comp = compare.compare(str(args.image), args.models or None, engine=_engine(args), device=args.device)
    if args.json:
        print(json.dumps(comp.as_dict(), indent=1))
        return 0
    rows = [[r.entry.name, str(r.entry.depth), f"{r.entry.params / 1e6:.1f}", f"{r.entry.gmacs_eval:.2f}",
             num(r.entry.top1, ".2f"), f"{r.latency_ms:.1f}", f"{r.first_ms:.0f}", r.prediction.top[0].label.name,
             _pct(r.prediction.top[0].probability).strip()] for r in comp.rows]
    print(table(["model", "depth", "params M", "GMACs", "pub. top-1", "ms", "1st ms", "top-1 here", "p"], rows,
                right={1, 2, 3, 4, 5, 6, 8}))
    print(f"\nms: median of {compare.WARM_RUNS} passes after the first; 1st ms: the first pass, with one-off set-up")
    a = comp.agreement
    print()
    print("all models agree on the top-1" if a.all_same_top1 else
          "top-1 votes: " + "; ".join(f"{k} ({len(v)})" for k, v in a.top1_votes.items()))
    print("in every top-5: " + (", ".join(lb.name for lb in a.common_top5) or "nothing"))
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    from zoo.evaluate import evaluate

    tags = args.models or [registry.get("resnet50").name]
    tty = sys.stderr.isatty() and not args.json

    def progress(done: int, total: int) -> None:
        if tty:
            print(f"\r{done}/{total} images", end="" if done < total else "\n", file=sys.stderr, flush=True)

    ev = evaluate(args.source, tags, engine=_engine(args), progress=progress, device=args.device)
    if args.json:
        print(json.dumps(ev.as_dict(), indent=1))
        return 0
    rows = [[s.model, str(s.n), f"{s.top1:.2f}", f"{s.top5:.2f}", num(s.published_top1, ".2f"),
             f"{s.latency_ms / max(s.n, 1):.1f}"] for s in ev.scores]
    print(table(["model", "images", "top-1 %", "top-5 %", "published top-1", "ms/img"], rows, right={1, 2, 3, 4, 5}))
    print(f"{ev.classes} classes")
    for f, why in ev.skipped:
        print(f"skipped {f}: {why}")
    return 0


def cmd_explain(args: argparse.Namespace) -> int:
    from zoo import explain

    exp = explain.explain(str(args.image), args.model, channels=args.channels, engine=_engine(args),
                          device=args.device)
    paths = explain.save(exp, args.out)
    if args.json:
        print(json.dumps({"model": exp.model, "target": exp.target.label.name, "probability": exp.target.probability,
                          "files": paths}, indent=1))
        return 0
    print(f"{exp.model}: Grad-CAM for {exp.target.label.name} ({_pct(exp.target.probability).strip()})")
    for p in paths:
        print(f"  wrote {p}")
    return 0


def add_commands(sub) -> None:
    def common(p: argparse.ArgumentParser) -> None:
        p.add_argument("--backend", choices=("auto", "onnx", "eager"), help=BACKEND_HELP)
        p.add_argument("--device", help="auto, cpu, cuda or cuda:N (default: ZOO_DEVICE)")
        p.add_argument("--json", action="store_true", help="machine-readable output")

    p = sub.add_parser("predict", help="top-k ImageNet classes for images")
    p.add_argument("images", nargs="+", type=Path, metavar="IMAGE")
    p.add_argument("--model", "-m", action="append", metavar="TAG", help="repeatable (default: resnet50)")
    p.add_argument("--top-k", "-k", type=int, default=5)
    common(p)
    p.set_defaults(func=cmd_predict)

    p = sub.add_parser("compare", help="one image through several depths, side by side")
    p.add_argument("image", type=Path)
    p.add_argument("--models", nargs="+", metavar="TAG",
                   help="default: the default tags of resnet18/34/50/101/152 and resnext50_32x4d")
    common(p)
    p.set_defaults(func=cmd_compare)

    p = sub.add_parser("eval", help="measured top-1/top-5 on a folder or zip of class folders")
    p.add_argument("source", type=Path, metavar="DIR|ZIP")
    p.add_argument("--models", nargs="+", metavar="TAG", help="default: resnet50")
    common(p)
    p.set_defaults(func=cmd_eval)

    p = sub.add_parser("explain", help="Grad-CAM and per-stage feature maps as PNGs")
    p.add_argument("image", type=Path)
    p.add_argument("--model", "-m", default="resnet50")
    p.add_argument("--out", type=Path, default=Path("explain"), help="folder for the PNGs (default ./explain)")
    p.add_argument("--channels", type=int, default=8, help="strongest channels shown per stage")
    common(p)
    p.set_defaults(func=cmd_explain)
