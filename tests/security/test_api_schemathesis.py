"""schemathesis against the engine's own OpenAPI description (`/openapi.json`): every
documented operation, in positive and negative generation modes, with and without the token,
through schemathesis' default checks (no 5xx, documented status codes, content types and
bodies matching the schema, 405 with a correct `Allow` header for undeclared methods)."""

from __future__ import annotations

import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis import GenerationMode

from analyzer.daemon.server import OPENAPI, ApiServer

from .conftest import TOKEN

schema = schemathesis.openapi.from_dict(OPENAPI)
schema.config.generation.update(modes=[GenerationMode.POSITIVE, GenerationMode.NEGATIVE],
                                deterministic=True)


@schema.parametrize()
@settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck))
def test_api_conforms_to_its_openapi(case: schemathesis.Case, api: ApiServer) -> None:
    host, port = api.address
    case.call_and_validate(base_url=f"http://{host}:{port}",
                           headers={"Authorization": f"Bearer {TOKEN}"})


@schema.include(method="POST").parametrize()
@settings(max_examples=10, deadline=None, suppress_health_check=list(HealthCheck))
def test_writes_without_token_are_refused_as_documented(case: schemathesis.Case,
                                                         api: ApiServer) -> None:
    host, port = api.address
    response = case.call(base_url=f"http://{host}:{port}")
    # schemathesis also sends undeclared methods (TRACE, ...) to each path: those get a 405
    expected = (401, 404) if case.method.upper() == "POST" else (405,)
    assert response.status_code in expected, (case.method, response.text)
    case.validate_response(response)
