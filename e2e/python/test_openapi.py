"""`/openapi.json` is a valid OpenAPI 3.1 document (checked with the OpenAPI
Initiative's schema for 3.1 documents, as schemathesis ships it) and describes the
answers as Segmind's clients read them. That every route is in it is a native test
(edge/src/handlers/openapi.rs)."""

import os

import jsonschema_rs
from schemathesis.specs.openapi.definitions import OPENAPI_31

import requests

BASE = os.environ.get("PARALLAX_BASE_URL", "http://127.0.0.1:8787")


def document():
    response = requests.get(f"{BASE}/openapi.json")
    assert response.status_code == 200
    return response.json()


def test_the_document_is_valid_openapi_3_1():
    errors = [f"{e.instance_path}: {e.message}" for e in jsonschema_rs.validator_for(OPENAPI_31).iter_errors(document())]
    assert errors == []


def test_the_document_shows_segminds_result_shape_and_every_compatible_route():
    doc = document()
    result = doc["components"]["schemas"]["JobResult"]["properties"]
    assert result["output"]["type"] == ["string", "null"]
    assert result["images"]["items"] == {"$ref": "#/components/schemas/OutputImage"}
    status = doc["components"]["schemas"]["StatusResponse"]
    assert {"status_url", "response_url"} <= set(status["required"])
    for path in ["/v2/requests/{request_id}/cancel", "/v1/prediction", "/v1/prediction/{prediction_id}",
                 "/api/features", "/api/assets", "/api/assets/{file}"]:
        assert path in doc["paths"], path
