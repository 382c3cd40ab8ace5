//! Running wrk (Debian's package) and reading its `--latency` report.

use serde_json::{Value, json};

use crate::cmd::{Result, command, root};

/// What one wrk run measured.
#[derive(Debug, Clone, PartialEq)]
pub struct WrkRun {
    pub p50_ms: f64,
    pub p90_ms: f64,
    pub p99_ms: f64,
    pub requests_per_sec: f64,
    pub requests: u64,
    /// Non-2xx/3xx answers plus socket errors: must be 0 for a valid figure.
    pub errors: u64,
}

impl WrkRun {
    pub fn json(&self) -> Value {
        json!({
            "p50_ms": self.p50_ms, "p90_ms": self.p90_ms, "p99_ms": self.p99_ms,
            "requests_per_sec": self.requests_per_sec, "requests": self.requests,
            "errors": self.errors,
        })
    }
}

/// One load: `connections` open connections for `secs` seconds against `url`, with
/// a script from `bench/` and its environment.
#[derive(Debug)]
pub struct Load<'a> {
    pub url: &'a str,
    pub script: &'a str,
    pub connections: u32,
    pub secs: u32,
    pub env: &'a [(&'a str, String)],
}

pub fn run(load: &Load<'_>) -> Result<WrkRun> {
    let threads = load.connections.clamp(1, 2);
    let mut c = command("wrk");
    c.arg(format!("-t{threads}"))
        .arg(format!("-c{}", load.connections))
        .arg(format!("-d{}s", load.secs))
        .arg("--latency")
        .arg("--timeout")
        .arg("30s")
        .arg("-s")
        .arg(root().join("bench").join(load.script))
        .arg(load.url);
    for (k, v) in load.env {
        c.env(k, v);
    }
    let out = c
        .output()
        .map_err(|e| format!("could not start wrk: {e}"))?;
    let text = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        return Err(format!(
            "wrk failed: {}{}",
            text,
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    parse(&text).ok_or_else(|| format!("could not read wrk's report:\n{text}"))
}

/// A duration as wrk prints it (`635.00us`, `2.21ms`, `1.02s`), in milliseconds.
fn duration_ms(s: &str) -> Option<f64> {
    let s = s.trim();
    let (num, scale) = if let Some(n) = s.strip_suffix("us") {
        (n, 0.001)
    } else if let Some(n) = s.strip_suffix("ms") {
        (n, 1.0)
    } else if let Some(n) = s.strip_suffix('m') {
        (n, 60_000.0)
    } else if let Some(n) = s.strip_suffix('s') {
        (n, 1000.0)
    } else {
        return None;
    };
    num.parse::<f64>().ok().map(|v| v * scale)
}

/// Reads wrk's `--latency` report.
pub fn parse(text: &str) -> Option<WrkRun> {
    let pct = |p: &str| {
        text.lines()
            .map(str::trim)
            .find_map(|l| l.strip_prefix(p).and_then(duration_ms))
    };
    let (p50_ms, p90_ms, p99_ms) = (pct("50%")?, pct("90%")?, pct("99%")?);
    let field = |prefix: &str| {
        text.lines()
            .map(str::trim)
            .find_map(|l| l.strip_prefix(prefix))
            .map(str::trim)
    };
    let requests_per_sec = field("Requests/sec:")?.parse().ok()?;
    let requests = text
        .lines()
        .find(|l| l.contains("requests in"))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()?;
    let non_2xx: u64 = field("Non-2xx or 3xx responses:")
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    let socket: u64 = field("Socket errors:")
        .map(|s| {
            s.split(',')
                .filter_map(|part| part.split_whitespace().nth(1)?.parse::<u64>().ok())
                .sum()
        })
        .unwrap_or(0);
    Some(WrkRun {
        p50_ms,
        p90_ms,
        p99_ms,
        requests_per_sec,
        requests,
        errors: non_2xx + socket,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const REPORT: &str = "Running 5s test @ http://127.0.0.1:8808/segmind/v2/requests
  2 threads and 64 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency     5.12ms    1.02ms  21.50ms   90.00%
    Req/Sec     6.20k   300.00     7.00k    70.00%
  Latency Distribution
     50%  635.00us
     75%    1.20ms
     90%    2.00ms
     99%    1.02s
  61234 requests in 5.00s, 12.00MB read
  Socket errors: connect 0, read 2, write 0, timeout 1
  Non-2xx or 3xx responses: 4
Requests/sec:  12246.80
Transfer/sec:      2.40MB
";

    #[test]
    fn wrk_latency_reports_are_read_in_milliseconds() {
        let run = parse(REPORT).unwrap();
        assert!((run.p50_ms - 0.635).abs() < 1e-9);
        assert_eq!(run.p90_ms, 2.0);
        assert_eq!(run.p99_ms, 1020.0);
        assert_eq!(run.requests, 61234);
        assert_eq!(run.requests_per_sec, 12246.8);
        assert_eq!(run.errors, 7);
        assert_eq!(parse("garbage"), None);
    }
}
