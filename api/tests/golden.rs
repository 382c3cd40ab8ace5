//! Golden wire-format tests: these JSON texts are the public contract. A change here is
//! a breaking change for every client.

use std::collections::BTreeMap;

use parallax_api::{
    ErrorBody, ErrorCode, FieldError, JobResult, JobStatus, Metrics, Model, OutputImage, Params,
    RequestId, StatusResponse, SubmitResponse,
};
use serde_json::{Value, json};

const URL: &str = "http://127.0.0.1:8787/v2/requests/2c7f59ea-13f1-402c-9353-915a2b5a2124";

fn id() -> RequestId {
    RequestId::parse("2c7f59ea-13f1-402c-9353-915a2b5a2124").unwrap()
}

fn assert_golden<
    T: serde::Serialize + serde::de::DeserializeOwned + PartialEq + std::fmt::Debug,
>(
    value: &T,
    golden: Value,
) {
    assert_eq!(serde_json::to_value(value).unwrap(), golden);
    let back: T = serde_json::from_value(golden).unwrap();
    assert_eq!(&back, value);
}

#[test]
fn submit_response_has_the_three_absolute_urls_segmind_clients_follow() {
    let base = "http://127.0.0.1:8787";
    let r = SubmitResponse {
        request_id: id(),
        status: JobStatus::Queued,
        poll_url: format!("{base}/v2/requests/{}", id()),
        status_url: format!("{base}/v2/requests/{}/status", id()),
        response_url: format!("{base}/v2/requests/{}", id()),
        owner_token: None,
    };
    assert_golden(
        &r,
        json!({
            "request_id": "2c7f59ea-13f1-402c-9353-915a2b5a2124",
            "status": "QUEUED",
            "poll_url": "http://127.0.0.1:8787/v2/requests/2c7f59ea-13f1-402c-9353-915a2b5a2124",
            "status_url": "http://127.0.0.1:8787/v2/requests/2c7f59ea-13f1-402c-9353-915a2b5a2124/status",
            "response_url": "http://127.0.0.1:8787/v2/requests/2c7f59ea-13f1-402c-9353-915a2b5a2124"
        }),
    );
}

#[test]
fn failed_status_is_both_a_status_and_an_error_body() {
    let r = StatusResponse {
        request_id: id(),
        status: JobStatus::Failed,
        status_url: format!("{URL}/status"),
        response_url: URL.into(),
        error: Some("Content blocked by the safety filter".into()),
        code: Some(ErrorCode::JobFailed),
        metrics: Metrics {
            queue_time: Some(0.5),
            inference_time: Some(1.25),
            total_time: Some(1.75),
            provider: Some("segmind".into()),
            model: None,
            credits: None,
            cost: None,
        },
    };
    assert_golden(
        &r,
        json!({
            "request_id": "2c7f59ea-13f1-402c-9353-915a2b5a2124",
            "status": "FAILED",
            "status_url": format!("{URL}/status"),
            "response_url": URL,
            "error": "Content blocked by the safety filter",
            "code": "job_failed",
            "metrics": {"queue_time": 0.5, "inference_time": 1.25, "total_time": 1.75, "provider": "segmind"}
        }),
    );
}

#[test]
fn running_status_carries_no_error_fields() {
    let r = StatusResponse {
        request_id: id(),
        status: JobStatus::Processing,
        status_url: format!("{URL}/status"),
        response_url: URL.into(),
        error: None,
        code: None,
        metrics: Metrics::default(),
    };
    assert_golden(
        &r,
        json!({"request_id": "2c7f59ea-13f1-402c-9353-915a2b5a2124", "status": "PROCESSING",
               "status_url": format!("{URL}/status"), "response_url": URL, "metrics": {}}),
    );
}

