//! Builds the SPA into `dist/` and the Worker into `edge/build/`, with the local
//! wasm-bindgen, wasm-opt and esbuild (nothing is downloaded).
//!
//! The SPA is built here rather than by trunk because its wasm is split: the History
//! and share pages, the job cards and the other parts a first visit to `/` does not
//! show are `#[wasm_split]` functions, and `wasm_split_cli_support` (the splitter
//! `cargo leptos --split` runs) moves each into a chunk fetched on first use. Trunk has
//! no step for that. The steps are cargo-leptos's: cargo build (with `--emit-relocs`,
//! `app/build.rs`), split, `wasm-bindgen --target web --keep-lld-exports` on the main
//! module, `wasm-opt -Oz` on every module, esbuild `--minify` on the JS; then the
//! files are hashed into `dist/`.

use std::fs;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use crate::cmd::{Result, cargo_bin, command, exec, node_bin, root};
use crate::tools::WASM32;

pub fn all() -> Result {
    spa()?;
    worker()
}

/// The JS module wasm-bindgen writes, and the wasm beside it.
const APP: &str = "parallax-app";
/// Where `app/index.html` takes the stylesheet, the preloads and the bootstrap script.
const ASSETS_MARK: &str = "<!-- parallax:assets -->";

pub fn spa() -> Result {
    let root = root();
    exec(command("cargo").args(["build", "--release", "--target", WASM32, "-p", APP]))?;
    let wasm = root.join(format!("target/{WASM32}/release/{APP}.wasm"));
    let work = root.join("target/spa");
    let pkg = work.join("pkg");
    fresh_dir(&work)?;
    fs::create_dir_all(&pkg).map_err(|e| format!("creating {}: {e}", pkg.display()))?;

    // Split: the main module (for wasm-bindgen) and the chunks, plus `__wasm_split.js`,
    // which loads a chunk on first call and gets the main module's exports from
    // wasm-bindgen's `initSync` (a no-op once the app has started).
    let input = fs::read(&wasm).map_err(|e| format!("reading {}: {e}", wasm.display()))?;
    let main = work.join("main.wasm");
    let mut options = wasm_split_cli_support::Options::new(&input);
    options.output_dir = &pkg;
    options.main_out_path = &main;
    options.main_module = "./parallax-app.js";
    options.link_name = "./__wasm_split.js";
    let split = wasm_split_cli_support::transform(options)
        .map_err(|e| format!("splitting {}: {e:?}", wasm.display()))?;

    exec(
        command("wasm-bindgen")
            .args(["--target", "web", "--keep-lld-exports", "--no-typescript"])
            .args(["--out-name", APP, "--out-dir"])
            .arg(&pkg)
            .arg(&main),
    )?;
    let loader = pkg.join("__wasm_split.js");
    let js =
        fs::read_to_string(&loader).map_err(|e| format!("reading {}: {e}", loader.display()))?;
    fs::write(&loader, patient_loader(&js)?)
        .map_err(|e| format!("writing {}: {e}", loader.display()))?;

    // wasm-bindgen's glue and the chunk loader, minified (esbuild, from npm).
    for js in [format!("{APP}.js"), "__wasm_split.js".to_owned()] {
        let path = pkg.join(js);
        exec(
            command("esbuild")
                .arg(&path)
                .args([
                    "--minify",
                    "--format=esm",
                    "--log-level=error",
                    "--allow-overwrite",
                ])
                .arg(format!("--outfile={}", path.display())),
        )?;
    }
    let mut modules = vec![pkg.join(format!("{APP}_bg.wasm"))];
    modules.extend(split.split_modules);
    for module in &modules {
        // The chunks carry no `target_features` section for wasm-opt to read, so the
        // features rustc's wasm32 target uses are named (as cargo-leptos does).
        exec(
            command("wasm-opt")
                .args([
                    "-Oz",
                    "--enable-bulk-memory",
                    "--enable-nontrapping-float-to-int",
                    "--enable-sign-ext",
                    "--enable-mutable-globals",
                    "--enable-reference-types",
                    "--enable-multivalue",
                ])
                .arg(module)
                .arg("-o")
                .arg(module),
        )?;
    }

    // `dist/`: the modules in a directory named by their hash (they refer to each
    // other by relative path), the stylesheet by its hash, `public/` as is.
    let dist = root.join("dist");
    fresh_dir(&dist)?;
    copy_tree(&root.join("public"), &dist)?;
    let pkg_name = format!("app-{}", tree_hash(&pkg)?);
    copy_tree(&pkg, &dist.join(&pkg_name))?;
    let css =
        fs::read(root.join("app/style.css")).map_err(|e| format!("reading style.css: {e}"))?;
    let css_name = format!("style-{}.css", short_hash(&css));
    fs::write(dist.join(&css_name), &css).map_err(|e| format!("writing {css_name}: {e}"))?;

    let template = fs::read_to_string(root.join("app/index.html"))
        .map_err(|e| format!("reading app/index.html: {e}"))?;
    // The share page's chunks, for the Worker to preload on `/r/{id}` (a stranger's
    // first visit: `edge/src/handlers/share.rs`).
    let share: Vec<String> = split
        .prefetch_map
        .get("share")
        .map(|stems| {
            stems
                .iter()
                .map(|s| format!("/{pkg_name}/{s}.wasm"))
                .collect()
        })
        .unwrap_or_default();
    let html = index_html(&template, &css_name, &pkg_name, &share.join(" "))?;
    fs::write(dist.join("index.html"), html).map_err(|e| format!("writing index.html: {e}"))
}

