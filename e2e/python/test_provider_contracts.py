"""Contract tests: the providers' official Python clients, unchanged, against the sim's
imitation of their protocols (PARALLAX_SIM_URL, started by `cargo xtask test`), so the
sim cannot drift from what real clients accept: submit, wait, cancel, failure, 429.

- `replicate` (Replicate's client, pinned in requirements.txt) against `/replicate`.
- `segmind` (Segmind's SDK) against `/segmind` (Segmind's protocol has no cancel).
- `fal-client` (fal's client) against `/fal`.
"""

import base64
import os
import pathlib

import fal_client
import fal_client.client as fal_module
import pytest
import requests
import replicate
from replicate.exceptions import ModelError, ReplicateError
from segmind import SegmindClient
from segmind.v2 import InferenceFailed

SIM = os.environ.get("PARALLAX_SIM_URL", "http://127.0.0.1:8790")
SAMPLES = pathlib.Path(__file__).resolve().parents[2] / "public" / "samples"
os.environ.setdefault("REPLICATE_POLL_INTERVAL", "0.2")


def data_url(name="coffee.jpg"):
    return "data:image/jpeg;base64," + base64.b64encode((SAMPLES / name).read_bytes()).decode()


@pytest.fixture
def rep():
    return replicate.Client(api_token="sim-token", base_url=f"{SIM}/replicate")


@pytest.fixture
def seg():
    return SegmindClient(api_key="sim-key", base_url=f"{SIM}/segmind/v1")


def test_replicate_create_and_wait(rep):
    p = rep.models.predictions.create(
        model="black-forest-labs/flux-depth-dev",
        input={"prompt": "contract create", "control_image": data_url(), "num_outputs": 2, "output_format": "png"},
    )
    assert p.status == "starting" and p.id
    p.wait()
    assert p.status == "succeeded", p.error
    assert len(p.output) == 2
    assert p.metrics["predict_time"] >= 0


def test_replicate_run_downloads_the_files(rep):
    # The client wraps only https URLs in FileOutput; the sim's CDN is plain http, so
    # ask for the URL and fetch it.
    url = rep.run("black-forest-labs/flux-depth-pro", use_file_output=False,
                  input={"prompt": "contract run", "control_image": data_url()})
    assert isinstance(url, str), url
    assert requests.get(url, timeout=30).content.startswith(b"\xff\xd8\xff")


def test_replicate_cancel(rep):
    p = rep.models.predictions.create(
        model="black-forest-labs/flux-depth-dev",
        input={"prompt": "contract cancel [sim:process=30]", "control_image": data_url()},
    )
    p.cancel()
    p.reload()
    assert p.status == "canceled"


def test_replicate_failure_is_a_model_error(rep):
    with pytest.raises(ModelError) as e:
        rep.run("black-forest-labs/flux-depth-dev", input={"prompt": "contract fail [sim:fail]", "control_image": data_url()})
    assert e.value.prediction.status == "failed"
    assert e.value.prediction.error


def test_replicate_429_reaches_the_client_as_throttling(rep):
    with pytest.raises(ReplicateError) as e:
        rep.models.predictions.create(
            model="black-forest-labs/flux-depth-dev",
            input={"prompt": "contract throttled [sim:replicate:429!]", "control_image": data_url()},
        )
    assert e.value.status == 429


def test_segmind_submit_and_wait(seg):
    job = seg.submit_async("flux-depth-dev", prompt="contract segmind", control_image=data_url(),
                           num_outputs=2, output_format="png", seed=7)
    result = job.wait()
    assert result["status"] == "COMPLETED"
    assert len(result["images"]) == 2
    assert result["output"] == result["images"][0]["url"]


def test_segmind_run(seg):
    result = seg.run("flux-depth-pro", prompt="contract segmind run", control_image=data_url(), seed=3)
    assert result["status"] == "COMPLETED"


def test_segmind_failure(seg):
    with pytest.raises(InferenceFailed):
        seg.run("flux-depth-dev", prompt="contract segmind fail [sim:fail]", control_image=data_url())


def test_segmind_429(seg):
    with pytest.raises(Exception) as e:
        seg.submit_async("flux-depth-dev", prompt="contract segmind 429 [sim:segmind:429!]", control_image=data_url())
    assert "429" in str(e.value) or getattr(getattr(e.value, "response", None), "status_code", None) == 429


# fal: the official `fal-client`, its queue URL pointed at the sim's /fal (the client
# reads the module-level QUEUE_URL_FORMAT per call; everything after submit follows
# the URLs the server answers).

