//! The client side of the Segmind v2 protocol, the same against `sim` directly and
//! through the Worker: submit, poll, fetch the result, download the image.

use std::time::{Duration, Instant};

use reqwest::blocking::Client;
use serde_json::Value;

use crate::cmd::Result;

/// Where a client talks to and with which key.
#[derive(Debug, Clone)]
pub struct Endpoint {
    pub label: &'static str,
    /// `http://127.0.0.1:PORT` plus the protocol prefix (`/segmind` on sim).
    pub base: String,
    pub key: String,
}

pub const BOUNDARY: &str = "parallax-bench-7d1f0c";

/// A multipart submit body: `prompt` and a `control_image` file part.
pub fn multipart(prompt: &str, jpeg: &[u8]) -> Vec<u8> {
    multipart_with(prompt, jpeg, &[])
}

/// [`multipart`] with more text fields.
pub fn multipart_with(prompt: &str, jpeg: &[u8], fields: &[(&str, &str)]) -> Vec<u8> {
    let mut body = Vec::new();
    for (name, value) in [("prompt", prompt)].iter().chain(fields) {
        body.extend_from_slice(
            format!(
                "--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"{name}\"\r\n\r\n{value}\r\n"
            )
            .as_bytes(),
        );
    }
    body.extend_from_slice(
        format!(
            "--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"control_image\"; filename=\"photo.jpg\"\r\n\
             Content-Type: image/jpeg\r\n\r\n"
        )
        .as_bytes(),
    );
    body.extend_from_slice(jpeg);
    body.extend_from_slice(format!("\r\n--{BOUNDARY}--\r\n").as_bytes());
    body
}

pub fn client() -> Result<Client> {
    Client::builder()
        .timeout(Duration::from_secs(60))
        .build()
        .map_err(|e| e.to_string())
}

fn json_of(resp: reqwest::blocking::Response, what: &str) -> Result<(u16, Value)> {
    let status = resp.status().as_u16();
    let text = resp.text().map_err(|e| format!("{what}: {e}"))?;
    let value = serde_json::from_str(&text).map_err(|_| format!("{what}: not JSON: {text}"))?;
    Ok((status, value))
}

impl Endpoint {
    /// Submits a flux-depth-pro job; answers the submit JSON.
    pub fn submit(&self, http: &Client, prompt: &str, jpeg: &[u8]) -> Result<Value> {
        self.submit_to(http, "flux-depth-pro", prompt, jpeg, &[])
    }

    /// Submits a job for `model` with more form `fields`; answers the submit JSON.
    pub fn submit_to(
        &self,
        http: &Client,
        model: &str,
        prompt: &str,
        jpeg: &[u8],
        fields: &[(&str, &str)],
    ) -> Result<Value> {
        let resp = http
            .post(format!("{}/v2/{model}", self.base))
            .header("x-api-key", &self.key)
            .header(
                "content-type",
                format!("multipart/form-data; boundary={BOUNDARY}"),
            )
            .body(multipart_with(prompt, jpeg, fields))
            .send()
            .map_err(|e| format!("{} submit: {e}", self.label))?;
        let (status, body) = json_of(resp, "submit")?;
        if status != 200 {
            return Err(format!("{} submit answered {status}: {body}", self.label));
        }
        Ok(body)
    }

    pub fn get(&self, http: &Client, url: &str) -> Result<(u16, Value)> {
        let resp = http
            .get(url)
            .header("x-api-key", &self.key)
            .send()
            .map_err(|e| format!("{} GET {url}: {e}", self.label))?;
        json_of(resp, url)
    }

    /// Polls `status_url` every `interval` until COMPLETED; answers how many polls.
    pub fn wait(&self, http: &Client, submitted: &Value, interval: Duration) -> Result<u32> {
        let url = field(submitted, "status_url")?;
        let deadline = Instant::now() + Duration::from_secs(120);
        let mut polls = 0;
        loop {
            let (code, body) = self.get(http, &url)?;
            polls += 1;
            match body["status"].as_str() {
                Some("COMPLETED") => return Ok(polls),
                Some("QUEUED" | "PROCESSING") if Instant::now() < deadline => {
                    std::thread::sleep(interval);
                }
                _ => return Err(format!("{} job ended {code}: {body}", self.label)),
            }
        }
    }

    /// The result's first image URL: `output`, a string, as Segmind answers it.
    pub fn first_output(&self, http: &Client, submitted: &Value) -> Result<String> {
        let (_, result) = self.get(http, &field(submitted, "response_url")?)?;
        result["output"]
            .as_str()
            .map(str::to_owned)
            .ok_or_else(|| format!("no output in {result}"))
    }

    /// Submit → poll (every 10 ms) → result → image bytes: the whole job, timed.
    /// A whole job as a client lives it: the submit, status reads every 10 ms, the
    /// result and the first image. Answers the whole time and the time from the
    /// submit's answer to the first COMPLETED status.
    pub fn full_job(&self, http: &Client, prompt: &str, jpeg: &[u8]) -> Result<FullJob> {
        let started = Instant::now();
        let submitted = self.submit(http, prompt, jpeg)?;
        let answered = Instant::now();
        self.wait(http, &submitted, Duration::from_millis(10))?;
        let told = answered.elapsed();
        let url = self.first_output(http, &submitted)?;
        let image = http
            .get(&url)
            .send()
            .and_then(reqwest::blocking::Response::bytes)
            .map_err(|e| format!("{} download: {e}", self.label))?;
        if image.len() < 100 {
            return Err(format!(
                "{} download of {url}: {} bytes",
                self.label,
                image.len()
            ));
        }
        Ok(FullJob {
            whole: started.elapsed(),
            told,
        })
    }
}

/// One whole job's timings ([`Endpoint::full_job`]).
#[derive(Debug, Clone, Copy)]
pub struct FullJob {
    pub whole: Duration,
    /// From the submit's answer to the first status read that said COMPLETED.
    pub told: Duration,
}

pub fn field(v: &Value, name: &str) -> Result<String> {
    v[name]
        .as_str()
        .map(str::to_owned)
        .ok_or_else(|| format!("no `{name}` in {v}"))
}

/// The median of some durations, in milliseconds.
pub fn median_ms(mut xs: Vec<Duration>) -> f64 {
    xs.sort();
    xs.get(xs.len() / 2)
        .map_or(0.0, |d| d.as_secs_f64() * 1000.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_multipart_body_carries_the_prompt_and_the_file() {
        let body = multipart("a cat", b"\xff\xd8jpeg");
        let text = String::from_utf8_lossy(&body);
        assert!(text.starts_with(&format!("--{BOUNDARY}\r\n")));
        assert!(text.contains("name=\"prompt\"\r\n\r\na cat\r\n"));
        assert!(text.ends_with(&format!("jpeg\r\n--{BOUNDARY}--\r\n")));
        assert_eq!(
            median_ms(vec![
                Duration::from_millis(3),
                Duration::from_millis(1),
                Duration::from_millis(2)
            ]),
            2.0
        );
    }
}
