"""The Hugging Face Hub's read API over the mirror (`zoo.mirror`), so `huggingface_hub`, the `hf` CLI and
timm work with HF_ENDPOINT set to this server: model info, tree, paths-info and resolve.

Repo ids have a slash (`timm/resnet50.a1_in1k`, `zoo/<run-id>`); names without one belong to the zoo's
own catalog routes (`/api/models/{name}`). Errors carry the Hub's X-Error-Code, the same as the body's code.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Form, Path, Query, Request
from fastapi.responses import Response

from zoo import httpfiles, hubinfo, mirror
from zoo.apierrors import ErrorResponse, StrictQueryRoute

router = APIRouter(route_class=StrictQueryRoute, tags=["Hugging Face Hub mirror"])
Org = Annotated[str, Path(description="The repo's owner: `timm` for registry tags, `zoo` for fine-tuned runs",
                          max_length=96)]
Repo = Annotated[str, Path(description="The repo's name: `resnet50.a1_in1k`, or a run id", max_length=96)]
Revision = Annotated[str, Path(description="`main`, or the commit id model info gives as `sha`", max_length=256)]
Expand = Annotated[list[Literal[hubinfo.EXPAND]] | None,  # type: ignore[valid-type]
                   Query(description="Only these properties (and the id)")]
HUB_ERRORS: dict[int | str, dict[str, Any]] = {404: {
    "model": ErrorResponse,
    "description": "No such repo, revision or file here; X-Error-Code is RepoNotFound, RevisionNotFound or "
                   "EntryNotFound, as the body's code"}}
INFO = "Hub model info: files with sizes and LFS hashes, commit, card data (`HfApi.model_info`)"
TREE = "Hub tree listing of a repo's files (`HfApi.list_repo_tree`, `list_repo_files`)"
RESOLVE = "Hub download of one file of a repo (`hf_hub_download`, `snapshot_download`, timm `hf-hub:`)"


@router.get("/api/models/{org}/{repo}", summary=INFO, responses=HUB_ERRORS)
def model_info(org: Org, repo: Repo, expand: Expand = None, blobs: bool = False,
               security_status: Annotated[bool, Query(alias="securityStatus")] = False) -> dict[str, Any]:
    return hubinfo.model_info(mirror.repo(f"{org}/{repo}"), expand)


@router.get("/api/models/{org}/{repo}/revision/{revision}", summary=INFO, responses=HUB_ERRORS)
def model_info_at(org: Org, repo: Repo, revision: Revision, expand: Expand = None, blobs: bool = False,
                  security_status: Annotated[bool, Query(alias="securityStatus")] = False) -> dict[str, Any]:
    return hubinfo.model_info(mirror.at(f"{org}/{repo}", revision), expand)


@router.get("/api/models/{org}/{repo}/tree/{revision}", summary=TREE, responses=HUB_ERRORS)
def tree(org: Org, repo: Repo, revision: Revision, recursive: bool = False,
         expand: bool = False) -> list[dict[str, Any]]:
    return hubinfo.tree(mirror.at(f"{org}/{repo}", revision), "", expand)


@router.get("/api/models/{org}/{repo}/tree/{revision}/{path:path}", summary=TREE, responses=HUB_ERRORS)
def tree_path(org: Org, repo: Repo, revision: Revision, path: Annotated[str, Path(max_length=1000)],
              recursive: bool = False, expand: bool = False) -> list[dict[str, Any]]:
    return hubinfo.tree(mirror.at(f"{org}/{repo}", revision), path, expand)


@router.post("/api/models/{org}/{repo}/paths-info/{revision}", responses=HUB_ERRORS,
             summary="Hub paths-info: the listed files that exist (`HfApi.get_paths_info`)")
def paths_info(org: Org, repo: Repo, revision: Revision,
               paths: Annotated[list[str] | None, Form(description="Paths in the repo")] = None,
               expand: Annotated[bool, Form()] = False) -> list[dict[str, Any]]:
    return hubinfo.paths_info(mirror.at(f"{org}/{repo}", revision), paths or [], expand)


@router.get("/{org}/{repo}/resolve/{revision}/{filename:path}", summary=RESOLVE, **httpfiles.openapi(HUB_ERRORS))
@router.head("/{org}/{repo}/resolve/{revision}/{filename:path}", summary=RESOLVE, **httpfiles.openapi(HUB_ERRORS))
def resolve(org: Org, repo: Repo, revision: Revision, filename: Annotated[str, Path(max_length=1000)],
            request: Request) -> Response:
    """What `huggingface_hub` asks the Hub for, with the headers it reads: X-Repo-Commit, and for the LFS
    weights X-Linked-Etag (the SHA-256) and X-Linked-Size; the ETag of a small file is its git blob id."""
    found, f = mirror.file_at(f"{org}/{repo}", revision, filename)
    extra = {"X-Repo-Commit": found.commit}
    if f.lfs:
        extra |= {"X-Linked-Etag": f.etag, "X-Linked-Size": str(f.size)}
    return httpfiles.send(f, request.headers, extra, tag=f.etag, media_type=f.media_type)
