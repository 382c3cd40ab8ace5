//! The job as an Eachlabs prediction (`compat/eachlabs.rs` documents the shape and
//! its sources): what `GET /v1/prediction/{id}` answers and what a finished job's
//! webhook carries. Here, beside the Segmind view, because the runner sends that
//! webhook.

use parallax_api::JobStatus;
use serde_json::{Map, Value, json};

use super::{FailureKind, JobRecord};
use crate::storage::keys;

/// The one model version Eachlabs lists for these models.
pub const VERSION: &str = "0.0.1";

/// Eachlabs' status word for a job.
pub fn status(job: &JobRecord) -> &'static str {
    match job.status {
        JobStatus::Queued => "starting",
        JobStatus::Processing => "processing",
        JobStatus::Completed => "success",
        JobStatus::Failed if job.failure == Some(FailureKind::Canceled) => "cancelled",
        JobStatus::Failed => "failed",
    }
}

/// Eachlabs' V1 error code for a failed job.
fn error_code(job: &JobRecord) -> &'static str {
    match job.failure {
        Some(FailureKind::Timeout) => "EXECUTION_TIMEOUT",
        Some(FailureKind::Upstream) => "PROVIDER_FAILED",
        _ => "PROVIDER_REJECTED",
    }
}

fn error_detail(job: &JobRecord) -> Value {
    json!({
        "error_code": error_code(job),
        "error_message": job.error.clone().unwrap_or_else(|| "The prediction failed".into()),
    })
}

/// The output: one image's URL as a string (as Eachlabs answers for one image), several
/// as an array (the model's own output, as Replicate's flux-depth-dev answers it);
/// `null` while running, when failed or canceled.
fn output(job: &JobRecord, origin: &str) -> Value {
    match status(job) {
        "success" => {
            let urls: Vec<Value> = job
                .outputs
                .iter()
                .enumerate()
                .map(|(n, o)| {
                    Value::from(format!("{origin}{}", keys::output_path(&job.id, n, &o.ext)))
                })
                .collect();
            match <[Value; 1]>::try_from(urls) {
                Ok([one]) => one,
                Err(many) => Value::Array(many),
            }
        }
        _ => Value::Null,
    }
}

/// `logs`: a failure's reason (`EXECUTION_TIMEOUT: …`), else `null`.
fn logs(job: &JobRecord) -> Value {
    match status(job) {
        "failed" => Value::from(format!(
            "{}: {}",
            error_code(job),
            job.error.as_deref().unwrap_or("The prediction failed")
        )),
        _ => Value::Null,
    }
}

/// `GET /v1/prediction/{id}`'s body. `control` is the owner's signed link to the
/// control image (`None` for anyone else: the photo is private).
pub fn prediction(job: &JobRecord, origin: &str, control: Option<String>) -> Value {
    let mut input: Map<String, Value> = job.params.0.clone().into_iter().collect();
    if let Some(link) = control {
        input.insert("control_image".into(), Value::from(link));
    }
    let metrics = job.metrics();
    json!({
        "id": job.id,
        "model": job.model.slug(),
        "version": VERSION,
        "input": input,
        "status": status(job),
        "output": output(job, origin),
        "logs": logs(job),
        "metrics": {
            "predict_time": metrics.inference_time.unwrap_or(0.0),
            "credits": job.ownership.charged,
        },
        "urls": {"get": format!("{origin}/v1/prediction/{}", job.id)},
    })
}

/// The webhook body for a finished job, as Eachlabs sends it, plus the whole
/// prediction under `prediction`.
pub fn webhook_body(job: &JobRecord, origin: &str) -> String {
    let succeeded = job.status == JobStatus::Completed;
    let output = if succeeded {
        output(job, origin)
    } else {
        json!([{"id": job.id, "status": "error", "output": "", "error": error_detail(job)}])
    };
    json!({
        "exec_id": job.id,
        "flow_id": null,
        "status": if succeeded { "succeeded" } else { "failed" },
        "output": output,
        "error": "",
        "prediction": prediction(job, origin, None),
    })
    .to_string()
}
