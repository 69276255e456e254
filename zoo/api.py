"""HTTP routes over the services (a thin router; the weight-file routes arrive with the API issue)."""

from __future__ import annotations

import html

from fastapi import APIRouter
from fastapi.responses import HTMLResponse

from zoo import registry

router = APIRouter()


@router.get("/healthz", summary="Liveness: the process answers")
def healthz() -> dict[str, str]:
    return {"status": "ok"}


@router.get("/", response_class=HTMLResponse, include_in_schema=False)
def index() -> str:
    """A plain page listing the registry (the Gradio UI replaces it)."""
    rows = "".join(
        "<tr>"
        + "".join(
            f"<td>{html.escape(str(v))}</td>"
            for v in (
                e.name + (" ★" if e.is_default else ""),
                e.depth,
                f"{e.params / 1e6:.2f}",
                f"{e.gmacs:.2f}",
                "-" if e.top1 is None else f"{e.top1:.3f} @ {e.eval_size}px",
                e.license or "unknown",
                e.pretrain,
            )
        )
        + "</tr>"
        for e in registry.load()
    )
    head = "".join(
        f"<th>{h}</th>" for h in ("model", "depth", "params (M)", "GMACs@224", "top-1", "license", "pretrain")
    )
    return (
        "<!doctype html><html lang=en><meta charset=utf-8><title>ResNet Zoo</title>"
        "<style>body{font:14px system-ui;margin:2em}table{border-collapse:collapse}"
        "td,th{padding:2px 10px;border-bottom:1px solid #ddd;text-align:left}</style>"
        f"<h1>ResNet Zoo</h1><p>{len(registry.load())} pretrained ResNet/ResNeXt tags. "
        "★ marks each architecture's default.</p>"
        f"<table><thead><tr>{head}</tr></thead><tbody>{rows}</tbody></table></html>"
    )
