//! The depth preview and depth-map controls (issue 25), through the Worker to the sim:
//! `POST /v2/depth-anything-v2` is a job like any other, answered with one greyscale
//! PNG in R2 by every provider that offers it (the sim's ComfyUI runs the shipped
//! preview graph through its node-schema validation; a Parallax upstream takes what
//! ComfyUI cannot, fal's depth preprocessor what both fail, Replicate's community
//! depth-anything-v2 what all three fail); the same account's second
//! preview of the same bytes is answered with the first job and reaches no provider;
//! `control_type: depth` goes only where the estimator can be skipped; and the share
//! page may show the depth map instead of the photo.

use std::time::Duration;

use parallax_e2e::{
    Answer, base, client, get, image_urls, output_bytes, send_repeatable, sim_submissions,
    test_key, unique, wait_terminal,
};
use reqwest::blocking::multipart::{Form, Part};
use serde_json::{Value, json};
use sha2::Digest;

/// A PNG of `w×h` no other test sends: a gradient with a band placed by `label`'s hash.
fn fresh_png(label: &str, w: u32, h: u32) -> Vec<u8> {
    let salt = sha2::Sha256::digest(unique(label).as_bytes());
    let img = image::RgbImage::from_fn(w, h, |x, y| {
        let band = u32::from(salt[0]) % w.max(1);
        let v = if x.abs_diff(band) < 12 {
            255
        } else {
            ((x + y) * 255 / (w + h)) as u8
        };
        image::Rgb([v, salt[1], v / 2])
    });
    let mut out = Vec::new();
    img.write_to(&mut std::io::Cursor::new(&mut out), image::ImageFormat::Png)
        .unwrap();
    out
}

/// What the sim counts a preview of `png` under (`sim::common::preview_label`).
fn label(png: &[u8]) -> String {
    format!("depth-anything-v2:{:x}", sha2::Sha256::digest(png))
}

/// `png` with a `tEXt` chunk keyed `sim` after its header: where a preview, which has
/// no prompt, carries the sim's fault markers. What the sim counts it under.
fn with_markers(png: &[u8], markers: &str) -> (Vec<u8>, String) {
    fn crc32(bytes: &[u8]) -> u32 {
        let mut crc = !0u32;
        for &b in bytes {
            crc ^= u32::from(b);
            for _ in 0..8 {
                crc = if crc & 1 == 1 {
                    (crc >> 1) ^ 0xedb8_8320
                } else {
                    crc >> 1
                };
            }
        }
        !crc
    }
    let data = [b"sim\0".as_slice(), markers.as_bytes()].concat();
    let mut chunk = (data.len() as u32).to_be_bytes().to_vec();
    let typed = [b"tEXt".as_slice(), &data].concat();
    chunk.extend_from_slice(&typed);
    chunk.extend_from_slice(&crc32(&typed).to_be_bytes());
    // Signature (8) + IHDR (4 + 4 + 13 + 4).
    let out = [&png[..33], &chunk, &png[33..]].concat();
    let counted = format!("{} {markers}", label(&out));
    (out, counted)
}

fn upstream_previews(png: &[u8]) -> u64 {
    sim_submissions()[label(png)].as_u64().unwrap_or(0)
}

fn post(model: &str, png: &[u8], fields: &[(&str, &str)], key: Option<&str>) -> Answer {
    let idem = unique("depth").replace(' ', "-");
    send_repeatable(|| {
        let mut form = Form::new().part(
            "control_image",
            Part::bytes(png.to_vec())
                .file_name("control.png")
                .mime_str("image/png")
                .unwrap(),
        );
        for (k, v) in fields {
            form = form.text((*k).to_owned(), (*v).to_owned());
        }
        let req = client()
            .post(format!("{}/v2/{model}", base()))
            .header("idempotency-key", &idem)
            .multipart(form);
        match key {
            Some(k) => req.header("x-api-key", test_key(k)),
            None => req,
        }
    })
}

