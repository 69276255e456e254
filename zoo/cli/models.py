"""CLI commands that describe the registry: `list` and `info` (registered by zoo.cli.main)."""

from __future__ import annotations

import argparse
import dataclasses
import json

from zoo import registry
from zoo.cli.format import num, table
from zoo.registry import ModelEntry

DATASET_LABELS = {
    "imagenet": "ImageNet-1k",
    "imagenet-real": "ImageNet-ReaL",
    "imagenetv2": "ImageNetV2",
    "sketch": "ImageNet-Sketch",
    "imagenet-r": "ImageNet-R",
    "imagenet-a": "ImageNet-A",
}



def cmd_list(args: argparse.Namespace) -> int:
    from zoo.weights import is_local

    entries = registry.list_models(
        family=args.family, depth=args.depth, license=args.license, pretrain=args.pretrain,
        text=" ".join(args.query) or None, defaults_only=args.defaults,
    )  # fmt: skip
    if args.json:
        print(json.dumps([{**e.to_dict(), "top1": e.top1, "local": is_local(e)} for e in entries], indent=1))
        return 0
    rows = [
        [
            e.name + (" *" if e.is_default else ""),
            str(e.depth),
            f"{e.params / 1e6:.2f}",
            f"{e.gmacs:.2f}",
            f"{e.eval_size}",
            num(e.top1),
            e.license or "unknown",
            e.pretrain,
            "yes" if is_local(e) else "-",
        ]
        for e in entries
    ]
    headers = ["name", "depth", "params (M)", "GMACs@224", "eval px", "top-1", "license", "pretrain", "local"]
    print(table(headers, rows, right={1, 2, 3, 4, 5}))
    print(f"\n{len(entries)} models; * marks the default tag of each architecture "
          f"(`python -m zoo info ARCH` shows it). top-1: published ImageNet-1k at the eval size.")  # fmt: skip
    return 0


def card_lines(e: ModelEntry) -> list[str]:
    from zoo.weights import is_local, store

    kind = "ResNeXt" if e.family == "resnext" else "ResNet"
    groups = f", {e.cardinality} groups x {e.base_width} channels (cardinality x width)" if e.cardinality > 1 else ""
    gmacs = f"{e.gmacs:.2f} at 224 px" + (
        f", {e.gmacs_eval:.2f} at {e.eval_size} px (eval)" if e.eval_size != 224 else ""
    )
    lines = [
        f"{e.name}" + (f"  (default for {e.arch})" if e.is_default else ""),
        f"  architecture   {kind}-{e.depth}: {e.block} blocks, {list(e.layers)} per stage{groups}",
        f"  params         {e.params / 1e6:.2f} M ({e.params:,})",
        f"  GMACs          {gmacs}",
    ]
    imagenet = e.rows("imagenet")
    for i, r in enumerate(imagenet):
        label = "ImageNet-1k" if i == 0 else ""
        lines.append(f"  {label:<14} top-1 {r.top1:.3f}  top-5 {r.top5:.3f}  at {r.img_size} px "
                     f"(crop {r.crop_pct:.3f}, {r.interpolation})")  # fmt: skip
    if not imagenet:
        lines.append("  ImageNet-1k    no published result (no ImageNet-1k head)")
    robust = [(DATASET_LABELS[d], e.result(d)) for d in registry.DATASETS[1:] if e.result(d)]
    if robust:
        lines.append("  robustness     " + ", ".join(f"{n} {r.top1:.2f}" for n, r in robust)
                     + f" (top-1 at {robust[0][1].img_size} px)")  # fmt: skip
    lines += [
        f"  preprocessing  train {e.input_size[-1]} px crop {e.crop_pct:.3f}; eval {e.eval_size} px crop "
        f"{e.test_crop_pct:.3f}; {e.interpolation}, {e.crop_mode} crop",
        f"                 mean {tuple(e.mean)}, std {tuple(e.std)}",
        f"  classes        {e.num_classes or 'none (feature extractor, no classifier head)'}",
        f"  license        {e.license or 'unknown (timm gives none)'}",
        f"  pretrained on  {e.pretrain} (source: {e.pretrain_source})",
        f"  weights        hf.co/{e.hf_hub_id} / {e.hf_filename}: "
        + (f"local at {store().weights_path(e.name)}" if is_local(e) else "not in the local store"),
    ]
    if e.paper_ids or e.origin_url:
        lines.append(f"  origin         {', '.join(x for x in (e.paper_ids, e.origin_url) if x)}")
    return lines