/// A fetch whose answer has not started after 7 s is abandoned and made again, twice;
/// the third try waits as long as the browser does (a slow but working link still
/// loads). A stalled request (in development `wrangler dev` now and then holds one
/// static file for 30 s; a stuck connection) would otherwise hold the app, or a
/// chunk, for as long as the browser waits. 7 s, so both retries start before the
/// app's notice for a stalled chunk (`components::deferred::STALLED_MS`, 15 s). A
/// failure is passed on at once (the app shows it and retries). Used for the main
/// wasm (the bootstrap script) and for every chunk (the loader, [`patient_loader`]);
/// only the wait for the answer's start is timed, never the body's download. Over
/// HTTP/2 a retry may share the stuck connection: it helps with a stalled request,
/// not with a dead link.
const PATIENT_FETCH: &str = "const __parallaxPatientFetch = async (url) => { \
    for (let attempt = 1; ; attempt++) { \
    const abort = new AbortController(); \
    const timer = attempt < 3 ? setTimeout(() => abort.abort(), 7000) : undefined; \
    try { return await fetch(url, { signal: abort.signal }); } \
    catch (e) { if (attempt >= 3 || !abort.signal.aborted) throw e; } \
    finally { clearTimeout(timer); } } };";

/// The chunk loader `wasm_split_cli_support` writes, with each chunk's `fetch` made
/// patient ([`PATIENT_FETCH`]). Its loader keeps a load in flight as the only one
/// (a retry from the app gets the same promise), so a stalled fetch could only be
/// ended by a reload. Patching the generated text is the one way in (the library
/// has no option for it); a loader whose text changed is an error here, not a
/// silently unpatched build.
fn patient_loader(js: &str) -> Result<String> {
    const FETCH: &str = "fetch(new URL(";
    if !js.contains(FETCH) {
        return Err(format!(
            "__wasm_split.js has no `{FETCH}`: the chunk loader changed, see xtask/src/build.rs"
        ));
    }
    Ok(format!(
        "{PATIENT_FETCH}\n{}",
        js.replace(FETCH, "__parallaxPatientFetch(new URL(")
    ))
}

/// `app/index.html` with its assets: the stylesheet, the main module and its wasm
/// preloaded, and the one inline script that starts the app (the Worker's CSP allows
/// exactly that script by its hash, `edge/src/security.rs`).
fn index_html(template: &str, css: &str, pkg: &str, share_chunks: &str) -> Result<String> {
    if !template.contains(ASSETS_MARK) {
        return Err(format!("app/index.html has no `{ASSETS_MARK}`"));
    }
    let js = format!("/{pkg}/{APP}.js");
    let wasm = format!("/{pkg}/{APP}_bg.wasm");
    let assets = format!(
        "<link rel=\"stylesheet\" href=\"/{css}\" />\n    \
         <link rel=\"modulepreload\" href=\"{js}\" />\n    \
         <link rel=\"modulepreload\" href=\"/{pkg}/__wasm_split.js\" />\n    \
         <link rel=\"preload\" href=\"{wasm}\" as=\"fetch\" type=\"application/wasm\" crossorigin />\n    \
         <meta name=\"parallax-share-chunks\" content=\"{share_chunks}\" />\n    \
         <script type=\"module\">import init from \"{js}\"; {PATIENT_FETCH} \
         await init({{ module_or_path: __parallaxPatientFetch(\"{wasm}\") }});</script>"
    );
    Ok(template.replace(ASSETS_MARK, &assets))
}

