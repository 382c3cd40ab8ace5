//! `cargo xtask dev`: everything set up and built, then the playground and API on
//! http://127.0.0.1:8787 with every provider pointed at `sim` (unless `.dev.vars`
//! configures real keys and base URLs).

use std::time::Duration;

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
        vars: Vec::new(),
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
