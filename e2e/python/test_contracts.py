"""The written contracts (e2e/contracts/*.json: each field of each answer of Segmind,
Eachlabs and 1min.ai that Parallax imitates, with its type and public source), checked
field by field against Parallax's answers and the sim's Segmind. The files are read
here, so the document and the test cannot drift apart."""

import base64
import json
import os
import pathlib
import time
import uuid

import pytest
import requests

BASE = os.environ.get("PARALLAX_BASE_URL", "http://127.0.0.1:8787")
SIM = os.environ.get("PARALLAX_SIM_URL", "http://127.0.0.1:8788")
ROOT = pathlib.Path(__file__).resolve().parents[2]
CONTRACTS = ROOT / "e2e" / "contracts"
SAMPLES = ROOT / "public" / "samples"


def contract(name):
    return json.loads((CONTRACTS / f"{name}.json").read_text())


def api_key():
    return dict(p.split("=", 1) for p in os.environ["PARALLAX_TEST_KEYS"].split(","))["rich"]


def image_b64(name="chelsea.jpg"):
    return base64.b64encode((SAMPLES / name).read_bytes()).decode()


def values_at(body, path):
    """The values at a dotted path; `name[]` steps into every element of a list. A
    missing key yields nothing."""
    found = [body]
    for step in path.split("."):
        each = step.endswith("[]")
        name = step[:-2] if each else step
        nxt = []
        for v in found:
            if isinstance(v, dict) and name in v:
                if each:
                    if isinstance(v[name], list):
                        nxt.extend(v[name])
                else:
                    nxt.append(v[name])
        found = nxt
    return found


def has_type(value, kind):
    if isinstance(kind, list):
        return any(has_type(value, k) for k in kind)
    return {
        "string": lambda v: isinstance(v, str),
        "url": lambda v: isinstance(v, str) and v.startswith(("http://", "https://")),
        "integer": lambda v: isinstance(v, int) and not isinstance(v, bool),
        "number": lambda v: isinstance(v, (int, float)) and not isinstance(v, bool),
        "boolean": lambda v: isinstance(v, bool),
        "object": lambda v: isinstance(v, dict),
        "array": lambda v: isinstance(v, list),
        "null": lambda v: v is None,
    }[kind](value)


def header_value(text, kind):
    """A header's text as the type the contract names."""
    if kind == "integer":
        return int(text)
    if kind == "number":
        return float(text)
    return text


def check(name, answer, response, side="parallax"):
    """Checks one HTTP answer against `answers[answer]` of contract `name`, field by
    field; answers the body."""
    spec = contract(name)["answers"][answer]
    label = f"{side} {name}.{answer}"
    assert response.status_code == spec["http"], f"{label}: HTTP {response.status_code} {response.text[:300]}"
    body = response.json() if spec.get("fields") else None
    for field in spec.get("fields", []):
        if field.get("imitated") is False or field.get("only", side) != side:
            continue
        values = values_at(body, field["path"])
        assert values, f"{label}: no `{field['path']}` in {json.dumps(body)[:600]}"
        for v in values:
            assert has_type(v, field["type"]), f"{label}: `{field['path']}` = {v!r} is not {field['type']}"
            if "enum" in field:
                assert v in field["enum"], f"{label}: `{field['path']}` = {v!r} not in {field['enum']}"
    for header in spec.get("headers", []):
        if header.get("imitated") is False:
            continue
        text = response.headers.get(header["name"])
        assert text is not None, f"{label}: no `{header['name']}` header"
        value = header_value(text, header["type"])
        if "enum" in header:
            assert value in header["enum"], f"{label}: `{header['name']}: {text}`"
    return body


@pytest.mark.parametrize("name", ["segmind-v2", "eachlabs", "onemin"])
def test_every_field_names_a_public_source_of_its_contract(name):
    c = contract(name)
    used = set()
    for answer, spec in c["answers"].items():
        assert "route" in spec and "http" in spec, answer
        assert set(spec.get("request", [])) <= set(c["sources"]), answer
        used.update(spec.get("request", []))
        for field in spec.get("fields", []) + spec.get("headers", []):
            sources = field["source"]
            assert sources and set(sources) <= set(c["sources"]), (answer, field)
            used.update(sources)
            if field.get("imitated") is False:
                assert field.get("note"), f"{answer}: say why {field} is not imitated"
    assert used == set(c["sources"]), f"sources cited by no field: {set(c['sources']) - used}"


def wait_for(url, headers, until, seconds=60):
    deadline = time.time() + seconds
    while True:
        response = requests.get(url, headers=headers)
        if until(response):
            return response
        assert time.time() < deadline, response.text
        time.sleep(0.3)


