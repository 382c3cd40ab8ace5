//! `cargo xtask test`: the whole suite, as CI runs it.
//!
//! 1. setup (incl. Chromium), `cargo fmt --check`, clippy `-D warnings` on the host and
//!    for wasm32, native tests;
//! 2. build the SPA and the Worker, start `sim` and `wrangler dev` on test ports with
//!    fresh local state and a random provider key given as a secret;
//! 3. HTTP tests (`e2e/tests`), client tests (`e2e/python`, `e2e/node`) and browser
//!    tests (`e2e/browser`) against it;
//! 4. `wrangler deploy --dry-run` of the production bundle;
//! 5. the provider key must appear nowhere: not in `dist/`, the bundle or the logs.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::cmd::{Counts, Result, command, exec, node_bin, root, run_counted};
use crate::stack::{Options, SimBuild, Stack};
use crate::{build, keys, setup, tools};

/// The test stack's ports: `PARALLAX_TEST_PORT` (default 8797) for the Worker, the next
/// one for `sim`, and that plus 442 for the inspector, so two checkouts can run their
/// suites side by side with different bases.
fn ports() -> (u16, u16, u16) {
    let port = std::env::var("PARALLAX_TEST_PORT")
        .ok()
        .and_then(|p| p.parse::<u16>().ok())
        .unwrap_or(8797);
    (port, port + 1, port + 442)
}

/// `PARALLAX_TEST_ONLY=browser,restart` runs only those phases (lint, native, http,
/// python, fuzz, browser, restart, limits, breaker, links, hooks, deploy) for a quick
/// local loop; CI sets nothing and runs them all. `PARALLAX_TEST_FILTER=held,wait_must`
/// narrows the HTTP phase to tests whose names contain one of those words (and the
/// browser phase to tests whose names match one of them).
fn wanted(phase: &str) -> bool {
    match std::env::var("PARALLAX_TEST_ONLY") {
        Ok(only) if !only.trim().is_empty() => only.split(',').any(|p| p.trim() == phase),
        _ => true,
    }
}

/// The words of `PARALLAX_TEST_FILTER` (none: every test).
fn filters() -> Vec<String> {
    std::env::var("PARALLAX_TEST_FILTER")
        .unwrap_or_default()
        .split(',')
        .map(str::trim)
        .filter(|w| !w.is_empty())
        .map(str::to_owned)
        .collect()
}

pub fn run() -> Result {
    let mut clock = Clock::default();
    let result = run_phases(&mut clock);
    clock.print();
    result
}

/// Wall time per phase, printed as a table at the end (also when a phase fails), so a
/// CI log shows where the time goes.
#[derive(Debug, Default)]
struct Clock {
    phases: Vec<(&'static str, Duration)>,
    started: Option<Instant>,
}

impl Clock {
    /// Runs `f` as the phase `name` and records its wall time.
    fn time<T>(&mut self, name: &'static str, f: impl FnOnce() -> Result<T>) -> Result<T> {
        let started = Instant::now();
        self.started.get_or_insert(started);
        let result = f();
        self.phases.push((name, started.elapsed()));
        result
    }