fn fresh_dir(dir: &Path) -> Result {
    if dir.exists() {
        fs::remove_dir_all(dir).map_err(|e| format!("removing {}: {e}", dir.display()))?;
    }
    fs::create_dir_all(dir).map_err(|e| format!("creating {}: {e}", dir.display()))
}

/// The files under `dir`, sorted, as paths relative to it.
fn files(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    let mut stack = vec![PathBuf::new()];
    while let Some(rel) = stack.pop() {
        let here = dir.join(&rel);
        let entries =
            fs::read_dir(&here).map_err(|e| format!("reading {}: {e}", here.display()))?;
        for entry in entries {
            let entry = entry.map_err(|e| format!("reading {}: {e}", here.display()))?;
            let path = rel.join(entry.file_name());
            if entry.path().is_dir() {
                stack.push(path);
            } else {
                out.push(path);
            }
        }
    }
    out.sort();
    Ok(out)
}

fn copy_tree(from: &Path, to: &Path) -> Result {
    for rel in files(from)? {
        let target = to.join(&rel);
        if let Some(parent) = target.parent() {
            fs::create_dir_all(parent)
                .map_err(|e| format!("creating {}: {e}", parent.display()))?;
        }
        fs::copy(from.join(&rel), &target)
            .map_err(|e| format!("copying {} to {}: {e}", rel.display(), target.display()))?;
    }
    Ok(())
}

fn short_hash(bytes: &[u8]) -> String {
    let digest = Sha256::digest(bytes);
    digest[..8].iter().map(|b| format!("{b:02x}")).collect()
}

/// One hash over every file's name and bytes under `dir`.
fn tree_hash(dir: &Path) -> Result<String> {
    let mut all = Vec::new();
    for rel in files(dir)? {
        all.extend_from_slice(rel.to_string_lossy().as_bytes());
        all.push(0);
        all.extend(
            fs::read(dir.join(&rel)).map_err(|e| format!("reading {}: {e}", rel.display()))?,
        );
    }
    Ok(short_hash(&all))
}

pub fn worker() -> Result {
    exec(
        command("worker-build")
            .arg("--release")
            .current_dir(root().join("edge"))
            .env("WASM_BINDGEN_BIN", cargo_bin().join("wasm-bindgen"))
            .env("ESBUILD_BIN", node_bin().join("esbuild"))
            .env("WASM_OPT_BIN", node_bin().join("wasm-opt")),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn index_html_gets_its_assets_where_marked() {
        let html = index_html(
            "<head>\n    <!-- parallax:assets -->\n  </head>",
            "style-ab.css",
            "app-cd",
            "/app-cd/split_share.wasm",
        )
        .unwrap();
        assert!(html.contains("href=\"/style-ab.css\""), "{html}");
        assert!(
            html.contains("rel=\"modulepreload\" href=\"/app-cd/parallax-app.js\""),
            "{html}"
        );
        assert!(
            html.contains(
                "init({ module_or_path: __parallaxPatientFetch(\"/app-cd/parallax-app_bg.wasm\") })"
            ),
            "{html}"
        );
        assert!(html.contains("const __parallaxPatientFetch"), "{html}");
        assert!(!html.contains(ASSETS_MARK));
        assert!(
            html.contains("content=\"/app-cd/split_share.wasm\""),
            "{html}"
        );
        assert!(index_html("<head></head>", "s", "p", "").is_err());
    }

    #[test]
    fn every_chunk_fetch_of_the_loader_is_patient() {
        let generated = "const a = () => {\n    const src = fetch(new URL(\"./split_a.wasm\", import.meta.url));\n};\n\
                         const b = () => {\n    const src = fetch(new URL(\"./chunk_1.wasm\", import.meta.url));\n};";
        let js = patient_loader(generated).unwrap();
        assert!(js.starts_with(PATIENT_FETCH), "{js}");
        assert_eq!(
            js.matches("__parallaxPatientFetch(new URL(").count(),
            2,
            "{js}"
        );
        assert!(!js.contains(" fetch(new URL("), "{js}");
        assert!(patient_loader("const src = import.source(\"./a.wasm\");").is_err());
    }
}
