"""How the REST API says no: one JSON error shape everywhere, 405 with `Allow`, HEAD on GET routes, 422 for
a repeated single-valued query parameter, one exact naming rule with suggestions, the Hub's X-Error-Code."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from app import build_app
from tests.conftest import LIVE_TAGS
from zoo import weights

TAG = LIVE_TAGS[0]
SHAPE = {"status", "code", "message", "suggestions"}
FILE_ROUTES = [f"/api/models/{TAG}/weights", f"/timm/{TAG}/resolve/main/model.safetensors",
               f"/timm/{TAG}/resolve/main/config.json"]


@pytest.fixture(scope="module")
def client(resnet18_file, tmp_path_factory):
    """One app for the module, with TAG in its own store (the autouse fixture's store changes per test)."""
    mp = pytest.MonkeyPatch()
    mp.setenv("ZOO_WEIGHTS_DIR", str(tmp_path_factory.mktemp("weights")))
    from zoo import settings

    settings.get_settings.cache_clear()
    weights.import_file(resnet18_file, TAG)
    with TestClient(build_app()) as c:
        c.store = settings.get_settings().weights_dir
        yield c
    mp.undo()


@pytest.fixture(autouse=True)
def same_store(client, monkeypatch):
    monkeypatch.setenv("ZOO_WEIGHTS_DIR", str(client.store))
    from zoo import settings

    settings.get_settings.cache_clear()


def _is_error(r, status: int, code: str | None = None) -> dict:
    assert r.status_code == status, (r.request.method, r.request.url, r.status_code, r.text[:300])
    body = r.json()["error"]
    assert set(body) == SHAPE and body["status"] == status and (code is None or body["code"] == code)
    return body


@pytest.mark.parametrize("path", FILE_ROUTES)
@pytest.mark.parametrize("method", ["POST", "PUT", "DELETE", "PATCH"])
def test_other_methods_on_file_routes_answer_405_with_allow(client, path, method):
    r = client.request(method, path)
    _is_error(r, 405, "method_not_allowed")
    assert r.headers["allow"] == "GET, HEAD, OPTIONS"


def test_options_lists_the_methods_and_head_works_wherever_get_does(client):
    r = client.options(FILE_ROUTES[0])
    assert r.status_code == 204 and r.headers["allow"] == "GET, HEAD, OPTIONS"
    assert client.options("/api/models/timm/x/paths-info/main").headers["allow"] == "POST, OPTIONS"
    _is_error(client.get("/api/models/timm/x/paths-info/main"), 405)
    for path in ("/api/models", f"/api/models/{TAG}", "/healthz", f"/api/models/timm/{TAG}"):
        head, get = client.head(path), client.get(path)
        assert head.status_code == get.status_code == 200 and head.content == b"", path


def test_every_error_has_the_one_json_shape(client):
    _is_error(client.get("/no/such/page"), 404, "not_found")  # outside /api: the Gradio mount's 404
    _is_error(client.get("/api/no/such/route"), 404, "not_found")
    _is_error(client.get("/api/models", params={"depth": "deep"}), 422, "invalid_request")
    _is_error(client.get(FILE_ROUTES[0], headers={"Range": "bytes=999999999-"}), 416, "range_not_satisfiable")
    _is_error(client.get(FILE_ROUTES[0], headers={"If-Match": '"other"'}), 412, "precondition_failed")
    assert client.get("/config").status_code == 200  # Gradio's own routes are untouched


@pytest.mark.parametrize("query", ["q=res&q=net", "depth=50&depth=18", "local=true&local=false"])
def test_a_single_valued_query_parameter_given_twice_is_refused(client, query):
    body = _is_error(client.get(f"/api/models?{query}"), 422, "invalid_request")
    assert "more than once" in body["message"] and query.split("=")[0] in body["message"]


def test_a_many_valued_query_parameter_may_repeat(client):
    r = client.get(f"/api/models/timm/{TAG}?expand=sha&expand=tags")
    assert r.status_code == 200 and set(r.json()) == {"_id", "id", "sha", "tags"}


@pytest.mark.parametrize("name", [TAG.upper(), f" {TAG}", f"{TAG} ", "Resnet18", "resnet18.a1-in1k"])
def test_names_are_exact_with_a_did_you_mean(client, name):
    from urllib.parse import quote

    for path in (f"/api/models/{quote(name)}", f"/api/models/{quote(name)}/weights",
                 f"/api/models/{quote(name)}/header"):
        body = _is_error(client.get(path), 404, "unknown_model")
        assert body["suggestions"] and body["suggestions"][0].startswith("resnet18"), path
    assert client.get(f"/api/models/{TAG}").json()["name"] == TAG
    assert client.get("/api/models/resnet18").json()["name"] == TAG  # a bare architecture: its default tag


@pytest.mark.parametrize(("path", "code"), [
    ("/api/models/timm/nothing", "RepoNotFound"), (f"/api/models/TIMM/{TAG}", "RepoNotFound"),
    (f"/api/models/timm/{TAG}/revision/v2", "RevisionNotFound"),
    (f"/api/models/timm/{TAG}/tree/main/sub", "EntryNotFound"),
    (f"/timm/{TAG}/resolve/main/nothing.bin", "EntryNotFound"),
    ("/timm/resnet50.a1_in1k/resolve/main/x", "RepoNotFound"),
])
def test_hub_errors_carry_x_error_code_equal_to_the_body(client, path, code):
    for method in ("GET", "HEAD"):
        r = client.request(method, path)
        assert r.status_code == 404 and r.headers["x-error-code"] == code and r.headers["x-error-message"]
    _is_error(client.get(path), 404, code)
