"""The API tab's text, generated from the real routes: Gradio's named endpoints (gradio_client and
curl) and the REST routes (curl, huggingface_hub), for the server's own base URL."""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

from fastapi.routing import APIRoute

from zoo import registry

EXAMPLE_IMAGE = "chelsea.jpg"
EXAMPLE_ZIP = "labelled.zip"


PLACEHOLDERS = {"run_id": "<a run id from /runs>", "key": "<a key from /degradation_runs>",
                "model": None, "text": "resnet50"}  # model: the default tag; never Gradio's "Hello!!"


def _example(param: dict[str, Any], tag: str) -> tuple[str, Any]:
    """(Python literal, JSON value) for one Gradio endpoint parameter."""
    if param.get("parameter_has_default") and param["parameter_default"] is None:
        return "None", None  # optional (e.g. the zip when training on the built-in digits)
    if param.get("python_type", {}).get("type") == "filepath":
        name = EXAMPLE_ZIP if param.get("component") == "File" and "zip" in str(param.get("label", "")).lower() \
            else EXAMPLE_IMAGE
        return f'handle_file("{name}")', {"path": f"<server path of {name} from /gradio_api/upload>",
                                          "meta": {"_type": "gradio.FileData"}}
    name = param["parameter_name"]
    if param.get("parameter_has_default"):
        value = param["parameter_default"]
    elif name in PLACEHOLDERS:
        value = PLACEHOLDERS[name] or tag
    elif param.get("python_type", {}).get("type") == "str":
        value = f"<{name.replace('_', ' ')}>"
    else:
        value = param.get("example_input")
    return repr(value), value


def _returns(ep: dict[str, Any]) -> str:
    return ", ".join(r.get("label") or r.get("component", "?") for r in ep.get("returns", [])) or "nothing"


def gradio_section(api_info: dict[str, Any], base_url: str) -> str:
    """One gradio_client line per named endpoint (with its returns), and curl for any of them, folded."""
    tag = registry.load().defaults()[0].name
    calls, curl = [], []
    for name, ep in sorted(api_info.get("named_endpoints", {}).items()):
        params = ep.get("parameters", [])
        examples = [_example(p, tag) for p in params]
        args = "".join(f"{p['parameter_name']}={py}, " for p, (py, _) in zip(params, examples, strict=True))
        calls += [f"# {ep.get('description') or name} -> {_returns(ep)}",
                  f'client.predict({args}api_name="{name}")']
        payload = json.dumps({"data": [js for _, js in examples]})
        curl += [f"# {name} -> {_returns(ep)}",
                 f"EVENT_ID=$(curl -s -X POST {base_url}/gradio_api/call{name} -H 'Content-Type: application/json' "
                 f"-d '{payload}' | python3 -c 'import json,sys; print(json.load(sys.stdin)[\"event_id\"])')",
                 f"curl -sN {base_url}/gradio_api/call{name}/$EVENT_ID", ""]
    return "\n".join([
        "## Python: `gradio_client`", "",
        "Each call returns its outputs in order; the last output of a tab's actions is its status line: empty "
        "when the call worked, else one sentence saying what went wrong.", "",
        "```python", "from gradio_client import Client, handle_file", f'client = Client("{base_url}")', "",
        *calls, "```", "",
        "<details><summary><b>curl: Gradio's HTTP API</b> (upload files first, then start a call and read its "
        "result as server-sent events)</summary>", "",
        f"Upload: `curl -F files=@chelsea.jpg {base_url}/gradio_api/upload` answers with the server paths.", "",
        "```bash", *curl, "```", "", "</details>",
    ])


def rest_section(routes: Iterable[Any], base_url: str) -> str:
    """One line per REST route (method, path, summary) and a curl example for each GET route."""
    lines = ["## REST routes", "", "| method | path | what it does |", "|---|---|---|"]
    examples = []
    tag = registry.load().defaults()[0].name
    hub_mirror = None
    for r in routes:
        if not isinstance(r, APIRoute) or not r.include_in_schema:
            continue
        methods = ", ".join(sorted(r.methods - {"OPTIONS"}))
        lines.append(f"| {methods} | `{r.path.replace(':path', '')}` | {r.summary or r.name} |")
        if "/resolve/" in r.path:
            hub_mirror = r.path
        elif "GET" in r.methods:
            path = r.path.replace("{name}", tag)
            if "{" not in path:
                examples.append(f"curl -s {base_url}{path}")
    lines = [*lines[:2], f'Full schema: <a href="{base_url}/openapi.json" target="_blank">/openapi.json</a> · '
             f'interactive docs: <a href="{base_url}/docs" target="_blank">/docs</a> · '
             f'<a href="{base_url}/redoc" target="_blank">/redoc</a>', "", "<details><summary><b>Every REST route"
             "</b></summary>", "", *lines[2:], "", "```bash", *examples, "```", "", "</details>"]
    if hub_mirror:
        lines += ["", "## `huggingface_hub` and timm: use this zoo as a Hub mirror", "", "```python",
                  "import os", f'os.environ["HF_ENDPOINT"] = "{base_url}"  # before importing huggingface_hub',
                  "from huggingface_hub import HfApi, hf_hub_download, snapshot_download", "import timm", "",
                  f'folder = snapshot_download("timm/{tag}")  # model.safetensors, config.json, README.md',
                  f'path = hf_hub_download("timm/{tag}", "model.safetensors")',
                  f'info = HfApi().model_info("timm/{tag}")  # files, sizes, SHA-256, card data',
                  f'model = timm.create_model("hf-hub:timm/{tag}", pretrained=True)',
                  '# a fine-tuned run of the Transfer lab: timm.create_model("hf-hub:zoo/<run-id>", pretrained=True)',
                  "```", "", "```bash", f"HF_ENDPOINT={base_url} hf download timm/{tag}", "```"]
    return "\n".join(lines)


def render(api_info: dict[str, Any], routes: Iterable[Any], base_url: str) -> str:
    base = base_url.rstrip("/")
    return gradio_section(api_info, base) + "\n\n" + rest_section(routes, base)