    fn print(&self) {
        let Some(started) = self.started else {
            return;
        };
        println!(
            "
xtask test: wall time per phase"
        );
        for (name, took) in &self.phases {
            println!("  {name:<14} {:>7.1} s", took.as_secs_f64());
        }
        println!(
            "  {:<14} {:>7.1} s",
            "total",
            started.elapsed().as_secs_f64()
        );
    }
}

fn run_phases(clock: &mut Clock) -> Result {
    clock.time("setup", || setup::run(true))?;
    let mut counts = Counts::default();
    if wanted("lint") {
        clock.time("lint", lint)?;
    }
    if wanted("native") {
        counts += clock.time("native", || {
            run_counted(command("cargo").args(["test", "--workspace"]))
        })?;
    }
    if ![
        "http", "python", "fuzz", "browser", "restart", "limits", "breaker", "links", "hooks",
        "deploy",
    ]
    .iter()
    .any(|p| wanted(p))
    {
        return Ok(());
    }
    e2e_phases(clock, counts)
}

fn lint() -> Result {
    exec(command("cargo").args(["fmt", "--all", "--check"]))?;
    exec(command("cargo").args([
        "clippy",
        "--workspace",
        "--all-targets",
        "--",
        "-D",
        "warnings",
    ]))?;
    exec(command("cargo").args([
        "clippy",
        "-p",
        "parallax-app",
        "-p",
        "parallax-edge",
        "-p",
        "parallax-api",
        "--target",
        tools::WASM32,
        "--",
        "-D",
        "warnings",
    ]))
}

fn e2e_phases(clock: &mut Clock, mut counts: Counts) -> Result {
    clock.time("build", build::all)?;
    let prepared = Instant::now();
    let e2e = root().join("target/e2e");
    let _ = fs::remove_dir_all(&e2e);
    fs::create_dir_all(&e2e).map_err(|e| format!("creating {}: {e}", e2e.display()))?;
    let key = probe_key();
    let env_file = e2e.join("secrets.env");
    let secrets: String = [
        "SEGMIND",
        "REPLICATE",
        "BFL",
        "PARALLAX_UPSTREAM",
        "COMFYUI",
    ]
    .iter()
    .map(|p| format!("{p}_API_KEY={key}\n"))
    // Signs the control image links providers fetch (the leak scan covers it too).
    .chain([format!("CONTROL_LINK_SECRET={key}\n")])
    .collect();
    fs::write(&env_file, secrets).map_err(|e| e.to_string())?;
    let log = e2e.join("stack.log");
    let state = e2e.join("state");
    let specs = [
        ("rich", 100_000, None),
        ("other", 100_000, None),
        ("idem", 1_000, None),
        ("canceler", 1_000, None),
        ("interleave", 1_000, None),
        ("interleave_delete", 1_000, None),
        ("interleave_unsent", 1_000, None),
        ("faults", 1_000, None),
        ("history", 1_000, None),
        ("lister", 1_000, None),
        // The public-API credits audit (issue 28): a fresh key with one grant.
        ("credits", 2_000, None),
        ("credits_ui", 1_000, None),
        // Balance checks run side by side: each on a key of its own.
        ("ledger", 1_000, None),
        ("ledger_replay", 1_000, None),
        ("ledger_concurrent", 1_000, None),
        ("ledger_truncated", 1_000, None),
        ("ledger_reaper", 1_000, None),
        ("ledger_prune", 1_000, None),
        ("ledger_sync", 1_000, None),
        ("legacy", 1_000, None),
        ("load", 10_000_000, None),
        ("poor", 7, None),
        // Held reads beyond the caps: an account of its own (the cap is per account).
        ("holder", 1_000, None),
        // Refused before its body is read: an account with nothing.
        ("broke", 0, None),
        ("limited", 100_000, Some(2)),
    ];
    let test_keys: Vec<String> = keys::create_many(&keys::Target::Local(&state), &specs)?
        .into_iter()
        .zip(specs)
        .map(|(key, (name, _, _))| format!("{name}={key}"))
        .collect();
    if !["http", "python", "fuzz", "browser"]
        .iter()
        .any(|p| wanted(p))
    {
        clock.phases.push(("keys", prepared.elapsed()));
        return later_phases(clock, counts, &e2e, &env_file, &key, &log);
    }
    clock.phases.push(("keys", prepared.elapsed()));
    let stack = clock.time("stack start", || {
        Stack::start(&stack_options(
            state.clone(),
            Some(env_file.clone()),
            log.clone(),
            true,
        ))
        .map_err(|e| format!("{e} (see {})", log.display()))
    })?;

    let sim_url = format!("http://127.0.0.1:{}", ports().1);
    let against_stack = |c: &mut Command| {
        c.env("PARALLAX_BASE_URL", &stack.base_url)
            .env("PARALLAX_SIM_URL", &sim_url)
            .env("PARALLAX_STATE_DIR", &state)
            .env("PARALLAX_SECRET_PROBE", &key)
            .env("PARALLAX_TEST_KEYS", test_keys.join(","));
    };
    // The ComfyUI check, against the sim's keyed ComfyUI (the same real schemas).
    if wanted("http") {
        counts += clock.time("http", || {
            crate::comfyui_check::run(&[
                "--url".into(),
                format!("{sim_url}/comfyui-proxy"),
                "--key".into(),
                key.clone(),
            ])?;
            let mut http = e2e_tests();
            http.args([
                "--",
                "--ignored",
                "--test-threads",
                "4",
                // Those run later, around a crash of the Worker, and on the limits stack.
                "--skip",
                "restart_phase",
                "--skip",
                "limits_phase",
                "--skip",
                "chaos_phase",
                "--skip",
                "breaker_phase",
                "--skip",
                "links_phase",
                "--skip",
                "hooks_phase",
            ]);
            // A filtered run is a local loop: show what the tests print (figures).
            if !filters().is_empty() {
                http.args(filters()).arg("--show-output");
            }
            against_stack(&mut http);
            let mut counts = run_counted(&mut http)
                .map_err(|e| format!("{e} (stack log: {})", log.display()))?;
            // The ComfyUI check.
            counts.passed += 1;
            Ok(counts)
        })?;
    }

    if wanted("python") {
        counts += clock.time("python", || {
            let mut python = command(&root().join("target/py/bin/pytest").display().to_string());
            python.args(["-q", "-p", "no:cacheprovider", "e2e/python"]);
            against_stack(&mut python);
            run_counted(&mut python).map_err(|e| format!("{e} (stack log: {})", log.display()))
        })?;
    }

    if wanted("fuzz") {
        clock.time("fuzz", || {
            let mut fuzz = command(
                &root()
                    .join("target/py/bin/schemathesis")
                    .display()
                    .to_string(),
            );
            fuzz.args(["run", &format!("{}/openapi.json", stack.base_url)])
                .args(["--checks", "all", "--max-examples", "20", "--seed", "1"])
                // A schema cannot say "the bytes must be a real image of at least 16×16", so
                // schema-valid random control images are rightly refused with 400.
                .args(["--exclude-checks", "positive_data_acceptance"])
                .args(["--header", &format!("x-api-key: {}", rich_key(&test_keys))])
                .env("SCHEMATHESIS_HOOKS", "")
                .env("NO_COLOR", "1");
            exec(&mut fuzz).map_err(|e| format!("{e} (stack log: {})", log.display()))
        })?;
        counts.passed += 1;
    }

    if wanted("browser") {
        counts += clock.time("browser", || {
            let mut browser = command("node");
            browser.args(["--test", "--test-reporter", "tap"]);
            if let Some(pattern) = filters().into_iter().reduce(|a, b| format!("{a}|{b}")) {
                browser.arg(format!("--test-name-pattern={pattern}"));
            }
            browser.args(["e2e/browser/", "e2e/node/"]);
            against_stack(&mut browser);
            run_counted(&mut browser).map_err(|e| format!("{e} (stack log: {})", log.display()))
        })?;
    }
    clock.time("stack stop", || {
        drop(stack);
        Ok(())
    })?;
    later_phases(clock, counts, &e2e, &env_file, &key, &log)
}

/// The Worker crash and limits stacks, the production dry-run and the leak scan.
fn later_phases(
    clock: &mut Clock,
    mut counts: Counts,
    e2e: &Path,
    env_file: &Path,
    key: &str,
    log: &Path,
) -> Result {
    if wanted("restart") {
        counts += clock.time("restart", || restart_survival(e2e, env_file, key))?;
    }
    if wanted("limits") {
        counts += clock.time("limits", || limits(e2e, env_file, key))?;
    }
    if wanted("breaker") {
        counts += clock.time("breaker", || breaker(e2e, env_file, key))?;
    }
    if wanted("links") || wanted("hooks") {
        counts += clock.time("links+hooks", || links_and_hooks(e2e, env_file, key))?;
    }
    if !wanted("deploy") {
        println!(
            "\nxtask test (PARALLAX_TEST_ONLY): {} passed, {} failed",
            counts.passed, counts.failed
        );
        return Ok(());
    }
    let bundle = e2e.join("deploy-dry-run");
    clock.time("deploy", || {
        exec(
            command(&node_bin().join("wrangler").display().to_string())
                .args(["deploy", "--dry-run", "--env", "production", "--outdir"])
                .arg(&bundle),
        )?;

        let mut leaks = Vec::new();
        for place in [root().join("dist"), bundle, log.to_owned()] {
            find_text(&place, key, &mut leaks);
        }
        if leaks.is_empty() {
            Ok(())
        } else {
            Err(format!(
                "the provider key leaked into: {}",
                leaks.join(", ")
            ))
        }
    })?;
    counts.passed += 1;
    println!("✓ the provider key is in no response, dist/ file, bundle file or log line");

    if let Ok(figures) = fs::read_to_string(e2e.join("reliability.json")) {
        println!(
            "\nReliability (load through the Worker, from target/e2e/reliability.json):\n{figures}"
        );
    }
    println!(
        "\nxtask test: all green in {:.0?}\n{} passed, {} failed",
        clock.started.map(|s| s.elapsed()).unwrap_or_default(),
        counts.passed,
        counts.failed
    );
    Ok(())
}

/// `cargo test` of the e2e tests: `cargo test --workspace --tests` with the ignored
/// tests and a name filter after `--` (only `e2e/tests` has ignored tests). The
/// native phase's `cargo test --workspace` already built every one of those binaries:
/// Cargo unifies features and shares units over the targets a command names, so
/// `cargo test -p parallax-e2e` (or `--test <file>`) built the e2e crates' whole
/// dependency tree again, as another variant.
fn e2e_tests() -> Command {
    let mut c = command("cargo");
    c.args(["test", "--workspace", "--tests"]);
    c
}

/// The test stack: sim on test ports with short timings, the Worker with test vars.
fn stack_options(
    state: PathBuf,
    env_file: Option<PathBuf>,
    log: PathBuf,
    with_sim: bool,
) -> Options {
    let (port, sim_port, inspector_port) = ports();
    Options {
        port,
        sim_port,
        inspector_port,
        state_dir: state,
        sim_args: ["--queue-ms", "300", "--process-ms", "1200"]
            .map(String::from)
            .to_vec(),
        // Anonymous use stays on (the playground needs it) with room for the suite;
        // retention is short so expiry is observable; the edge fetches no URLs here
        // (fuzzers must not make it reach outside this machine).
        vars: [
            ("ANON_DAILY_CREDITS", "1000000"),
            ("RATE_LIMIT_SUBMITS_PER_MIN", "100000"),
            ("RATE_LIMIT_READS_PER_MIN", "1000000"),
            ("RETENTION_SECS", "25"),
            ("REMOTE_IMAGES", "off"),
            ("SYNC_WAIT_SECS", "5"),
            ("UPSTREAM_TIMEOUT_SECS", "8"),
            ("JOB_DEADLINE_SECS", "30"),
            // Test jobs take 1.5 s; production's 2 s poll budget would triple that.
            ("POLL_EVERY_MS", "250"),
            // The webhook tests' receiver listens on http://127.0.0.1.
            ("WEBHOOK_LOOPBACK", "on"),
            // `/__dev/ledger`: the migration test writes a pre-rows account state.
            ("LEDGER_DEV_OPS", "on"),
            // Faults are per prompt but the breaker is per provider: with the default
            // threshold the fault tests would open it under the tests that need that
            // provider. Every submit still goes through the breaker's Durable Object.
            ("BREAKER_FAILURES", "1000"),
            // An uploaded asset no job used is gone after this (production: an hour).
            ("ASSET_UNUSED_SECS", "20"),
        ]
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .to_vec(),
        env_file,
        log: Some(log),
        with_sim,
        sim_build: SimBuild::WithTests,
    }
}

/// Crashes the Worker while jobs are in flight and restarts it on the same state:
/// every job must still complete, charged once, submitted upstream once. The chaos
/// run's first half runs before the crash, its second half and the audit after.
fn restart_survival(e2e: &Path, env_file: &Path, probe: &str) -> Result<Counts> {
    let state = e2e.join("restart-state");
    let log = e2e.join("restart.log");
    let [key, chaos]: [String; 2] = keys::create_many(
        &keys::Target::Local(&state),
        &[("restart", 1_000, None), ("chaos", 1_000_000, None)],
    )?
    .try_into()
    .map_err(|_| "two keys expected")?;
    let (port, sim_port, _) = ports();
    let state_dir = state.clone();
    let phase = |name: &str| {
        let mut c = e2e_tests();
        c.args(["--", "--ignored", "--exact", name, "--nocapture"])
            .env("PARALLAX_BASE_URL", format!("http://127.0.0.1:{port}"))
            .env("PARALLAX_SIM_URL", format!("http://127.0.0.1:{sim_port}"))
            .env("PARALLAX_SECRET_PROBE", probe)
            .env("PARALLAX_STATE_DIR", &state_dir)
            .env("PARALLAX_TEST_KEYS", format!("restart={key},chaos={chaos}"));
        run_counted(&mut c).map_err(|e| format!("{e} (see {})", log.display()))
    };
    // The chaos audit reads every job's credits after the run: keep them that long.
    let long_lived = |with_sim| {
        let mut o = stack_options(
            state.clone(),
            Some(env_file.to_owned()),
            log.clone(),
            with_sim,
        );
        for (k, v) in &mut o.vars {
            if k == "RETENTION_SECS" {
                *v = "900".to_owned();
            }
        }
        o
    };
    let mut stack = Stack::start(&long_lived(true))?;
    let mut counts = phase("restart_phase_submit")?;
    counts += phase("chaos_phase_start")?;
    stack.kill_worker();
    println!("✗ wrangler dev killed with jobs in flight; restarting on the same state");
    let again = Stack::start(&long_lived(false))?;
    stack.adopt(again);
    counts += phase("restart_phase_verify")?;
    counts += phase("chaos_phase_finish")?;
    Ok(counts)
}

/// A short-lived stack of its own for the e2e tests of one or more phases (tests named
/// `{phase}_phase…`): the test stack's settings with `vars` over them (state and log
/// under `e2e/{name}-…`), a key named `name` when `key` is set, torn down after. The
/// phases' tests run in one `cargo test` against the one stack.
struct SideStack<'a> {
    name: &'a str,
    vars: Vec<(&'a str, String)>,
    /// Runs the e2e tests named `{phase}_phase…` of each of these.
    phases: Vec<&'a str>,
    key: bool,
}

fn side_stack(e2e: &Path, env_file: &Path, probe: &str, side: SideStack<'_>) -> Result<Counts> {
    let state = e2e.join(format!("{}-state", side.name));
    let log = e2e.join(format!("{}.log", side.name));
    let key = if side.key {
        Some(keys::create(
            &keys::Target::Local(&state),
            side.name,
            1_000,
            None,
        )?)
    } else {
        None
    };
    let mut options = stack_options(state, Some(env_file.to_owned()), log.clone(), true);
    for (name, value) in side.vars {
        options.vars.retain(|(n, _)| n != name);
        options.vars.push((name.to_owned(), value));
    }
    let stack = Stack::start(&options).map_err(|e| format!("{e} (see {})", log.display()))?;
    let mut c = e2e_tests();
    c.args(["--", "--ignored"])
        .args(side.phases.iter().map(|phase| format!("{phase}_phase")))
        .env("PARALLAX_BASE_URL", &stack.base_url)
        .env(
            "PARALLAX_SIM_URL",
            format!("http://127.0.0.1:{}", ports().1),
        )
        .env("PARALLAX_SECRET_PROBE", probe);
    if let Some(key) = key {
        c.env("PARALLAX_TEST_KEYS", format!("{}={key}", side.name));
    }
    let counts = run_counted(&mut c).map_err(|e| format!("{e} (see {})", log.display()))?;
    drop(stack);
    Ok(counts)
}

/// A stack with production's anonymous settings (every submit needs a key, reads
/// by id are public) and a low keyless read limit: keyless reads are refused per
/// client address once over it.
fn limits(e2e: &Path, env_file: &Path, probe: &str) -> Result<Counts> {
    let vars = [
        ("ANON_DAILY_CREDITS", "0"),
        ("RATE_LIMIT_KEYLESS_READS_PER_MIN", "20"),
    ];
    side_stack(
        e2e,
        env_file,
        probe,
        SideStack {
            name: "limits",
            vars: vars.map(|(k, v)| (k, v.to_owned())).to_vec(),
            phases: vec!["limits"],
            key: true,
        },
    )
}

/// A stack where breakers open after 2 consecutive failures and close after 5 s, pro
/// has one provider (bfl) and falls back to dev (fal): the breaker's whole cycle and
/// the model fallback, end to end (`e2e/tests/breaker.rs`).
fn breaker(e2e: &Path, env_file: &Path, probe: &str) -> Result<Counts> {
    let vars = [
        ("BREAKER_FAILURES", "2"),
        ("BREAKER_COOL_DOWN_SECS", "5"),
        ("FALLBACK_FLUX_DEPTH_PRO", "flux-depth-dev"),
        ("PROVIDERS_FLUX_DEPTH_PRO", "bfl"),
        ("PROVIDERS_FLUX_DEPTH_DEV", "fal"),
        ("CREDITS_FLUX_DEPTH_PRO", "5"),
        ("CREDITS_FLUX_DEPTH_DEV", "2"),
    ];
    side_stack(
        e2e,
        env_file,
        probe,
        SideStack {
            name: "breaker",
            vars: vars.map(|(k, v)| (k, v.to_owned())).to_vec(),
            phases: vec!["breaker"],
            key: true,
        },
    )
}

/// The links and hooks phases share one stack: the test stack with `PUBLIC_BASE_URL`
/// set to where the sim reaches the Worker, plus upstream callbacks.
///
/// - links (`e2e/tests/links.rs`): with `PUBLIC_BASE_URL` and the env file's
///   `CONTROL_LINK_SECRET`, providers that fetch URLs get the control image as a
///   signed link, which the sim fetches. Not the main stack: there the sim's fetch
///   back into the Worker sits inside each submit, and under the 300-job load on two
///   shared cores it timed out for 16 of 300 jobs.
/// - hooks (`e2e/tests/hooks.rs`): `HOOK_SECRET` (the test file's constant), the sim
///   account's Replicate webhook secret, the sim's fal JWKS, and an 8 s backstop so a
///   job whose callback never comes finishes soon. Not the main stack: there no
///   provider calls back, so the polling tests keep their schedule.
///
/// The links tests assert which provider completed a job, how the sim got its control
/// image and which links are refused, none of which a callback changes; both files'
/// tests count and match the sim's records by their own unique prompts.
fn links_and_hooks(e2e: &Path, env_file: &Path, probe: &str) -> Result<Counts> {
    let (port, sim_port, _) = ports();
    let phases = ["links", "hooks"]
        .into_iter()
        .filter(|phase| wanted(phase))
        .collect();
    side_stack(
        e2e,
        env_file,
        probe,
        SideStack {
            name: "hooks",
            vars: vec![
                ("PUBLIC_BASE_URL", format!("http://127.0.0.1:{port}")),
                ("HOOK_SECRET", "parallax-hooks-stack-secret".to_owned()),
                (
                    "REPLICATE_WEBHOOK_SECRET",
                    "whsec_cGFyYWxsYXgtc2ltLXJlcGxpY2F0ZS1zZWNyZXQ=".to_owned(),
                ),
                (
                    "FAL_WEBHOOK_JWKS_URL",
                    format!("http://127.0.0.1:{sim_port}/fal/.well-known/jwks.json"),
                ),
                ("HOOK_BACKSTOP_MS", "8000".to_owned()),
                // The sim's fal account (`sim/src/hooks.rs`): deliveries are pinned to it.
                ("FAL_USER_ID", "sim-user".to_owned()),
            ],
            phases,
            key: false,
        },
    )
}

fn rich_key(keys: &[String]) -> String {
    keys.iter()
        .find_map(|k| k.strip_prefix("rich="))
        .unwrap_or_default()
        .to_owned()
}

/// A fresh random-looking key per run, so a leak of it cannot be a coincidence.
fn probe_key() -> String {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    format!("SG_probe_{:x}{:x}", nanos, std::process::id())
}

/// Records every file under `path` that contains `needle`.
fn find_text(path: &Path, needle: &str, found: &mut Vec<String>) {
    if path.is_dir() {
        if let Ok(entries) = fs::read_dir(path) {
            for entry in entries.flatten() {
                find_text(&entry.path(), needle, found);
            }
        }
    } else if let Ok(bytes) = fs::read(path)
        && bytes.windows(needle.len()).any(|w| w == needle.as_bytes())
    {
        found.push(path.display().to_string());
    }
}
