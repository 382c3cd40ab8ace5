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


def test_v2_submit_poll_and_download_with_plain_requests():
    # The v2 page's three steps (submit, poll status_url, GET response_url) with
    # `requests`, then what people write next: download result["output"].
    import base64
    import time
    headers = {"x-api-key": api_key()}
    payload = {
        "seed": 96522,
        "steps": 40,
        "prompt": "American man, smiling, waving, eyeglasses, casual clothing, sitting at desk",
        "guidance": 7,
        "control_image": base64.b64encode((SAMPLES / "astronaut.jpg").read_bytes()).decode(),
        "output_format": "png",
        "safety_tolerance": 2,
        "prompt_upsampling": False,
    }
    job = requests.post(f"{BASE}/v2/flux-depth-pro", headers=headers, json=payload).json()
    deadline = time.time() + 60
    while requests.get(job["status_url"], headers=headers).json()["status"] != "COMPLETED":
        assert time.time() < deadline
        time.sleep(0.5)
    result = requests.get(job["response_url"], headers=headers).json()
    image = requests.get(result["output"])
    assert image.status_code == 200
    assert image.headers["content-type"] == "image/png"
    assert image.content.startswith(b"\x89PNG")
    assert [i["file_size"] for i in result["images"]] == [len(image.content)]
