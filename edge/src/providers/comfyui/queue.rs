//! Where a prompt is at a ComfyUI server: its queue (`GET /queue`) and its history
//! (`GET /history/{prompt_id}`), read in that order.

use serde_json::Value;

use super::{build_get, checked};
use crate::providers::{
    Provider, UpstreamError, UpstreamRequest, UpstreamResponse, UpstreamState, send,
};

/// Where a prompt is at a ComfyUI server, from `/history/{id}` then `/queue`.
#[derive(Debug, Clone, PartialEq)]
pub enum Lookup {
    /// Neither in its history nor in its queue: never queued, taken off the queue,
    /// or lost with a restart (history is in memory).
    Unknown,
    Queued,
    Running,
    /// Finished: completed (output URLs) or failed.
    Done(UpstreamState),
}

/// The two reads a lookup makes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Probe {
    /// `GET /queue`: running and pending prompts.
    Queue,
    /// `GET /history/{prompt_id}`: finished prompts.
    History,
}

/// The request for one of a lookup's reads.
pub fn build_probe(cfg: &Provider, prompt_id: &str, probe: Probe) -> UpstreamRequest {
    match probe {
        Probe::Queue => build_get(cfg, &format!("{}/queue", cfg.base_url)),
        Probe::History => build_get(cfg, &format!("{}/history/{prompt_id}", cfg.base_url)),
    }
}

/// Where prompt `prompt_id` is, from two reads made by `read`: the queue **first**,
/// then the history. A prompt moves queue → history and never back, so a prompt that
/// finishes between the reads is found in the history; read the other way round it
/// would be in neither (Unknown: canceled as "never ran", or resubmitted).
pub async fn lookup_with<F, Fut>(
    cfg: &Provider,
    prompt_id: &str,
    read: F,
) -> Result<Lookup, UpstreamError>
where
    F: Fn(Probe) -> Fut,
    Fut: Future<Output = Result<UpstreamResponse, UpstreamError>>,
{
    let queued = parse_queue(prompt_id, &read(Probe::Queue).await?)?;
    match parse_history(cfg, prompt_id, &read(Probe::History).await?)? {
        Some(state) => Ok(Lookup::Done(state)),
        None => Ok(queued),
    }
}

/// `Some(state)` once the history has the prompt; `None` while it is not there yet.
pub fn parse_history(
    cfg: &Provider,
    prompt_id: &str,
    resp: &UpstreamResponse,
) -> Result<Option<UpstreamState>, UpstreamError> {
    let v = checked(resp)?;
    let Some(entry) = v.get(prompt_id) else {
        return Ok(None);
    };
    let status = entry["status"]["status_str"].as_str().unwrap_or_default();
    if status == "error" {
        let messages: Vec<&Value> = entry["status"]["messages"]
            .as_array()
            .into_iter()
            .flatten()
            .collect();
        let message = if let Some(m) = messages.iter().find(|m| m[0] == "execution_error") {
            let node = m[1]["node_type"].as_str().unwrap_or("a node");
            let text = m[1]["exception_message"]
                .as_str()
                .unwrap_or_default()
                .trim();
            format!("the workflow failed in {node}: {text}")
        } else if messages.iter().any(|m| m[0] == "execution_interrupted") {
            "the workflow was interrupted".to_owned()
        } else {
            "the workflow failed".to_owned()
        };
        return Ok(Some(UpstreamState::Failed(
            message.chars().take(500).collect(),
        )));
    }
    let urls: Vec<String> = entry["outputs"]
        .as_object()
        .into_iter()
        .flat_map(|outputs| outputs.values())
        .flat_map(|node| node["images"].as_array().into_iter().flatten())
        .filter(|img| img["type"] == "output")
        .filter_map(|img| {
            let name = img["filename"].as_str()?;
            let sub = img["subfolder"].as_str().unwrap_or_default();
            Some(format!(
                "{}/view?filename={}&subfolder={}&type=output",
                cfg.base_url,
                encode(name),
                encode(sub)
            ))
        })
        .collect();
    if urls.is_empty() {
        return Ok(Some(UpstreamState::Failed(
            "the workflow finished without images".into(),
        )));
    }
    Ok(Some(UpstreamState::Completed(urls)))
}

/// Running, pending or absent, from `/queue` (items are `[number, prompt_id, …]`).
pub fn parse_queue(prompt_id: &str, resp: &UpstreamResponse) -> Result<Lookup, UpstreamError> {
    let v = checked(resp)?;
    let has = |key: &str| {
        v[key]
            .as_array()
            .into_iter()
            .flatten()
            .any(|item| item[1] == prompt_id)
    };
    Ok(if has("queue_running") {
        Lookup::Running
    } else if has("queue_pending") {
        Lookup::Queued
    } else {
        Lookup::Unknown
    })
}

fn encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// Where prompt `prompt_id` is at the server (see [`lookup_with`]: its queue first,
/// then its history). Used before any resubmit of the same id, to poll, and on cancel.
pub async fn lookup_at(
    cfg: &Provider,
    prompt_id: &str,
    timeout_ms: u32,
) -> Result<Lookup, UpstreamError> {
    lookup_with(cfg, prompt_id, |probe| {
        let req = build_probe(cfg, prompt_id, probe);
        async move { send("comfyui", &req, timeout_ms).await }
    })
    .await
}
