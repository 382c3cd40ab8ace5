"""Contract tests: the providers' official Python clients, unchanged, against the sim's
imitation of their protocols (PARALLAX_SIM_URL, started by `cargo xtask test`), so the
sim cannot drift from what real clients accept: submit, wait, cancel, failure, 429.

- `replicate` (Replicate's client, pinned in requirements.txt) against `/replicate`.
- `segmind` (Segmind's SDK) against `/segmind` (Segmind's protocol has no cancel).
"""

import base64
import os
import pathlib

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
    assert len(result["output"]) == 2


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
