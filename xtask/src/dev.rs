//! `cargo xtask dev`: everything set up and built, then the playground and API on
//! http://127.0.0.1:8787 with every provider pointed at `sim` (unless `.dev.vars`
//! configures real keys and base URLs).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::cmd::{Result, root};
use crate::stack::{Options, SimBuild, Stack};
use crate::{build, setup};

pub fn run() -> Result {
    setup::run(false)?;
    build::all()?;
    let opts = Options {
        port: 8787,
        sim_port: 8790,
        inspector_port: 9229,
        state_dir: root().join(".wrangler/state"),
        sim_args: Vec::new(),
        vars: vec![("CONTROL_LINK_SECRET".to_owned(), dev_secret()?)],
        env_file: None,
        log: None,
        with_sim: true,
        sim_build: SimBuild::Alone,
    };
    let mut stack = Stack::start(&opts)?;
    std::thread::sleep(Duration::from_millis(200));
    println!(
        "\n  Parallax is running: {}  (API: POST {0}/v2/flux-depth-pro)\n  sim (Segmind protocol) on http://127.0.0.1:{}\n  Ctrl-C stops both.\n",
        stack.base_url, opts.sim_port
    );
    stack.wait()
}

/// The dev stack's `CONTROL_LINK_SECRET` (it signs the owner's links to control images
/// and anonymous owner tokens, so the studio's compare slider works): made once per
/// checkout and kept in `.wrangler/`, so links and tokens survive a restart. A dev
/// stack listens on loopback with the sim as every provider: this guards nothing real.
fn dev_secret() -> Result<String> {
    let path = root().join(".wrangler/dev-control-link-secret");
    if let Ok(s) = std::fs::read_to_string(&path)
        && !s.trim().is_empty()
    {
        return Ok(s.trim().to_owned());
    }
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    let secret = format!("dev-{nanos:x}{:x}", std::process::id());
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    }
    std::fs::write(&path, &secret).map_err(|e| format!("{}: {e}", path.display()))?;
    Ok(secret)
}
