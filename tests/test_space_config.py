"""README.md's front matter is a valid Hugging Face Space configuration that matches the code."""

from __future__ import annotations

import re

import yaml

from zoo import compare, registry
from zoo.settings import REPO_ROOT


def front_matter() -> dict:
    text = (REPO_ROOT / "README.md").read_text()
    match = re.match(r"---\n(.*?)\n---\n", text, re.S)
    assert match, "README.md must start with the Space's YAML front matter"
    return yaml.safe_load(match.group(1))


def test_front_matter_matches_the_pins_and_the_default_tags():
    config = front_matter()
    pins = dict(line.split("==") for line in (REPO_ROOT / "requirements.txt").read_text().splitlines()
                if "==" in line and not line.startswith("#"))
    assert config["sdk"] == "gradio" and config["sdk_version"] == pins["gradio"]
    assert config["python_version"] == "3.11" and (REPO_ROOT / config["app_file"]).is_file()
    assert config["license"] == "apache-2.0" and config["suggested_hardware"]
    entries = [registry.get(t) for t in compare.default_tags()]
    assert config["models"] == [e.hf_hub_id for e in entries]
    assert config["preload_from_hub"] == [f"{e.hf_hub_id} {e.hf_filename}" for e in entries]
