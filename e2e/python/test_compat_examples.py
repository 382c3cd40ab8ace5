"""The code examples of the Eachlabs and 1min.ai Flux Depth docs
(../shared/reference/003_…, 004_…), run as written with only the host, the key and
the image source changed (no internet here), plus the webhook and error contracts."""

import base64
import hashlib
import hmac
import http.server
import json
import os
import pathlib
import subprocess
import threading
import time

import requests

BASE = os.environ.get("PARALLAX_BASE_URL", "http://127.0.0.1:8787")
SAMPLES = pathlib.Path(__file__).resolve().parents[2] / "public" / "samples"


def api_key(name="rich"):
    return dict(p.split("=", 1) for p in os.environ["PARALLAX_TEST_KEYS"].split(","))[name]


def data_url(sample, media_type="image/jpeg"):
    return f"data:{media_type};base64," + base64.b64encode((SAMPLES / sample).read_bytes()).decode()


def wait_for_prediction(prediction_id, key):
    """The polling loop of Eachlabs' Get Prediction docs."""
    deadline = time.time() + 60
    while time.time() < deadline:
        response = requests.get(
            f"{BASE}/v1/prediction/{prediction_id}", headers={"X-API-Key": key}
        )
        assert response.status_code == 200, response.text
        data = response.json()
        if data["status"] in ("success", "failed", "cancelled"):
            return data
        time.sleep(0.5)
    raise AssertionError("the prediction did not finish")


def image_at(url, magic):
    response = requests.get(url)
    assert response.status_code == 200, url
    assert response.content.startswith(magic), response.content[:16]
    return response.content


# --- Eachlabs -------------------------------------------------------------------


def test_eachlabs_curl_example_gets_an_image():
    key = api_key()
    # The doc's command, verbatim but for the host, the key and control_image.
    command = f"""curl -X POST \\
  -H "X-API-Key: $EACHLABS_API_KEY" \\
  -H "Content-Type: application/json" \\
  --data '{{
    "model": "flux-depth-dev",
    "version": "0.0.1",
    "input": {{
        "prompt": "A tropical beach",
        "guidance": 10,
        "megapixels": "1",
        "num_outputs": 1,
        "control_image": "{data_url("chelsea.jpg")}",
        "output_format": "webp",
        "output_quality": 80,
        "num_inference_steps": 28
    }},
    "webhook_url": ""
}}' \\
  {BASE}/v1/prediction/"""
    done = subprocess.run(
        ["sh", "-c", command],
        env={**os.environ, "EACHLABS_API_KEY": key},
        capture_output=True,
        check=True,
        text=True,
    )
    created = json.loads(done.stdout)
    assert created["status"] == "success", created
    assert created["message"] == "Prediction created successfully"

    data = wait_for_prediction(created["predictionID"], key)
    assert data["status"] == "success", data
    assert data["id"] == created["predictionID"]
    assert data["input"]["prompt"] == "A tropical beach"
    assert data["input"]["output_format"] == "webp"
    assert data["urls"]["get"].endswith(f"/v1/prediction/{created['predictionID']}")
    image_at(data["output"], b"RIFF")


def test_eachlabs_bearer_auth_and_several_outputs():
    key = api_key()
    response = requests.post(
        f"{BASE}/v1/prediction",
        headers={"Content-Type": "application/json", "Authorization": f"Bearer {key}"},
        json={
            "model": "flux-depth-dev",
            "version": "0.0.1",
            "input": {
                "prompt": "a medieval castle on a hill",
                "control_image": data_url("rocket.jpg"),
                "num_outputs": 2,
                "output_format": "png",
                "seed": 777,
            },
        },
    )
    assert response.status_code == 200, response.text
    assert "x-remaining-credits" in response.headers
    data = wait_for_prediction(response.json()["predictionID"], key)
    assert data["status"] == "success", data
    assert data["input"]["seed"] == 777
    assert len(data["output"]) == 2
    for url in data["output"]:
        image_at(url, b"\x89PNG")


def test_eachlabs_wrong_model_or_version_is_a_400_naming_the_allowed_values():
    response = requests.post(
        f"{BASE}/v1/prediction/",
        headers={"X-API-Key": api_key()},
        json={"model": "flux-1-1-pro", "version": "1.0.0", "input": {"prompt": "x"}},
    )
    assert response.status_code == 400
    body = response.json()
    fields = {f["field"]: f["message"] for f in body["fields"]}
    assert fields["model"] == "must be one of: flux-depth-dev, flux-depth-pro"
    assert fields["version"] == "must be 0.0.1"

    bad_input = requests.post(
        f"{BASE}/v1/prediction/",
        headers={"X-API-Key": api_key()},
        json={"model": "flux-depth-dev", "version": "0.0.1",
              "input": {"prompt": "x", "control_image": data_url("chelsea.jpg"), "guidance": 500}},
    )
    assert bad_input.status_code == 400
    assert bad_input.json()["fields"][0]["field"] == "input.guidance"

    missing = requests.get(f"{BASE}/v1/prediction/00000000-0000-4000-8000-000000000000",
                           headers={"X-API-Key": api_key()})
    assert missing.status_code == 404
    assert "error" in missing.json()