FAL_APP = "fal-ai/flux-lora-depth"


@pytest.fixture
def fal(monkeypatch):
    monkeypatch.setattr(fal_module, "QUEUE_URL_FORMAT", f"{SIM}/fal/")
    return fal_client.SyncClient(key="sim-key")


def fal_input(prompt, **extra):
    return {"prompt": prompt, "image_url": data_url(), **extra}


def test_fal_submit_status_and_result(fal):
    handle = fal.submit(FAL_APP, arguments=fal_input("contract fal", num_images=2, output_format="png",
                                                    image_size={"width": 512, "height": 336}))
    status = handle.status()
    assert isinstance(status, (fal_client.Queued, fal_client.InProgress, fal_client.Completed))
    if isinstance(status, fal_client.Queued):
        assert status.position >= 0
    result = handle.get()
    assert len(result["images"]) == 2
    assert (result["images"][0]["width"], result["images"][0]["height"]) == (512, 336)
    assert requests.get(result["images"][0]["url"], timeout=30).content.startswith(b"\x89PNG")


def test_fal_cancel(fal):
    handle = fal.submit(FAL_APP, arguments=fal_input("contract fal cancel [sim:process=30]"))
    handle.cancel()
    status = handle.status()
    assert isinstance(status, fal_client.Completed) and status.error


def test_fal_cancel_after_completion_is_already_completed(fal):
    handle = fal.submit(FAL_APP, arguments=fal_input("contract fal done"))
    handle.get()
    with pytest.raises(fal_client.client.FalClientHTTPError) as e:
        handle.cancel()
    assert e.value.status_code == 400


def test_fal_failure_is_reported_on_completion(fal):
    handle = fal.submit(FAL_APP, arguments=fal_input("contract fal fail [sim:fail]"))
    with pytest.raises(fal_client.client.FalClientHTTPError):
        handle.get()
    assert handle.status().error


def test_fal_429_is_retried_by_the_client(fal):
    # Twice 429 with Retry-After, then accepted: the client's own retry carries it.
    handle = fal.submit(FAL_APP, arguments=fal_input("contract fal throttled [sim:fal:429]"))
    assert handle.get()["images"]


# --- Replicate's webhook, as the sim signs it -----------------------------------------
# The sim's callbacks (sim/src/hooks.rs) must verify with verifiers we did not write:
# the Standard Webhooks authors' `standardwebhooks` package and Replicate's own client
# (`replicate.webhook.Webhooks.validate`, with the secret its client fetches from
# `GET /v1/webhooks/default/secret`), so our signature format is not self-invented.

import http.server
import queue
import threading

import standardwebhooks
from replicate.webhook import InvalidSignatureError, Webhooks


@pytest.fixture
def receiver():
    """A local HTTP endpoint that records each POST (headers, raw body)."""
    got = queue.Queue()

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self):  # noqa: N802 (http.server's naming)
            body = self.rfile.read(int(self.headers.get("content-length", "0")))
            got.put(({k.lower(): v for k, v in self.headers.items()}, body))
            self.send_response(204)
            self.end_headers()

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}/hook", got
    server.shutdown()


def test_replicate_webhooks_verify_with_standard_webhooks_and_replicates_client(rep, receiver):
    url, got = receiver
    p = rep.models.predictions.create(
        model="black-forest-labs/flux-depth-pro",
        input={"prompt": "contract webhook", "control_image": data_url()},
        webhook=url,
        webhook_events_filter=["completed"],
    )
    headers, body = got.get(timeout=60)
    secret = rep.webhooks.default.secret()
    assert secret.key.startswith("whsec_")
    # The Standard Webhooks package: checks the signature and the timestamp window.
    payload = standardwebhooks.Webhook(secret.key).verify(body, headers)
    assert payload["id"] == p.id and payload["status"] == "succeeded", payload
    # Replicate's own validation.
    Webhooks.validate(headers=headers, body=body.decode(), secret=secret, tolerance=300)
    # Neither accepts an altered body.
    tampered = body.replace(b"succeeded", b"failed")
    with pytest.raises(standardwebhooks.WebhookVerificationError):
        standardwebhooks.Webhook(secret.key).verify(tampered, headers)
    with pytest.raises(InvalidSignatureError):
        Webhooks.validate(headers=headers, body=tampered.decode(), secret=secret, tolerance=300)
    # `completed` only: one delivery.
    with pytest.raises(queue.Empty):
        got.get(timeout=1)
