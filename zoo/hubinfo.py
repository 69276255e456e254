"""A mirrored repo in the JSON of the Hub's read API: model info, tree entries, paths-info — the fields
`huggingface_hub` (ModelInfo, RepoFile) and the `hf` CLI read."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from zoo import hubfiles
from zoo.errors import EntryNotFoundError
from zoo.mirror import Repo, RepoFile

# The Hub's `expand` properties for models that this mirror can answer (others are refused with 422).
EXPAND = ("author", "cardData", "createdAt", "disabled", "downloads", "downloadsAllTime", "gated",
          "lastModified", "library_name", "likes", "model-index", "pipeline_tag", "private", "safetensors", "sha",
          "siblings", "spaces", "tags", "usedStorage")
COMMIT_TITLE = "Served by a ResNet Zoo mirror"


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%S.000Z")


def _lfs(f: RepoFile, sha_key: str) -> dict[str, Any]:
    return {"size": f.size, sha_key: f.sha256, "pointerSize": f.pointer_size}


def model_info(repo: Repo, expand: list[str] | None = None) -> dict[str, Any]:
    """`GET /api/models/{repo_id}[/revision/{rev}]`: every property, or with `expand` only those (and the id)."""
    total = sum(repo.parameters.values())
    everything = {
        "author": repo.repo_id.split("/")[0], "sha": repo.commit, "lastModified": _iso(repo.last_modified),
        "createdAt": _iso(repo.created), "private": False, "disabled": False, "gated": False, "downloads": 0,
        "downloadsAllTime": 0, "likes": 0, "library_name": repo.card_data.get("library_name", hubfiles.LIBRARY),
        "tags": list(repo.tags), "pipeline_tag": hubfiles.PIPELINE, "cardData": repo.card_data,
        "model-index": repo.card_data.get("model-index"), "spaces": [],
        "siblings": [{"rfilename": f.rfilename, "size": f.size, "blobId": f.blob_id,
                      **({"lfs": _lfs(f, "sha256")} if f.lfs else {})} for f in repo.files],
        "safetensors": {"parameters": repo.parameters, "total": total},
        "usedStorage": sum(f.size for f in repo.files),
    }
    keep = set(expand) if expand else set(everything)
    return {"_id": repo.commit[:24], "id": repo.repo_id, **({"modelId": repo.repo_id} if not expand else {}),
            **{k: v for k, v in everything.items() if k in keep}}


def entry(repo: Repo, f: RepoFile, expand: bool = False) -> dict[str, Any]:
    """One file as the tree and paths-info routes list it."""
    out: dict[str, Any] = {"type": "file", "oid": f.blob_id, "size": f.size, "path": f.rfilename}
    if f.lfs:
        out["lfs"] = _lfs(f, "oid")
    if expand:
        out["lastCommit"] = {"id": repo.commit, "title": COMMIT_TITLE, "date": _iso(repo.last_modified)}
    return out


def tree(repo: Repo, path: str = "", expand: bool = False) -> list[dict[str, Any]]:
    """`GET .../tree/{rev}[/{path}]`: the repo has no folders, so only its root can be listed.

    Raises:
        EntryNotFoundError: any other path (a file is not a folder).
    """
    path = path.strip("/")
    if path:
        what = "a file, not a folder" if repo.file(path) else "not in it"
        raise EntryNotFoundError(f"{path[:200]!r} is {what}: {repo.repo_id} has only files at its root.",
                                 commit=repo.commit)
    return [entry(repo, f, expand) for f in repo.files]


def paths_info(repo: Repo, paths: list[str], expand: bool = False) -> list[dict[str, Any]]:
    """`POST .../paths-info/{rev}`: the given paths that exist (others are left out, as the Hub does)."""
    wanted = {p.strip("/") for p in paths}
    return [entry(repo, f, expand) for f in repo.files if f.rfilename in wanted]