fn preview(png: &[u8], key: &str) -> Value {
    let a = post("depth-anything-v2", png, &[], Some(key));
    assert_eq!(a.status, 200, "{}", a.text);
    a.json()
}

/// Waits for a submitted job and reads its result (as `key`, or anyone).
fn finish(sub: &Value, key: Option<&str>) -> Value {
    wait_terminal(sub["status_url"].as_str().unwrap(), Duration::from_secs(90));
    read(sub["request_id"].as_str().unwrap(), key)
}

fn read(id: &str, key: Option<&str>) -> Value {
    let mut req = client().get(format!("{}/v2/requests/{id}", base()));
    if let Some(k) = key {
        req = req.header("x-api-key", test_key(k));
    }
    Answer::from(req.send().unwrap()).json()
}

/// The result's one image: a PNG whose every pixel is grey; its size.
fn greyscale_png(result: &Value) -> (u32, u32) {
    assert_eq!(result["status"], "COMPLETED", "{result}");
    let urls = image_urls(result);
    assert_eq!(urls.len(), 1, "{result}");
    assert_eq!(result["images"][0]["content_type"], "image/png", "{result}");
    let bytes = output_bytes(&urls[0]);
    assert_eq!(
        image::guess_format(&bytes).unwrap(),
        image::ImageFormat::Png
    );
    let img = image::load_from_memory(&bytes).unwrap().to_rgb8();
    assert!(
        img.pixels().all(|p| p[0] == p[1] && p[1] == p[2]),
        "a depth map is greyscale"
    );
    let (w, h) = img.dimensions();
    let row = |y| {
        (0..w)
            .map(|x| u64::from(img.get_pixel(x, y)[0]))
            .sum::<u64>()
    };
    assert!(row(h - 1) > row(0), "near (the bottom) is brighter");
    img.dimensions()
}

#[test]
#[ignore = "needs the running stack: cargo xtask test"]
fn depth_preview_on_comfyui_is_one_greyscale_png_in_r2_for_no_credits() {
    let png = fresh_png("preview comfyui", 300, 200);
    let sub = preview(&png, "rich");
    let result = finish(&sub, Some("rich"));
    assert_eq!(result["model"], "depth-anything-v2");
    assert_eq!(result["metrics"]["provider"], "comfyui", "{result}");
    // No prompt and no seed: the map depends on the image alone.
    assert_eq!(result["params"], json!({}), "{result}");
    assert_eq!(result["seed"], Value::Null);
    assert_eq!(
        result["metrics"]["credits"]["charged"], 0,
        "PREVIEW_CREDITS = 0"
    );
    assert!(result.get("depth_image").is_none(), "{result}");
    // DepthAnythingV2Preprocessor(resolution 512): short side 512, as the sim's graph
    // computes the real node's size.
    assert_eq!(greyscale_png(&result), (768, 512));
    assert_eq!(upstream_previews(&png), 1);
}

#[test]
#[ignore = "needs the running stack: cargo xtask test"]
fn depth_preview_goes_to_a_parallax_upstream_where_comfyui_cannot_take_the_image() {
    // 5:1 is past ComfyUI's aspect limit: routing passes it to the next provider.
    let png = fresh_png("preview parallax", 500, 100);
    let result = finish(&preview(&png, "rich"), Some("rich"));
    assert_eq!(result["metrics"]["provider"], "parallax", "{result}");
    greyscale_png(&result);
    assert_eq!(upstream_previews(&png), 1);
}

#[test]
#[ignore = "needs the running stack: cargo xtask test"]
fn depth_preview_goes_to_fals_preprocessor_when_the_others_fail() {
    // The route is comfyui, parallax, fal: the first two answer 503 to this image.
    let (png, counted) = with_markers(
        &fresh_png("preview fal", 200, 150),
        "[sim:comfyui:503!] [sim:parallax:503!]",
    );
    let result = finish(&preview(&png, "rich"), Some("rich"));
    assert_eq!(result["metrics"]["provider"], "fal", "{result}");
    assert_eq!(result["params"], json!({}));
    greyscale_png(&result);
    assert_eq!(sim_submissions()[counted.as_str()], 1);
}

