//! Starts `sim` and `wrangler dev` (the built Worker with local KV, R2 and Durable
//! Objects), waits until both answer, and stops them when dropped.

use std::fs::File;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use crate::cmd::{Result, command, exec, node_bin, root};

/// Provider var prefixes and the sim path that speaks their protocol.
pub const SIM_PROVIDERS: [(&str, &str); 6] = [
    ("SEGMIND", "segmind"),
    ("REPLICATE", "replicate"),
    ("BFL", "bfl"),
    // ComfyUI behind the API-key proxy: every call, `/view` included, needs the key.
    ("COMFYUI", "comfyui-proxy"),
    ("PARALLAX_UPSTREAM", "parallax"),
    ("FAL", "fal"),
];

/// How to start the stack.
#[derive(Debug, Clone)]
pub struct Options {
    pub port: u16,
    pub sim_port: u16,
    pub inspector_port: u16,
    pub state_dir: PathBuf,
    pub sim_args: Vec<String>,
    /// Extra wrangler vars (`--var NAME:VALUE`).
    pub vars: Vec<(String, String)>,
    /// Secrets for the Worker (shown hidden by wrangler), e.g. provider keys.
    pub env_file: Option<PathBuf>,
    /// Where output goes; `None` inherits the terminal.
    pub log: Option<PathBuf>,
    /// Start sim too (false: it is already running, e.g. across a Worker restart).
    pub with_sim: bool,
    /// How `cargo` builds the sim first.
    pub sim_build: SimBuild,
}

/// How the sim binary is built before it starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SimBuild {
    /// `cargo build -p parallax-sim`: the sim and its dependencies only (dev, bench).
    Alone,
    /// Alongside the workspace's tests (`cargo xtask test`): Cargo unifies features and
    /// shares units over the targets a command names, so a build of the sim alone
    /// builds its whole dependency tree again in another variant than the one `cargo
    /// test --workspace` already built; named with `--workspace --tests` it is the
    /// same variant (every test target is already fresh), and only the binary links.
    WithTests,
}

/// The running processes; dropping this stops them.
#[derive(Debug)]
pub struct Stack {
    children: Vec<(&'static str, Child)>,
    pub base_url: String,
    /// Set to stop the [`nudge`] thread.
    nudging: Option<Arc<AtomicBool>>,
}

/// Sends `HEAD /robots.txt` (a static file: no account, no rate limit) to the test
/// stack every second until `stop` is set, so no request waits on `wrangler dev`'s
/// proxy for a later one. Its ProxyWorker (wrangler 4.86,
/// `node_modules/wrangler/wrangler-dist/ProxyWorker.js`) parks a GET or HEAD whose
/// fetch to the Worker failed (the keep-alive race of workers-sdk#14641) in
/// `requestRetryQueue`, and sends it again only from `processQueue`, which runs when
/// the next request arrives (:42-52) or on a reload: it takes the failure for a
/// reload, comparing the request's URL with the Worker's base URL, path and all
/// (:129-141). A page or test whose last request was parked so waited until another
/// came: CI's 31.8 s static-file stall, and a status read that timed out after 60 s
/// here. A non-GET gets a 503 "restarted mid-request" instead (the e2e crate's
/// `send_repeatable`). Production has no such proxy.
fn nudge(port: u16, stop: Arc<AtomicBool>) {
    let Ok(client) = reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
    else {
        return;
    };
    let url = format!("http://127.0.0.1:{port}/robots.txt");
    while !stop.load(Ordering::Relaxed) {
        let _ = client.head(&url).send();
        std::thread::sleep(Duration::from_secs(1));
    }
}

fn output_to(c: &mut Command, log: Option<&PathBuf>) -> Result {
    if let Some(path) = log {
        let file = File::options()
            .create(true)
            .append(true)
            .open(path)
            .map_err(|e| format!("opening {}: {e}", path.display()))?;
        let err = file.try_clone().map_err(|e| e.to_string())?;
        c.stdout(file).stderr(err);
    }
    Ok(())
}

impl Stack {
    pub fn start(opts: &Options) -> Result<Self> {
        let mut build = command("cargo");
        build.args(["build", "--quiet"]);
        match opts.sim_build {
            SimBuild::Alone => build.args(["-p", "parallax-sim"]),
            SimBuild::WithTests => build.args(["--workspace", "--tests", "--bin", "parallax-sim"]),
        };
        exec(&mut build)?;
        let mut stack = Stack {
            children: Vec::new(),
            base_url: format!("http://127.0.0.1:{}", opts.port),
            nudging: None,
        };
        let managed = opts.log.is_some();

        if opts.with_sim {
            let mut sim = Command::new(root().join("target/debug/parallax-sim"));
            sim.arg("--port")
                .arg(opts.sim_port.to_string())
                .args(&opts.sim_args)
                .stdin(Stdio::null());
            output_to(&mut sim, opts.log.as_ref())?;
            if managed {
                sim.process_group(0);
            }
            stack.spawn("sim", &mut sim)?;
        }
        wait_healthy(opts.sim_port, Duration::from_secs(30))?;

        let mut wrangler = command(&node_bin().join("wrangler").display().to_string());
        wrangler
            .args(["dev", "--ip", "127.0.0.1", "--port"])
            .arg(opts.port.to_string())
            .arg("--inspector-port")
            .arg(opts.inspector_port.to_string())
            .arg("--persist-to")
            .arg(&opts.state_dir)
            .arg("--show-interactive-dev-session=false")
            .stdin(Stdio::null());
        // Every provider's protocol is served by sim under its own prefix.
        for (prefix, path) in SIM_PROVIDERS {
            wrangler.arg("--var").arg(format!(
                "{prefix}_BASE_URL:http://127.0.0.1:{}/{path}",
                opts.sim_port
            ));
        }
        for (name, value) in &opts.vars {
            wrangler.arg("--var").arg(format!("{name}:{value}"));
        }
        if let Some(env_file) = &opts.env_file {
            wrangler.arg("--env-file").arg(env_file);
        }
        output_to(&mut wrangler, opts.log.as_ref())?;
        if managed {
            wrangler.process_group(0);
        }
        stack.spawn("wrangler", &mut wrangler)?;
        wait_healthy(opts.port, Duration::from_secs(120))?;
        if managed {
            let stop = Arc::new(AtomicBool::new(false));
            let (port, flag) = (opts.port, stop.clone());
            std::thread::spawn(move || nudge(port, flag));
            stack.nudging = Some(stop);
        }
        Ok(stack)
    }

