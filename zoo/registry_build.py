"""Generate `zoo/data/registry.json` from timm itself and timm's published results.

Usage: `python -m zoo.registry_build [--data-dir DIR] [--out FILE] [--check]`.
Every fact comes from one of two sources, named in the file's header: the installed timm (tags,
pretrained configs, the real models' parameter counts and MACs) and the CSVs of timm's `results/`
folder in `../shared/data/timm-results/`. Run it again after upgrading timm.
"""

from __future__ import annotations

import argparse
import csv
import json
import re
import sys
from collections.abc import Iterable
from dataclasses import replace
from pathlib import Path

import timm
from timm.models import _registry as timm_registry

from zoo import architecture, registry
from zoo.registry import ARCHITECTURES, ModelEntry, Result
from zoo.settings import REPO_ROOT

DATA_DIR = REPO_ROOT.parent / "shared" / "data" / "timm-results"
RESULT_FILES = {
    "imagenet": "results-imagenet.csv",
    "imagenet-real": "results-imagenet-real.csv",
    "imagenetv2": "results-imagenetv2-matched-frequency.csv",
    "sketch": "results-sketch.csv",
    "imagenet-r": "results-imagenet-r.csv",
    "imagenet-a": "results-imagenet-a.csv",
}
METADATA_FILE = "model_metadata-in1k.csv"
GMACS_FILE = "benchmark-infer-amp-nchw-pt291-cu128-4090.csv"  # cross-check of our MAC counts
# model_metadata-in1k.csv's vocabulary -> ours (the data set, then how it was used)
PRETRAIN_WORDS = {"in1k": "in1k", "yfc-semisl": "yfcc100m-ssl", "ig1b-swsl": "ig1b-swsl", "ig1b-wsl": "ig1b-wsl"}


def read_csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def pretrain_from_tag(tag: str) -> str:
    """The pretraining data that timm's tag naming states: `fb_ssl_yfcc100m_ft_in1k` -> yfcc100m-ssl."""
    m = re.fullmatch(r"(?:fb_)?(ssl|swsl|wsl)_([a-z0-9]+)_ft_in1k", tag)
    if m:
        return f"{m.group(2)}-{m.group(1)}"
    if tag.endswith("in1k"):
        return "in1k"
    return tag  # a tag named after its own data set, e.g. resnet50.bamboo


def metadata_names(name: str, arch: str) -> list[str]:
    """Names under which model_metadata-in1k.csv may list `name`: itself, timm's deprecated aliases
    that point at it (checked to name the same architecture: timm maps some ig_ aliases wrongly),
    and the bare architecture when `name` is timm's default tag for it."""
    out = [name]
    out += [alias for alias, target in timm_registry._deprecated_models.items() if target == name and arch in alias]
    if timm.models.get_pretrained_cfg(arch).tag == name.split(".", 1)[1]:
        out.append(arch)
    return out


def pretraining(name: str, arch: str, tag: str, metadata: dict[str, str]) -> tuple[str, str]:
    """(pretrain, source); the CSV and the tag's own name must agree where both speak."""
    from_name = pretrain_from_tag(tag)
    for key in metadata_names(name, arch):
        if key in metadata:
            from_csv = PRETRAIN_WORDS.get(metadata[key])
            if from_csv != from_name:
                raise SystemExit(f"{name}: {METADATA_FILE} says {metadata[key]!r}, the tag says {from_name!r}")
            return from_csv, f"{METADATA_FILE} (as {key})"
    return from_name, "timm tag name"


def results_for(name: str, tables: dict[str, list[dict[str, str]]], params: int) -> list[Result]:
    """Every published row of `name`; each row's param count must match the real model's."""
    rows = []
    for dataset, table in tables.items():
        for row in table:
            if row["model"] == name:
                published = float(row["param_count"].replace(",", ""))
                if round(params / 1e6, 2) != published:
                    raise SystemExit(f"{name}: the model has {params:,} params, {dataset} lists {published} M")
                rows.append(
                    Result(
                        dataset=dataset,
                        img_size=int(row["img_size"]),
                        top1=float(row["top1"]),
                        top5=float(row["top5"]),
                        crop_pct=float(row["crop_pct"]),
                        interpolation=row["interpolation"],
                    )
                )
    return sorted(rows, key=lambda r: (list(RESULT_FILES).index(r.dataset), r.img_size))


