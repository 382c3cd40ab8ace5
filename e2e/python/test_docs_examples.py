"""The code examples of Segmind's Flux Depth docs (../shared/reference/000_…, 001_…),
with only the host (and key, and image source: no internet here) changed."""

import json
import os
import pathlib

import requests

BASE = os.environ.get("PARALLAX_BASE_URL", "http://127.0.0.1:8787")
SAMPLES = pathlib.Path(__file__).resolve().parents[2] / "public" / "samples"


def api_key():
    return dict(p.split("=", 1) for p in os.environ["PARALLAX_TEST_KEYS"].split(","))["rich"]


def test_pro_v1_multipart_example():
    # From the Flux Depth Pro page, verbatim but for url, key and the file.
    api_key_ = api_key()
    url = f"{BASE}/v1/flux-depth-pro"

    # Prepare data and files
    data = {}
    files = {}

    data['seed'] = 96522
    data['steps'] = 40
    data['prompt'] = "American man, smiling, waving, eyeglasses, casual clothing, sitting at desk, laptop, home office, indoor, daylight, modern decor, house plants, bookshelf, natural lighting"
    data['guidance'] = 7
    # For parameter "control_image", you can send a raw file or a URI:
    files['control_image'] = open(SAMPLES / "astronaut.jpg", 'rb')  # To send a file
    data['output_format'] = "jpg"
    data['safety_tolerance'] = 2
    data['prompt_upsampling'] = False

    headers = {'x-api-key': api_key_}

    response = requests.post(url, data=data, files=files, headers=headers)
    print(response.content[:16])  # The response is the generated image
    assert response.status_code == 200
    assert response.headers["content-type"] == "image/jpeg"
    assert response.content[:3] == b"\xff\xd8\xff"
    assert "x-remaining-credits" in response.headers


def test_dev_v1_json_example():
    import base64
    url = f"{BASE}/v1/flux-depth-dev"
    headers = {
        "x-api-key": api_key(),
        "Content-Type": "application/json"
    }

    data = {
        "seed": 85412,
        "prompt": "spiderman lecture, photorealistic",
        "guidance": 10,
        "megapixels": "1",
        "num_outputs": 1,
        "control_image": base64.b64encode((SAMPLES / "chelsea.jpg").read_bytes()).decode(),
        "output_format": "jpg",
        "output_quality": 80,
        "num_inference_steps": 28,
        "disable_safety_checker": False
    }

    response = requests.post(url, headers=headers, json=data)

    if response.status_code == 200:
        # The doc prints response.json(); our v1 answers the image like Segmind's
        # ("Returns: Image"), and JSON when asked for with Accept.
        assert response.headers["content-type"] == "image/jpeg"
        as_json = requests.post(url, headers={**headers, "Accept": "application/json"}, json=data)
        print(json.dumps(as_json.json(), indent=2))
        assert as_json.json()["status"] == "COMPLETED"
    else:
        print(f"Error: {response.status_code}")
        print(response.text)
        raise AssertionError(response.text)