class Receiver(http.server.ThreadingHTTPServer):
    """A webhook endpoint on loopback that refuses its first delivery."""

    def __init__(self):
        self.deliveries = []
        self.refuse_first = True
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers["Content-Length"]))
                outer.deliveries.append((self.headers, body))
                refuse = outer.refuse_first and len(outer.deliveries) == 1
                self.send_response(500 if refuse else 200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args):
                pass

        super().__init__(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.serve_forever, daemon=True).start()

    @property
    def url(self):
        return f"http://127.0.0.1:{self.server_address[1]}/hooks/eachlabs"

    def wait(self, count, timeout=30):
        deadline = time.time() + timeout
        while len(self.deliveries) < count and time.time() < deadline:
            time.sleep(0.2)
        return self.deliveries


def verify(headers, body, secret):
    """The verification steps of Eachlabs' "Verifying Webhook Signatures" docs."""
    timestamp = headers["X-Webhook-Timestamp"]
    signature = headers["X-Webhook-Signature"]
    assert timestamp.isdigit() and abs(time.time() - int(timestamp)) < 300
    assert signature.startswith("sha256=")
    expected = hmac.new(secret, timestamp.encode() + b"." + body, hashlib.sha256).hexdigest()
    assert hmac.compare_digest(expected, signature[len("sha256="):])


def test_eachlabs_webhook_is_signed_and_retried_until_acknowledged():
    receiver = Receiver()
    key = api_key()
    response = requests.post(
        f"{BASE}/v1/prediction/",
        headers={"X-API-Key": key},
        json={
            "model": "flux-depth-dev",
            "version": "0.0.1",
            "input": {"prompt": "a cozy cabin", "control_image": data_url("coffee.jpg")},
            "webhook_url": receiver.url,
            "webhook_secret": "whsec_parallax_test",
        },
    )
    assert response.status_code == 200, response.text
    prediction_id = response.json()["predictionID"]

    deliveries = receiver.wait(2)
    assert len(deliveries) == 2, "refused once, so delivered again"
    (first_headers, first_body), (headers, body) = deliveries
    assert first_body == body
    assert first_headers["X-Webhook-Signature"] == headers["X-Webhook-Signature"]
    verify(headers, body, b"whsec_parallax_test")
    payload = json.loads(body)
    assert payload["exec_id"] == prediction_id
    assert payload["status"] == "succeeded"
    assert payload["error"] == ""
    image_at(payload["output"], b"RIFF")
    time.sleep(3)
    assert len(receiver.deliveries) == 2, "acknowledged: no more attempts"
    receiver.shutdown()


def test_eachlabs_webhook_without_a_secret_is_signed_with_the_keys_sha256():
    receiver = Receiver()
    receiver.refuse_first = False
    key = api_key()
    response = requests.post(
        f"{BASE}/v1/prediction/",
        headers={"X-API-Key": key},
        json={
            "model": "flux-depth-dev",
            "version": "0.0.1",
            "input": {"prompt": "a lighthouse", "control_image": data_url("rocket.jpg")},
            "webhook_url": receiver.url,
        },
    )
    assert response.status_code == 200, response.text
    [(headers, body)] = receiver.wait(1)
    verify(headers, body, hashlib.sha256(key.encode()).hexdigest().encode())
    receiver.shutdown()


def test_eachlabs_webhooks_go_only_to_public_https_hosts():
    for url in ["http://hooks.example.com/x", "https://10.0.0.7/x", "https://localhost/x",
                "https://169.254.169.254/latest"]:
        response = requests.post(
            f"{BASE}/v1/prediction/",
            headers={"X-API-Key": api_key()},
            json={"model": "flux-depth-dev", "version": "0.0.1",
                  "input": {"prompt": "x", "control_image": data_url("chelsea.jpg")},
                  "webhook_url": url},
        )
        assert response.status_code == 400, url
        assert response.json()["fields"][0]["field"] == "webhook_url"


# --- 1min.ai --------------------------------------------------------------------


def upload_asset(sample, key):
    """1min.ai's asset upload (POST /api/assets, the file as `asset`)."""
    with open(SAMPLES / sample, "rb") as handle:
        upload = requests.post(f"{BASE}/api/assets", headers={"API-KEY": key},
                               files={"asset": handle})
    assert upload.status_code == 200, upload.text
    return upload.json()["fileContent"]["path"]


def check_ai_record(record, prompt):
    ai = record["aiRecord"]
    assert ai["status"] == "SUCCESS", record
    assert ai["type"] == "IMAGE_EDITOR"
    assert ai["model"] == "black-forest-labs/flux-depth-pro"
    assert ai["aiRecordDetail"]["promptObject"]["prompt"] == prompt
    [path] = ai["aiRecordDetail"]["resultObject"]
    assert ai["temporaryUrl"].endswith(path)
    image_at(ai["temporaryUrl"], b"\xff\xd8\xff")
    return ai


