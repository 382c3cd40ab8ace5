"""The official Segmind Python SDK, unchanged, pointed at Parallax.

Run by `cargo xtask test` against the Worker in `wrangler dev` (PARALLAX_BASE_URL)."""

import base64
import os
import pathlib

import pytest
import requests
from segmind import SegmindClient
from segmind.v2 import InferenceFailed

BASE = os.environ.get("PARALLAX_BASE_URL", "http://127.0.0.1:8787")
SAMPLES = pathlib.Path(__file__).resolve().parents[2] / "public" / "samples"


def image_b64(name="chelsea.jpg"):
    return base64.b64encode((SAMPLES / name).read_bytes()).decode()


def key_named(name):
    pairs = dict(p.split("=", 1) for p in os.environ["PARALLAX_TEST_KEYS"].split(","))
    return pairs[name]


@pytest.fixture
def client():
    return SegmindClient(api_key=key_named("rich"), base_url=f"{BASE}/v1")


PRO = dict(seed=96522, steps=40, guidance=7, output_format="jpg", safety_tolerance=2, prompt_upsampling=False)
DEV = dict(seed=85412, guidance=10, megapixels="0.25", num_outputs=2, output_format="webp",
           output_quality=80, num_inference_steps=28, disable_safety_checker=False)


def downloads_its_images(result, count):
    """What Segmind's docs do with a result: `requests.get(result["output"])` gets the
    image; `images` lists all `count` of them, each `file_size` the bytes served."""
    image = requests.get(result["output"])
    assert image.status_code == 200, result["output"]
    assert result["output"].startswith(BASE + "/results/")
    assert len(result["images"]) == count
    assert result["images"][0]["url"] == result["output"]
    for entry in result["images"]:
        served = requests.get(entry["url"])
        assert served.status_code == 200
        assert entry["file_size"] == len(served.content)
        assert entry["content_type"] == served.headers["content-type"]
        assert entry["url"].endswith("/" + entry["file_name"])
    return image.content


@pytest.mark.parametrize("slug,params", [("flux-depth-pro", PRO), ("flux-depth-dev", DEV)])
def test_run_waits_for_the_v2_result(client, slug, params):
    result = client.run(slug, prompt="a quiet library, warm light", control_image=image_b64(), **params)
    assert result["status"] == "COMPLETED"
    assert result["seed"] == params["seed"]
    assert result["metrics"]["inference_time"] >= 0
    downloads_its_images(result, params.get("num_outputs", 1))


@pytest.mark.parametrize("slug,params,magic", [
    ("flux-depth-pro", PRO, b"\xff\xd8\xff"),
    ("flux-depth-dev", DEV, b"RIFF"),
])
def test_run_sync_returns_the_image_bytes(client, slug, params, magic):
    response = client.run_sync(slug, prompt="a glass greenhouse", control_image=image_b64("coffee.jpg"), **params)
    assert response.status_code == 200
    assert response.content.startswith(magic)
    assert int(response.headers["x-remaining-credits"]) >= 0
    assert int(response.headers["x-cost"]) > 0
    assert int(response.headers["x-seed-value"]) == params["seed"]
    # The same job's v2 result: its `output` downloads the very bytes run_sync answered.
    result = requests.get(f"{BASE}/v2/requests/{response.headers['x-request-id']}").json()
    assert result["metrics"]["cost"] == int(response.headers["x-cost"])
    assert downloads_its_images(result, params.get("num_outputs", 1)) == response.content


@pytest.mark.parametrize("slug,params", [("flux-depth-pro", PRO), ("flux-depth-dev", DEV)])
def test_submit_async_then_wait(client, slug, params):
    job = client.submit_async(slug, prompt="a snowy cabin", control_image=image_b64("rocket.jpg"), **params)
    assert job.request_id
    result = job.wait(timeout=60, interval=0.5)
    assert result["status"] == "COMPLETED"
    assert result["request_id"] == job.request_id
    downloads_its_images(result, params.get("num_outputs", 1))


def test_a_queued_jobs_status_says_where_to_look_next(client):
    job = client.submit_async("flux-depth-pro", prompt="a lantern [sim:queue=4]", control_image=image_b64(), **PRO)
    status = job.status()
    assert status["status"] == "QUEUED"
    assert status["request_id"] == job.request_id
    assert status["status_url"] == job.status_url
    assert status["response_url"] == job.response_url
    downloads_its_images(job.wait(timeout=60, interval=0.5), 1)


def test_a_failing_job_raises_inference_failed_with_the_servers_error(client):
    job = client.submit_async("flux-depth-pro", prompt="blocked [sim:fail]", control_image=image_b64(), **PRO)
    with pytest.raises(InferenceFailed) as failure:
        job.wait(timeout=60, interval=0.5)
    assert "moderated" in failure.value.detail
    assert failure.value.status_body["status"] == "FAILED"