def build_entries(data_dir: Path) -> list[ModelEntry]:
    """Every pretrained tag of ARCHITECTURES, with facts from timm and `data_dir`'s CSVs."""
    tables = {ds: read_csv(data_dir / f) for ds, f in RESULT_FILES.items()}
    metadata = {r["model"]: r["pretrain"] for r in read_csv(data_dir / METADATA_FILE)}
    published_gmacs = {
        (r["model"], int(r["infer_img_size"])): float(r["infer_gmacs"]) for r in read_csv(data_dir / GMACS_FILE)
    }
    entries: list[ModelEntry] = []
    for arch in ARCHITECTURES:
        tags = timm.list_pretrained(f"{arch}.*")
        if not tags:
            raise SystemExit(f"timm {timm.__version__} has no pretrained tags for {arch}")
        cost: dict[tuple[int, int], tuple[architecture.Architecture, int]] = {}
        group = []
        for name in tags:
            cfg = timm.models.get_pretrained_cfg(name)
            num_classes = cfg.num_classes
            if num_classes not in cost:
                model = architecture.build_meta(arch, num_classes=num_classes)
                cost[num_classes] = (architecture.describe_model(model, arch, 224), model)
            desc, model = cost[num_classes]
            eval_size = (cfg.test_input_size or cfg.input_size)[-1]
            macs_eval = desc.macs if eval_size == 224 else sum(architecture.count_macs(model, eval_size)[0].values())
            for size, macs in ((224, desc.macs), (eval_size, macs_eval)):
                ref = published_gmacs.get((arch, size))
                if num_classes == 1000 and ref is not None and round(macs / 1e9, 2) != ref:
                    raise SystemExit(f"{arch} at {size}px: counted {macs / 1e9:.3f} GMACs, timm publishes {ref}")
            results = results_for(name, tables, desc.params)
            first = desc.stages[0].blocks[0]
            pretrain, pretrain_source = pretraining(name, arch, cfg.tag, metadata)
            group.append(
                ModelEntry(
                    name=name,
                    arch=arch,
                    tag=cfg.tag,
                    family="resnext" if first.groups > 1 else "resnet",
                    depth=desc.depth,
                    block=first.kind,
                    layers=desc.layers,
                    cardinality=first.groups,
                    base_width=first.width * 64 // (64 * first.groups),
                    hf_hub_id=cfg.hf_hub_id,
                    hf_filename="model.safetensors",
                    hf_revision=None,
                    num_classes=num_classes,
                    input_size=tuple(cfg.input_size),
                    test_input_size=tuple(cfg.test_input_size or cfg.input_size),
                    crop_pct=cfg.crop_pct,
                    test_crop_pct=cfg.test_crop_pct or cfg.crop_pct,
                    crop_mode=cfg.crop_mode,
                    interpolation=cfg.interpolation,
                    mean=tuple(cfg.mean),
                    std=tuple(cfg.std),
                    license=cfg.license,
                    pretrain=pretrain,
                    pretrain_source=pretrain_source,
                    params=desc.params,
                    gmacs=round(desc.macs / 1e9, 4),
                    gmacs_eval=round(macs_eval / 1e9, 4),
                    results=tuple(results),
                    paper_ids=cfg.paper_ids,
                    origin_url=cfg.origin_url,
                    is_default=False,
                )
            )
        default = registry.choose_default(group)
        entries += [replace(e, is_default=True) if e is default else e for e in group]
    return entries


def render(entries: Iterable[ModelEntry], data_dir: Path) -> str:
    """The data file's text: a header citing the sources, then one object per entry."""
    source = (data_dir / "SOURCE.md").read_text() if (data_dir / "SOURCE.md").exists() else ""
    commit = re.search(r"commit ([0-9a-f]{40})", source)
    doc = {
        "generated_by": "python -m zoo.registry_build",
        "sources": {
            "timm": f"timm {timm.__version__}: list_pretrained, pretrained configs, the real models "
            "built on the meta device (params, blocks, GMACs counted in fvcore's convention)",
            "results": "timm results/ CSVs (huggingface/pytorch-image-models"
            + (f" at {commit.group(1)}" if commit else "")
            + f", Apache-2.0): {', '.join(RESULT_FILES.values())}, {METADATA_FILE}",
        },
        "default_policy": registry.DEFAULT_POLICY,
        "models": [e.to_dict() for e in entries],
    }
    return json.dumps(doc, indent=1) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m zoo.registry_build", description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", type=Path, default=DATA_DIR, help="timm results CSVs (default: %(default)s)")
    parser.add_argument("--out", type=Path, default=registry.DATA_FILE, help="data file (default: %(default)s)")
    parser.add_argument("--check", action="store_true", help="exit 1 if the data file is not up to date")
    args = parser.parse_args(argv)
    if not (args.data_dir / RESULT_FILES["imagenet"]).exists():
        parser.error(f"no timm results in {args.data_dir}; pass --data-dir")
    text = render(build_entries(args.data_dir), args.data_dir)
    if args.check:
        current = args.out.read_text() if args.out.exists() else ""
        print(f"{args.out}: {'up to date' if current == text else 'OUT OF DATE: run python -m zoo.registry_build'}")
        return 0 if current == text else 1
    args.out.parent.mkdir(parents=True, exist_ok=True)
    tmp = args.out.with_suffix(".tmp")
    tmp.write_text(text)
    tmp.replace(args.out)
    n = text.count('"name"')
    print(f"wrote {n} entries to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