    fn spawn(&mut self, name: &'static str, c: &mut Command) -> Result {
        let child = c
            .spawn()
            .map_err(|e| format!("could not start {name}: {e}"))?;
        self.children.push((name, child));
        Ok(())
    }

    /// Stops the Worker only (SIGKILL, like a crash), leaving sim running.
    pub fn kill_worker(&mut self) {
        self.stop_nudging();
        if let Some(pos) = self.children.iter().position(|(n, _)| *n == "wrangler") {
            let (_, mut child) = self.children.remove(pos);
            let group = format!("-{}", child.id());
            let _ = Command::new("kill").args(["-KILL", "--", &group]).status();
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Takes over another stack's processes (so one drop stops them all).
    pub fn adopt(&mut self, mut other: Stack) {
        self.children.append(&mut other.children);
        self.stop_nudging();
        self.nudging = other.nudging.take();
    }

    fn stop_nudging(&mut self) {
        if let Some(stop) = self.nudging.take() {
            stop.store(true, Ordering::Relaxed);
        }
    }

    /// Waits for the first process to exit (used by `dev`).
    pub fn wait(&mut self) -> Result {
        loop {
            for (name, child) in &mut self.children {
                if let Ok(Some(status)) = child.try_wait() {
                    return Err(format!("{name} exited ({status})"));
                }
            }
            std::thread::sleep(Duration::from_millis(300));
        }
    }
}

impl Drop for Stack {
    fn drop(&mut self) {
        self.stop_nudging();
        for (_, child) in self.children.iter_mut().rev() {
            // Each managed child leads its own process group: signal the whole group so
            // workerd (wrangler's child) stops too.
            let group = format!("-{}", child.id());
            let _ = Command::new("kill").args(["-TERM", "--", &group]).status();
            let deadline = Instant::now() + Duration::from_secs(5);
            while Instant::now() < deadline {
                if matches!(child.try_wait(), Ok(Some(_))) {
                    break;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            let _ = Command::new("kill").args(["-KILL", "--", &group]).status();
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Polls `GET /healthz` on loopback until it answers 200.
pub fn wait_healthy(port: u16, timeout: Duration) -> Result {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if healthz(port).unwrap_or(false) {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(250));
    }
    Err(format!(
        "nothing healthy on 127.0.0.1:{port} after {timeout:?}"
    ))
}

fn healthz(port: u16) -> std::io::Result<bool> {
    let mut s = TcpStream::connect(("127.0.0.1", port))?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    write!(
        s,
        "GET /healthz HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n"
    )?;
    let mut head = [0u8; 16];
    let n = s.read(&mut head)?;
    Ok(head[..n].starts_with(b"HTTP/1.1 200"))
}