#[test]
#[ignore = "needs the running stack: cargo xtask test"]
fn depth_preview_goes_to_replicates_community_model_when_the_others_fail() {
    // The route is comfyui, parallax, fal, replicate: the first three answer 503.
    let (png, counted) = with_markers(
        &fresh_png("preview replicate", 180, 240),
        "[sim:comfyui:503!] [sim:parallax:503!] [sim:fal:503!]",
    );
    let result = finish(&preview(&png, "rich"), Some("rich"));
    assert_eq!(result["metrics"]["provider"], "replicate", "{result}");
    assert_eq!(result["status"], "COMPLETED", "{result}");
    greyscale_png(&result);
    assert_eq!(sim_submissions()[counted.as_str()], 1);
}

#[test]
#[ignore = "needs the running stack: cargo xtask test"]
fn depth_preview_of_the_same_bytes_is_answered_once_per_account() {
    let png = fresh_png("preview cache", 240, 160);
    let first = preview(&png, "rich");
    let id = first["request_id"].as_str().unwrap().to_owned();
    finish(&first, Some("rich"));
    assert_eq!(upstream_previews(&png), 1);

    // The same account, the same bytes: the same job, nothing sent upstream.
    let again = preview(&png, "rich");
    assert_eq!(again["request_id"], id.as_str(), "{again}");
    let result = finish(&again, Some("rich"));
    greyscale_png(&result);
    assert_eq!(
        upstream_previews(&png),
        1,
        "the second preview reached a provider"
    );

    // Another account is told nothing of the first: a job of its own.
    let other = preview(&png, "other");
    assert_ne!(other["request_id"], id.as_str());
    finish(&other, Some("other"));
    assert_eq!(upstream_previews(&png), 2);

    // A deleted preview is a miss.
    let deleted = send_repeatable(|| {
        client()
            .delete(format!("{}/v2/requests/{id}", base()))
            .header("x-api-key", test_key("rich"))
    });
    assert_eq!(deleted.status, 200, "{}", deleted.text);
    let after = preview(&png, "rich");
    assert_ne!(after["request_id"], id.as_str());
    finish(&after, Some("rich"));
    assert_eq!(upstream_previews(&png), 3);
}

#[test]
#[ignore = "needs the running stack: cargo xtask test"]
fn depth_preview_refuses_a_prompt_by_name() {
    let png = fresh_png("preview prompt", 64, 64);
    let a = post(
        "depth-anything-v2",
        &png,
        &[("prompt", "a barn")],
        Some("rich"),
    );
    assert_eq!(a.status, 400, "{}", a.text);
    assert_eq!(a.json()["fields"][0]["field"], "prompt", "{}", a.text);
}