#[test]
fn completed_result_has_the_image_url_as_output_and_every_image_in_images() {
    let mut params = BTreeMap::new();
    params.insert("prompt".to_string(), json!("a cat"));
    params.insert("steps".to_string(), json!(40));
    params.insert("seed".to_string(), json!(96522));
    let r = JobResult {
        request_id: id(),
        model: Model::FluxDepthPro,
        status: JobStatus::Completed,
        output: Some(
            "http://127.0.0.1:8787/results/2c7f59ea-13f1-402c-9353-915a2b5a2124/0.jpg".into(),
        ),
        images: vec![OutputImage {
            url: "http://127.0.0.1:8787/results/2c7f59ea-13f1-402c-9353-915a2b5a2124/0.jpg".into(),
            content_type: "image/jpeg".into(),
            file_name: "0.jpg".into(),
            file_size: 48_213,
        }],
        seed: Some(96522),
        params: Params(params),
        error: None,
        code: None,
        metrics: Metrics {
            queue_time: Some(0.5),
            inference_time: Some(2.0),
            total_time: Some(2.5),
            provider: Some("segmind".into()),
            model: None,
            credits: None,
            cost: Some(5),
        },
        created_at: 1_790_000_000,
        expires_at: Some(1_792_592_000),
        control_image: Some(
            "http://127.0.0.1:8787/results/2c7f59ea-13f1-402c-9353-915a2b5a2124/control?exp=1790003600&sig=c2ln"
                .into(),
        ),
        share_control: parallax_api::ShareControl::None,
        depth_image: None,
    };
    assert_golden(
        &r,
        json!({
            "request_id": "2c7f59ea-13f1-402c-9353-915a2b5a2124",
            "model": "flux-depth-pro",
            "status": "COMPLETED",
            "output": "http://127.0.0.1:8787/results/2c7f59ea-13f1-402c-9353-915a2b5a2124/0.jpg",
            "images": [{"url": "http://127.0.0.1:8787/results/2c7f59ea-13f1-402c-9353-915a2b5a2124/0.jpg",
                        "content_type": "image/jpeg", "file_name": "0.jpg", "file_size": 48213}],
            "seed": 96522,
            "params": {"prompt": "a cat", "seed": 96522, "steps": 40},
            "error": null,
            "metrics": {"queue_time": 0.5, "inference_time": 2.0, "total_time": 2.5, "provider": "segmind", "cost": 5},
            "created_at": 1790000000u64,
            "expires_at": 1792592000u64,
            "control_image": "http://127.0.0.1:8787/results/2c7f59ea-13f1-402c-9353-915a2b5a2124/control?exp=1790003600&sig=c2ln"
        }),
    );
}

#[test]
fn error_body_names_each_bad_field() {
    let e = ErrorBody {
        error: "2 fields are invalid".into(),
        code: ErrorCode::BadRequest,
        fields: Some(vec![
            FieldError::new("steps", "must be between 15 and 50"),
            FieldError::new("prompt", "is required"),
        ]),
    };
    assert_golden(
        &e,
        json!({
            "error": "2 fields are invalid",
            "code": "bad_request",
            "fields": [
                {"field": "steps", "message": "must be between 15 and 50"},
                {"field": "prompt", "message": "is required"}
            ]
        }),
    );
    let plain = ErrorBody {
        error: "No such request".into(),
        code: ErrorCode::NotFound,
        fields: None,
    };
    assert_golden(
        &plain,
        json!({"error": "No such request", "code": "not_found"}),
    );
}

#[test]
fn every_error_code_has_its_documented_status() {
    let table = [
        (ErrorCode::BadRequest, 400, "bad_request"),
        (ErrorCode::Unauthorized, 401, "unauthorized"),
        (ErrorCode::Forbidden, 403, "forbidden"),
        (ErrorCode::NotFound, 404, "not_found"),
        (ErrorCode::MethodNotAllowed, 405, "method_not_allowed"),
        (ErrorCode::InsufficientCredits, 406, "insufficient_credits"),
        (ErrorCode::PayloadTooLarge, 413, "payload_too_large"),
        (ErrorCode::JobFailed, 422, "job_failed"),
        (ErrorCode::RateLimited, 429, "rate_limited"),
        (ErrorCode::Internal, 500, "internal"),
        (ErrorCode::UpstreamFailed, 502, "upstream_failed"),
        (ErrorCode::UpstreamTimeout, 504, "upstream_timeout"),
    ];
    for (code, status, wire) in table {
        assert_eq!(code.http_status(), status);
        assert_eq!(serde_json::to_value(code).unwrap(), json!(wire));
    }
}