def test_onemin_curl_example_with_an_uploaded_image():
    key = api_key()
    image_path = upload_asset("astronaut.jpg", key)
    # The doc's command, verbatim but for the host, the key and imageUrl.
    command = f"""curl -X POST "{BASE}/api/features" \\
-H "API-KEY: {key}" \\
-H "Content-Type: application/json" \\
-d '{{
"type": "IMAGE_EDITOR",
"model": "black-forest-labs/flux-depth-pro",
"promptObject": {{
"imageUrl": "{image_path}",
"prompt": "Add realistic depth blur to background while keeping subject sharp",
"seed": 42,
"steps": 28,
"prompt_upsampling": true,
"guidance": 3.5,
"safety_tolerance": 2,
"format": "jpg"
}}
}}'"""
    done = subprocess.run(["sh", "-c", command], capture_output=True, check=True, text=True)
    ai = check_ai_record(json.loads(done.stdout),
                         "Add realistic depth blur to background while keeping subject sharp")
    assert ai["aiRecordDetail"]["promptObject"]["seed"] == 42
    assert ai["aiRecordDetail"]["promptObject"]["imageUrl"] == image_path


def test_onemin_python_example_and_result_chaining():
    import requests  # as in the doc

    url = f"{BASE}/api/features"
    headers = {
        "Content-Type": "application/json",
        "API-KEY": api_key()
    }
    data = {
        "type": "IMAGE_EDITOR",
        "model": "black-forest-labs/flux-depth-pro",
        "promptObject": {
            "imageUrl": data_url("coffee.jpg"),
            "prompt": "Add realistic depth blur to background while keeping subject sharp",
            "seed": 42,
            "steps": 28,
            "prompt_upsampling": True,
            "guidance": 3.5,
            "safety_tolerance": 2,
            "format": "jpg"
        }
    }
    response = requests.post(url, headers=headers, json=data)
    assert response.status_code == 200, response.text
    ai = check_ai_record(response.json(),
                         "Add realistic depth blur to background while keeping subject sharp")

    # An earlier result's path is an imageUrl too (edit the edit); defaults apply.
    again = requests.post(url, headers=headers, json={
        "type": "IMAGE_EDITOR",
        "model": "black-forest-labs/flux-depth-pro",
        "promptObject": {"imageUrl": ai["aiRecordDetail"]["resultObject"][0],
                         "prompt": "the same scene at night", "steps": 4},
    })
    assert again.status_code == 200, again.text
    echo = check_ai_record(again.json(), "the same scene at night")["aiRecordDetail"]["promptObject"]
    assert (echo["guidance"], echo["format"], echo["safety_tolerance"]) == (3.5, "jpg", 2)
    assert echo["steps"] == 4 and isinstance(echo["seed"], int)


def test_onemin_wrong_type_model_or_range_is_a_400_naming_what_is_allowed():
    headers = {"Content-Type": "application/json", "API-KEY": api_key()}
    prompt_object = {"imageUrl": data_url("chelsea.jpg"), "prompt": "x"}
    response = requests.post(f"{BASE}/api/features", headers=headers, json={
        "type": "IMAGE_GENERATOR", "model": "black-forest-labs/flux-pro",
        "promptObject": prompt_object})
    assert response.status_code == 400
    fields = {f["field"]: f["message"] for f in response.json()["fields"]}
    assert fields == {"type": "must be IMAGE_EDITOR",
                      "model": "must be black-forest-labs/flux-depth-pro"}

    response = requests.post(f"{BASE}/api/features", headers=headers, json={
        "type": "IMAGE_EDITOR", "model": "black-forest-labs/flux-depth-pro",
        "promptObject": {**prompt_object, "guidance": 20.5, "format": "gif",
                         "seed": 4294967296}})
    assert response.status_code == 400
    fields = {f["field"]: f["message"] for f in response.json()["fields"]}
    assert fields["promptObject.guidance"] == "must be between 1 and 20"
    assert fields["promptObject.format"] == "must be one of: jpg, png, webp"
    assert "promptObject.seed" in fields

    response = requests.post(f"{BASE}/api/features", headers=headers, json={
        "type": "IMAGE_EDITOR", "model": "black-forest-labs/flux-depth-pro",
        "promptObject": {**prompt_object,
                         "imageUrl": "assets/0123456789abcdef0123456789abcdef.jpg"}})
    assert response.status_code == 400
    assert response.json()["fields"][0]["field"] == "promptObject.imageUrl"

    unauthorized = requests.post(f"{BASE}/api/features",
                                 headers={**headers, "API-KEY": "px_not_a_key"}, json={})
    assert unauthorized.status_code == 401


def test_onemin_assets_are_images_only_and_served_back():
    key = api_key()
    path = upload_asset("rocket.jpg", key)
    assert path.startswith("assets/") and path.endswith(".jpg")
    served = requests.get(f"{BASE}/api/{path}")
    assert served.status_code == 200
    assert served.content == (SAMPLES / "rocket.jpg").read_bytes()
    not_image = requests.post(f"{BASE}/api/assets", headers={"API-KEY": key},
                              files={"asset": ("notes.txt", b"hello there, not an image")})
    assert not_image.status_code == 400
    assert not_image.json()["fields"][0]["field"] == "asset"