def stagetable(name: str, resolution: int) -> str:
    from zoo.architecture import describe

    a = describe(name, resolution)
    stem_conv = " + ".join(f"{c.kernel}x{c.kernel}/{c.stride} conv" for c in a.stem.convs)
    rows = [["stem", "-", f"{stem_conv}, {a.stem.pool_kernel}x{a.stem.pool_kernel}/{a.stem.pool_stride} max-pool",
             str(a.stem.out_channels), f"{a.stem.out_size}x{a.stem.out_size}",
             f"{a.stem.params / 1e6:.2f}", f"{a.stem.macs / 1e9:.3f}", ""]]  # fmt: skip
    for s in a.stages:
        b = s.blocks[0]
        sc = b.shortcut
        if sc.kind == "identity":
            shortcut = "identity"
        else:
            how = "avg-pool + 1x1" if sc.pooled else f"1x1/{sc.conv.stride}"
            shortcut = f"projection {how} ({sc.in_channels}->{sc.out_channels})"
        if b.stride > 1:
            shortcut += f"; stride {b.stride} on {b.stride_conv}"
        kinds = sorted({x.kind for x in s.blocks})
        groups = f", {b.groups}x{b.group_width}d" if b.groups > 1 else ""
        size = f"{s.out_size}x{s.out_size}"
        rows.append([s.name, str(s.depth), "/".join(kinds) + groups, str(s.out_channels), size,
                     f"{s.params / 1e6:.2f}", f"{s.macs / 1e9:.3f}", shortcut])  # fmt: skip
    h = a.head
    rows.append(["head", "-", f"global avg-pool + fc {h.in_features}->{h.num_classes}" if h.num_classes
                 else "global avg-pool (no fc)", str(h.num_classes or h.in_features), "1x1",
                 f"{h.params / 1e6:.2f}", f"{h.macs / 1e9:.3f}", ""])  # fmt: skip
    rows.append(["total", str(sum(a.layers)), f"{a.depth} weighted layers", "", "", f"{a.params / 1e6:.2f}",
                 f"{a.gmacs:.3f}", ""])  # fmt: skip
    headers = ["stage", "blocks", "block", "out ch", "size", "params (M)", "GMACs", "first block's shortcut"]
    return f"Stages at {resolution} px:\n" + table(headers, rows, right={1, 3, 5, 6})


def cmd_info(args: argparse.Namespace) -> int:
    entry = registry.get(args.name)
    resolution = args.resolution or 224
    if args.json:
        from zoo.architecture import describe

        arch = dataclasses.asdict(describe(entry.name, resolution))
        print(json.dumps({**entry.to_dict(), "top1": entry.top1, "architecture": arch}, indent=1))
        return 0
    print("\n".join(card_lines(entry)))
    print()
    print(stagetable(entry.name, resolution))
    return 0


def add_commands(sub) -> None:
    p = sub.add_parser("list", help="list the models (filters combine)")
    p.add_argument("query", nargs="*", help="words that must all appear (name, license, pretraining data)")
    p.add_argument("--family", choices=["resnet", "resnext"])
    p.add_argument("--depth", type=int, choices=[18, 34, 50, 101, 152])
    p.add_argument("--license", help="e.g. apache-2.0, bsd-3-clause, cc-by-nc-4.0, unknown")
    p.add_argument("--pretrain", help="pretraining data, e.g. in1k, ig1b-swsl, yfcc100m-ssl")
    p.add_argument("--defaults", action="store_true", help="only the default tag of each architecture")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=cmd_list)

    p = sub.add_parser("info", help="a model's card and per-stage table")
    p.add_argument("name", help="arch.tag (resnet50.a1_in1k) or a bare architecture (resnet50)")
    p.add_argument("--resolution", type=int, help="input size for the stage table (default 224)")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=cmd_info)