#[test]
#[ignore = "needs the running stack: cargo xtask test"]
fn control_type_depth_runs_only_where_the_estimator_can_be_skipped() {
    let map = fresh_png("control_type map", 320, 240);
    // dev's route is segmind, replicate, comfyui, parallax, fal: the first two always
    // estimate, so ComfyUI runs it, with its workflow minus the preprocessor (which
    // the sim validates against the real node schemas).
    let dev = post(
        "flux-depth-dev",
        &map,
        &[
            ("prompt", "a lighthouse"),
            ("control_type", "depth"),
            ("output_format", "png"),
        ],
        Some("rich"),
    );
    assert_eq!(dev.status, 200, "{}", dev.text);
    let result = finish(&dev.json(), Some("rich"));
    assert_eq!(result["status"], "COMPLETED", "{result}");
    assert_eq!(result["metrics"]["provider"], "comfyui", "{result}");
    assert_eq!(result["params"]["control_type"], "depth");
    // The owner sees the depth map: the control image itself.
    let depth = result["depth_image"].as_str().expect("depth_image");
    assert!(depth.contains("/control"), "{result}");

    // pro's route is segmind, replicate, bfl, parallax: BFL takes preprocessed_image.
    let pro = post(
        "flux-depth-pro",
        &map,
        &[("prompt", "a lighthouse"), ("control_type", "depth")],
        Some("rich"),
    );
    assert_eq!(pro.status, 200, "{}", pro.text);
    let result = finish(&pro.json(), Some("rich"));
    assert_eq!(result["metrics"]["provider"], "bfl", "{result}");

    // Without it the first provider of the route takes the job as before.
    let plain = post(
        "flux-depth-pro",
        &map,
        &[("prompt", "a lighthouse")],
        Some("rich"),
    );
    let result = finish(&plain.json(), Some("rich"));
    assert_eq!(result["metrics"]["provider"], "segmind", "{result}");
    assert_eq!(result["params"]["control_type"], "image");

    let bad = post(
        "flux-depth-dev",
        &map,
        &[("prompt", "x"), ("control_type", "normal")],
        Some("rich"),
    );
    assert_eq!(bad.status, 400, "{}", bad.text);
    assert_eq!(bad.json()["fields"][0]["field"], "control_type");
}

#[test]
#[ignore = "needs the running stack: cargo xtask test"]
fn share_control_depth_shows_the_depth_map_and_not_the_photo() {
    let photo = fresh_png("share depth", 300, 200);
    let pv = finish(&preview(&photo, "rich"), Some("rich"));
    let pv_id = pv["request_id"].as_str().unwrap().to_owned();

    // A generation from the same bytes by the same account knows its depth map: its
    // own copy, under its own id, never the preview's.
    let sub = post(
        "flux-depth-pro",
        &photo,
        &[("prompt", "a barn")],
        Some("rich"),
    );
    assert_eq!(sub.status, 200, "{}", sub.text);
    let sub = sub.json();
    let id = sub["request_id"].as_str().unwrap().to_owned();
    let owner = finish(&sub, Some("rich"));
    let map_url = format!("{}/results/{id}/depth.png", base());
    let owners = owner["depth_image"].as_str().expect("depth_image");
    assert!(owners.starts_with(&map_url), "{owner}");
    assert!(!owners.contains(&pv_id), "{owner}");
    assert!(owner["control_image"].is_string(), "{owner}");
    assert_eq!(keyed_get(owners, "rich").status, 200);

    // Anyone else: neither, until the owner chooses; the map's URL refuses them.
    let public = read(&id, None);
    assert!(public.get("depth_image").is_none(), "{public}");
    assert!(public.get("control_image").is_none(), "{public}");
    let refused = get(&map_url);
    assert!(matches!(refused.status, 403 | 404), "{}", refused.status);
    assert!(matches!(keyed_get(&map_url, "other").status, 403 | 404));

    let share = |choice: &str| {
        send_repeatable(|| {
            client()
                .post(format!("{}/v2/requests/{id}/share", base()))
                .header("x-api-key", test_key("rich"))
                .json(&json!({"share_control": choice}))
        })
    };
    let chosen = share("depth");
    assert_eq!(chosen.status, 200, "{}", chosen.text);
    assert_eq!(chosen.json()["share_control"], "depth");
    let public = read(&id, None);
    assert_eq!(public["share_control"], "depth");
    assert_eq!(public["depth_image"], map_url.as_str(), "{public}");
    assert!(
        public.get("control_image").is_none(),
        "the photo stays private: {public}"
    );
    let map = get(&map_url);
    assert_eq!(map.status, 200);
    assert_eq!(map.header("content-type"), Some("image/png"));

    // Anyone but the owner is refused the choice.
    let stranger = Answer::from(
        client()
            .post(format!("{}/v2/requests/{id}/share", base()))
            .header("x-api-key", test_key("other"))
            .json(&json!({"share_control": "depth"}))
            .send()
            .unwrap(),
    );
    assert!(
        matches!(stranger.status, 403 | 404),
        "{} {}",
        stranger.status,
        stranger.text
    );
    assert_eq!(share("none").status, 200);
    assert!(read(&id, None).get("depth_image").is_none());
    // Sharing no more is revoking: the map's URL refuses anyone but the owner again.
    assert!(matches!(get(&map_url).status, 403 | 404));
    assert_eq!(keyed_get(&map_url, "rich").status, 200);
}

