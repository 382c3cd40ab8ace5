"""The official Segmind Python SDK, unchanged, pointed at Parallax.

Run by `cargo xtask test` against the Worker in `wrangler dev` (PARALLAX_BASE_URL)."""

import base64
import os
import pathlib

import pytest
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


@pytest.mark.parametrize("slug,params", [("flux-depth-pro", PRO), ("flux-depth-dev", DEV)])
def test_run_waits_for_the_v2_result(client, slug, params):
    result = client.run(slug, prompt="a quiet library, warm light", control_image=image_b64(), **params)
    assert result["status"] == "COMPLETED"
    assert len(result["output"]) == params.get("num_outputs", 1)
    assert result["seed"] == params["seed"]
    assert result["metrics"]["inference_time"] >= 0
    for url in result["output"]:
        assert url.startswith(BASE + "/results/")


@pytest.mark.parametrize("slug,params,magic", [
    ("flux-depth-pro", PRO, b"\xff\xd8\xff"),
    ("flux-depth-dev", DEV, b"RIFF"),
])
def test_run_sync_returns_the_image_bytes(client, slug, params, magic):
    response = client.run_sync(slug, prompt="a glass greenhouse", control_image=image_b64("coffee.jpg"), **params)
    assert response.status_code == 200
    assert response.content.startswith(magic)
    assert int(response.headers["x-remaining-credits"]) >= 0


@pytest.mark.parametrize("slug,params", [("flux-depth-pro", PRO), ("flux-depth-dev", DEV)])
def test_submit_async_then_wait(client, slug, params):
    job = client.submit_async(slug, prompt="a snowy cabin", control_image=image_b64("rocket.jpg"), **params)
    assert job.request_id
    result = job.wait(timeout=60, interval=0.5)
    assert result["status"] == "COMPLETED"
    assert result["request_id"] == job.request_id


def test_a_failing_job_raises_inference_failed_with_the_servers_error(client):
    job = client.submit_async("flux-depth-pro", prompt="blocked [sim:fail]", control_image=image_b64(), **PRO)
    with pytest.raises(InferenceFailed) as failure:
        job.wait(timeout=60, interval=0.5)
    assert "moderated" in failure.value.detail
    assert failure.value.status_body["status"] == "FAILED"
