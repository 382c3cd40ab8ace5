//! Running commands with readable failures.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

pub type Result<T = ()> = std::result::Result<T, String>;

/// The workspace root (the parent of `xtask/`).
pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map_or_else(|| PathBuf::from("."), Path::to_path_buf)
}

/// `node_modules/.bin`, where wrangler, esbuild and wasm-opt live.
pub fn node_bin() -> PathBuf {
    root().join("node_modules").join(".bin")
}

/// Where `cargo install` puts binaries.
pub fn cargo_bin() -> PathBuf {
    std::env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cargo")))
        .unwrap_or_default()
        .join("bin")
}

/// PATH with `node_modules/.bin` and cargo's bin directory in front.
pub fn path_with_tools() -> String {
    [
        node_bin().display().to_string(),
        cargo_bin().display().to_string(),
        std::env::var("PATH").unwrap_or_default(),
    ]
    .join(":")
}

/// A command rooted at the workspace, with the tool PATH.
pub fn command(program: &str) -> Command {
    let mut c = Command::new(program);
    c.current_dir(root()).env("PATH", path_with_tools());
    c
}

fn describe(c: &Command) -> String {
    let args: Vec<String> = c
        .get_args()
        .map(|a| a.to_string_lossy().into_owned())
        .collect();
    format!("{} {}", c.get_program().to_string_lossy(), args.join(" "))
}

/// Runs to completion with inherited output; fails on a non-zero exit.
pub fn exec(c: &mut Command) -> Result {
    let what = describe(c);
    println!("$ {what}");
    let status = c
        .status()
        .map_err(|e| format!("could not start `{what}`: {e}"))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("`{what}` failed ({status})"))
    }
}

/// Runs and returns stdout, or None if the program is missing or fails.
pub fn output(c: &mut Command) -> Option<String> {
    let out = c.stderr(Stdio::null()).output().ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Test counts read from runners' summary lines.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Counts {
    pub passed: u64,
    pub failed: u64,
}

impl std::ops::AddAssign for Counts {
    fn add_assign(&mut self, o: Self) {
        self.passed += o.passed;
        self.failed += o.failed;
    }
}

/// Reads cargo's `test result: ok. N passed; M failed; …` and node's TAP `# pass N` /
/// `# fail N` lines.
pub fn count_line(line: &str, counts: &mut Counts) {
    let line = line.trim();
    let number_before = |word: &str| {
        line.split([';', '.'])
            .find_map(|part| part.trim().strip_suffix(word)?.trim().parse::<u64>().ok())
    };
    if line.starts_with("test result:") {
        counts.passed += number_before("passed").unwrap_or(0);
        counts.failed += number_before("failed").unwrap_or(0);
    } else if let Some(summary) = pytest_summary(line) {
        // pytest: "===== 9 passed, 1 failed in 3.21s =====" (or without the rules, -q)
        let words: Vec<&str> = summary
            .split([' ', ','])
            .filter(|w| !w.is_empty())
            .collect();
        for pair in words.windows(2) {
            if let Ok(n) = pair[0].parse::<u64>() {
                match pair[1] {
                    "passed" => counts.passed += n,
                    "failed" => counts.failed += n,
                    _ => {}
                }
            }
        }
    } else if let Some(n) = line.strip_prefix("# pass ") {
        counts.passed += n.trim().parse::<u64>().unwrap_or(0);
    } else if let Some(n) = line.strip_prefix("# fail ") {
        counts.failed += n.trim().parse::<u64>().unwrap_or(0);
    }
}

fn pytest_summary(line: &str) -> Option<&str> {
    let t = line.trim_matches(|c| c == '=' || c == ' ');
    let starts_with_count = t.chars().next().is_some_and(|c| c.is_ascii_digit());
    (starts_with_count && (t.contains(" passed") || t.contains(" failed")) && t.contains(" in "))
        .then_some(t)
}

/// Runs with stdout echoed line by line and test summary lines counted.
pub fn run_counted(c: &mut Command) -> Result<Counts> {
    use std::io::{BufRead, BufReader};
    let what = describe(c);
    println!("$ {what}");
    let mut child = c
        .stdout(Stdio::piped())
        .spawn()
        .map_err(|e| format!("could not start `{what}`: {e}"))?;
    let mut counts = Counts::default();
    if let Some(out) = child.stdout.take() {
        for line in BufReader::new(out)
            .lines()
            .map_while(std::result::Result::ok)
        {
            println!("{line}");
            count_line(&line, &mut counts);
        }
    }
    let status = child.wait().map_err(|e| format!("`{what}`: {e}"))?;
    if status.success() {
        Ok(counts)
    } else {
        Err(format!("`{what}` failed ({status})"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cargo_and_tap_summaries_are_counted() {
        let mut c = Counts::default();
        for line in [
            "test result: ok. 12 passed; 0 failed; 3 ignored; 0 measured; 0 filtered out; finished in 0.00s",
            "test result: FAILED. 2 passed; 1 failed; 0 ignored; 0 measured; 0 filtered out",
            "# pass 3",
            "# fail 0",
            "# tests 3",
            "passed in 3s",
            "========== 9 passed, 2 failed, 1 skipped in 3.21s ==========",
            "4 passed, 1 error in 2.00s",
        ] {
            count_line(line, &mut c);
        }
        assert_eq!(
            c,
            Counts {
                passed: 30,
                failed: 3
            }
        );
    }
}
