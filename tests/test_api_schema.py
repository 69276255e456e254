"""Schemathesis explores every REST route from the app's own OpenAPI: no 5xx, no schema violations."""

from __future__ import annotations

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings

from app import build_app
from tests.conftest import LIVE_TAGS
from zoo import weights


@pytest.mark.slow
def test_api_conforms_to_its_schema(resnet18_file):
    weights.import_file(resnet18_file, LIVE_TAGS[0])  # one local weight, so the file routes answer 200 too
    schema = schemathesis.openapi.from_asgi("/openapi.json", build_app())
    operations = [result.ok() for result in schema.get_all_operations()]
    assert {op.label for op in operations} >= {"GET /api/models", "GET /api/models/{name}/weights",
                                               "HEAD /api/models/{name}/weights", "GET /readyz"}
    for op in operations:  # positive (valid) and negative (invalid) requests for each operation

        @given(case=op.as_strategy())
        @settings(max_examples=30, deadline=None, suppress_health_check=list(HealthCheck), database=None)
        def check(case):
            case.call_and_validate()

        check()


def test_the_schema_check_catches_a_server_error(monkeypatch):
    from zoo import catalog

    def broken(**_):
        raise RuntimeError("boom")

    monkeypatch.setattr(catalog, "search", broken)
    schema = schemathesis.openapi.from_asgi("/openapi.json", build_app())
    op = schema["/api/models"]["GET"]
    with pytest.raises(Exception, match=r"boom|Server error"):
        op.Case().call_and_validate()
