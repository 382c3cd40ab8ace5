//! The playground's wasm keeps its relocations (`--emit-relocs`): `cargo xtask build`
//! splits it at the `#[wasm_split]` points with `wasm_split_cli_support`, which reads them to
//! move code into the lazily loaded chunks (what `cargo leptos --split` does).

fn main() {
    println!("cargo::rerun-if-changed=build.rs");
    if std::env::var("TARGET").is_ok_and(|t| t.starts_with("wasm32")) {
        println!("cargo::rustc-link-arg-bins=--emit-relocs");
    }
}