fn keyed_get(url: &str, key: &str) -> Answer {
    Answer::from(
        client()
            .get(url)
            .header("x-api-key", test_key(key))
            .send()
            .unwrap(),
    )
}

fn delete(id: &str, key: &str) {
    let url = format!("{}/v2/requests/{id}", base());
    let deleted = send_repeatable(|| client().delete(&url).header("x-api-key", test_key(key)));
    assert_eq!(deleted.status, 200, "{}", deleted.text);
}

#[test]
#[ignore = "needs the running stack: cargo xtask test"]
fn a_generations_depth_map_is_its_own_outliving_the_preview_and_gone_with_it() {
    let photo = fresh_png("own depth map", 260, 180);
    let pv = finish(&preview(&photo, "rich"), Some("rich"));
    let pv_id = pv["request_id"].as_str().unwrap().to_owned();
    let sub = post(
        "flux-depth-pro",
        &photo,
        &[("prompt", "a mill")],
        Some("rich"),
    );
    assert_eq!(sub.status, 200, "{}", sub.text);
    let sub = sub.json();
    let id = sub["request_id"].as_str().unwrap().to_owned();
    finish(&sub, Some("rich"));
    let shared = send_repeatable(|| {
        client()
            .post(format!("{}/v2/requests/{id}/share", base()))
            .header("x-api-key", test_key("rich"))
            .json(&json!({"share_control": "depth"}))
    });
    assert_eq!(shared.status, 200, "{}", shared.text);
    let map_url = format!("{}/results/{id}/depth.png", base());
    assert_eq!(read(&id, None)["depth_image"], map_url.as_str());
    let map = get(&map_url);
    assert_eq!(map.status, 200);
    assert_eq!(map.header("content-type"), Some("image/png"));

    // The preview deleted: the generation's map still loads.
    delete(&pv_id, "rich");
    assert_eq!(
        get(&format!("{}/results/{pv_id}/0.png", base())).status,
        404
    );
    assert_eq!(get(&map_url).status, 200);
    assert_eq!(read(&id, None)["depth_image"], map_url.as_str());

    // The generation deleted: its map goes with it.
    delete(&id, "rich");
    assert_eq!(get(&map_url).status, 404);
    assert_eq!(keyed_get(&map_url, "rich").status, 404);
}

#[test]
#[ignore = "needs the running stack: cargo xtask test"]
fn a_previews_photo_is_deleted_once_it_ends_and_its_map_stays() {
    let photo = fresh_png("preview input dropped", 220, 160);
    let sub = preview(&photo, "rich");
    let id = sub["request_id"].as_str().unwrap().to_owned();
    // While it runs, its owner's read links the photo (the sim takes 1.5 s).
    let running = read(&id, Some("rich"));
    let link = running["control_image"]
        .as_str()
        .unwrap_or_else(|| panic!("no control link while running: {running}"))
        .to_owned();
    let result = finish(&sub, Some("rich"));
    greyscale_png(&result);
    assert!(
        result.get("control_image").is_none(),
        "an ended preview links no photo: {result}"
    );
    // The photo is gone from R2 (for its owner too); the map stays.
    parallax_e2e::eventually(
        "the preview's photo to be deleted",
        Duration::from_secs(20),
        || (get(&link).status == 404).then_some(()),
    );
    let map = get(result["output"].as_str().unwrap());
    assert_eq!(map.status, 200);
    assert_eq!(map.header("content-type"), Some("image/png"));
}