def segmind_flow(base, headers, side):
    """Submit, status while queued, status and result once done, both of a FAILED
    job, and an unknown id: each checked against the contract."""
    body = {"prompt": "a harbour at dawn [sim:queue=3]", "control_image": image_b64(),
            "num_outputs": 2, "output_format": "png", "seed": 4242}
    submitted = check("segmind-v2", "submit", requests.post(f"{base}/v2/flux-depth-dev", headers=headers, json=body), side)
    queued = check("segmind-v2", "status_waiting", requests.get(submitted["status_url"], headers=headers), side)
    assert queued["status"] == "QUEUED"
    assert (queued["status_url"], queued["response_url"]) == (submitted["status_url"], submitted["response_url"])

    done = wait_for(submitted["status_url"], headers, lambda r: r.json().get("status") == "COMPLETED")
    check("segmind-v2", "status_completed", done, side)
    result = check("segmind-v2", "result", requests.get(submitted["response_url"], headers=headers), side)
    assert len(result["images"]) == 2
    assert result["output"] == result["images"][0]["url"]
    for image in result["images"]:
        served = requests.get(image["url"], headers=headers)
        assert served.content.startswith(b"\x89PNG")
        assert image["file_size"] == len(served.content)
        assert image["content_type"] == "image/png"

    failing = requests.post(f"{base}/v2/flux-depth-pro", headers=headers,
                            json={"prompt": "a wall [sim:fail]", "control_image": image_b64()}).json()
    failed = wait_for(failing["status_url"], headers, lambda r: r.status_code == 422)
    check("segmind-v2", "failed", failed, side)
    check("segmind-v2", "failed", requests.get(failing["response_url"], headers=headers), side)

    unknown = f"{base}/v2/requests/{uuid.uuid4()}"
    check("segmind-v2", "not_found", requests.get(unknown, headers=headers), side)
    check("segmind-v2", "not_found", requests.get(f"{unknown}/status", headers=headers), side)


def test_parallax_answers_segmind_v2_as_the_contract_says():
    segmind_flow(BASE, {"x-api-key": api_key()}, "parallax")


def test_the_sims_segmind_answers_as_the_contract_says():
    # The sim stands in for Segmind in every test: it must speak the same contract.
    segmind_flow(f"{SIM}/segmind", {"x-api-key": "SG_contract"}, "sim")


def test_parallax_v1_answers_segmind_headers_and_the_json_result():
    headers = {"x-api-key": api_key()}
    body = {"prompt": "a paper boat", "control_image": image_b64("rocket.jpg"), "seed": 31337}
    image = requests.post(f"{BASE}/v1/flux-depth-pro", headers=headers, json=body)
    check("segmind-v2", "v1_image", image)
    assert image.headers["x-seed-value"] == "31337"
    as_json = requests.post(f"{BASE}/v1/flux-depth-pro", headers={**headers, "Accept": "application/json"}, json=body)
    result = check("segmind-v2", "result", as_json)
    assert requests.get(result["output"]).content == image.content, "the same seed, the same image"
    assert int(as_json.headers["x-cost"]) == result["metrics"]["cost"]


def test_parallax_answers_eachlabs_as_the_contract_says():
    headers = {"X-API-Key": api_key()}
    created = check("eachlabs", "create", requests.post(f"{BASE}/v1/prediction/", headers=headers, json={
        "model": "flux-depth-dev", "version": "0.0.1",
        "input": {"prompt": "a tropical beach [sim:queue=3]", "control_image": "data:image/jpeg;base64," + image_b64()}}))
    url = f"{BASE}/v1/prediction/{created['predictionID']}"
    check("eachlabs", "prediction_running", requests.get(url, headers=headers))
    done = wait_for(url, headers, lambda r: r.json()["status"] not in ("starting", "processing"))
    prediction = check("eachlabs", "prediction_success", done)
    assert requests.get(prediction["output"]).content.startswith(b"RIFF")

    failing = requests.post(f"{BASE}/v1/prediction/", headers=headers, json={
        "model": "flux-depth-pro", "input": {"prompt": "a wall [sim:fail]", "control_image": image_b64()}}).json()
    url = f"{BASE}/v1/prediction/{failing['predictionID']}"
    failed = check("eachlabs", "prediction_failed",
                   wait_for(url, headers, lambda r: r.json()["status"] not in ("starting", "processing")))
    assert "moderated" in failed["logs"]
    check("eachlabs", "not_found", requests.get(f"{BASE}/v1/prediction/{uuid.uuid4()}", headers=headers))


def test_parallax_answers_onemin_as_the_contract_says():
    record = check("onemin", "feature", requests.post(f"{BASE}/api/features", headers={"API-KEY": api_key()}, json={
        "type": "IMAGE_EDITOR", "model": "black-forest-labs/flux-depth-pro",
        "promptObject": {"imageUrl": "data:image/jpeg;base64," + image_b64(), "prompt": "depth blur"}}))
    image = requests.get(record["aiRecord"]["temporaryUrl"])
    assert image.content.startswith(b"\xff\xd8\xff")
    assert record["aiRecord"]["temporaryUrl"].endswith(record["aiRecord"]["aiRecordDetail"]["resultObject"][0])