#[test]
#[ignore = "needs the running stack: cargo xtask test"]
fn a_free_preview_is_refused_to_an_account_that_could_not_pay_for_a_generation() {
    let photo = fresh_png("preview broke", 120, 90);
    let generation = post(
        "flux-depth-dev",
        &photo,
        &[("prompt", "a barn")],
        Some("broke"),
    );
    let a = post("depth-anything-v2", &photo, &[], Some("broke"));
    assert_eq!(a.status, generation.status, "as a generation: {}", a.text);
    assert_eq!(a.json()["code"], "insufficient_credits", "{}", a.text);
    assert_eq!(upstream_previews(&photo), 0);

    // An account that can pay is still charged nothing (PREVIEW_CREDITS = 0), and its
    // second preview of the same bytes is the first job, reaching no provider.
    let first = preview(&photo, "rich");
    let result = finish(&first, Some("rich"));
    assert_eq!(result["metrics"]["credits"]["charged"], 0, "{result}");
    let again = preview(&photo, "rich");
    assert_eq!(again["request_id"], first["request_id"]);
    assert_eq!(upstream_previews(&photo), 1);
}

#[test]
#[ignore = "needs the running stack: cargo xtask test"]
fn share_choices_on_a_preview_are_refused_so_it_is_no_image_host() {
    let photo = fresh_png("share preview", 200, 150);
    let sub = preview(&photo, "rich");
    let id = sub["request_id"].as_str().unwrap().to_owned();
    finish(&sub, Some("rich"));
    for choice in ["photo", "depth", "none"] {
        let a = send_repeatable(|| {
            client()
                .post(format!("{}/v2/requests/{id}/share", base()))
                .header("x-api-key", test_key("rich"))
                .json(&json!({"share_control": choice}))
        });
        assert_eq!(a.status, 400, "{choice}: {}", a.text);
        let body = a.json();
        assert_eq!(body["fields"][0]["field"], "share_control", "{body}");
        assert!(
            body["fields"][0]["message"]
                .as_str()
                .unwrap()
                .contains("preview"),
            "{body}"
        );
    }
    // Nothing was stored: anyone's read shows no link to the uploaded image.
    let public = read(&id, None);
    assert!(public.get("share_control").is_none(), "{public}");
    assert!(public.get("control_image").is_none(), "{public}");
}

#[test]
#[ignore = "needs the running stack: cargo xtask test"]
fn depth_preview_on_the_sync_api_answers_the_png_and_eachlabs_names_the_model_it_refuses() {
    // Segmind's v1 (sync) API: the map's bytes, as any first image.
    let png = fresh_png("preview sync", 160, 120);
    let a = send_repeatable(|| {
        client()
            .post(format!("{}/v1/depth-anything-v2", base()))
            .header("x-api-key", test_key("rich"))
            .multipart(
                Form::new().part(
                    "control_image",
                    Part::bytes(png.clone())
                        .file_name("c.png")
                        .mime_str("image/png")
                        .unwrap(),
                ),
            )
    });
    assert_eq!(a.status, 200, "{}", a.text);
    assert_eq!(a.header("content-type"), Some("image/png"));
    assert!(a.header("x-request-id").is_some());

    // The Eachlabs API serves the FLUX models only: the preview is a 400 naming `model`.
    let e = Answer::from(
        client()
            .post(format!("{}/v1/prediction/", base()))
            .header("X-API-Key", test_key("rich"))
            .json(&json!({"model": "depth-anything-v2", "version": "0.0.1",
                          "input": {"control_image": "https://example.com/a.png"}}))
            .send()
            .unwrap(),
    );
    assert_eq!(e.status, 400, "{}", e.text);
    assert!(e.text.contains("model"), "{}", e.text);
}
