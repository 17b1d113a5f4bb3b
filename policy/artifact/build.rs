//! Builds the policy guest for wasm32-unknown-unknown and wraps it into a
//! component: `$OUT_DIR/policy-template.wasm`, the `POLICY_TEMPLATE` bytes.
//!
//! * `STRADDLE_POLICY_GUEST_WASM=<core module>` skips the nested build and
//!   wraps that file instead (for environments without the wasm target).
//! * `STRADDLE_POLICY_GUEST_TARGET_DIR=<dir>` overrides where the nested build
//!   puts its files. The default is `<outer target dir>/guest`, shared by every
//!   outer profile (check, test, release), so the guest is built once.
//!
//! The nested cargo gets its own `--target-dir` (no lock shared with the outer
//! build), a scrubbed environment (no outer RUSTFLAGS, target, profile, or
//! clippy wrapper leaking in), `--locked`, and `--remap-path-prefix` flags so
//! the module bytes do not depend on where the workspace or cargo home live.

use std::env;
use std::ffi::OsString;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};

const GUEST_WASM_ENV: &str = "STRADDLE_POLICY_GUEST_WASM";
const GUEST_TARGET_DIR_ENV: &str = "STRADDLE_POLICY_GUEST_TARGET_DIR";
const GUEST_PACKAGE: &str = "straddle-policy-guest";
const GUEST_TARGET: &str = "wasm32-unknown-unknown";
/// wasm's fixed-width SIMD (wasmtime enables it by default): the JSON
/// reader finds the end of a string's plain run 16 bytes at a time.
/// `tests/tools/guest-profile.sh` builds the guest with the same flag.
const GUEST_TARGET_FEATURES: &str = "-Ctarget-feature=+simd128";
const GUEST_PROFILE: &str = "guest";

fn main() {
    if let Err(err) = run() {
        eprintln!("error: building the Straddle policy template failed: {err:#}");
        std::process::exit(1);
    }
}

fn run() -> Result<()> {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-env-changed={GUEST_WASM_ENV}");
    println!("cargo:rerun-if-env-changed={GUEST_TARGET_DIR_ENV}");

    let out_dir = PathBuf::from(env::var_os("OUT_DIR").context("OUT_DIR is not set")?);
    let manifest_dir =
        PathBuf::from(env::var_os("CARGO_MANIFEST_DIR").context("CARGO_MANIFEST_DIR is not set")?);
    let workspace = manifest_dir
        .join("../..")
        .canonicalize()
        .context("finding the workspace root")?;

    let core = match env::var_os(GUEST_WASM_ENV).filter(|p| !p.is_empty()) {
        Some(path) => {
            println!("cargo:rerun-if-changed={}", Path::new(&path).display());
            fs::read(&path).with_context(|| {
                format!("reading {GUEST_WASM_ENV}={}", Path::new(&path).display())
            })?
        }
        None => build_guest(&workspace, &out_dir)?,
    };

    check_no_imports(&core)?;
    let component = wit_component::ComponentEncoder::default()
        .module(&core)
        .context("reading the guest's component-type section")?
        .validate(true)
        .encode()
        .context("wrapping the guest into a component")?;

    write_if_changed(&out_dir.join("policy-guest-core.wasm"), &core)?;
    write_if_changed(&out_dir.join("policy-template.wasm"), &component)?;
    Ok(())
}

/// Runs the nested `cargo build` and returns the core module's bytes.
fn build_guest(workspace: &Path, out_dir: &Path) -> Result<Vec<u8>> {
    let target_dir = match env::var_os(GUEST_TARGET_DIR_ENV).filter(|p| !p.is_empty()) {
        Some(dir) => PathBuf::from(dir),
        None => shared_target_dir(out_dir).join("guest"),
    };
    let cargo_home = cargo_home();

    // Most specific prefix last: rustc applies the last matching remapping.
    let mut remaps: Vec<(PathBuf, &str)> = vec![(workspace.to_path_buf(), "/straddle")];
    if let Some(home) = &cargo_home {
        remaps.push((home.clone(), "/cargo"));
    }
    remaps.push((target_dir.clone(), "/target"));
    remaps.sort_by_key(|(path, _)| path.as_os_str().len());
    let rustflags: Vec<String> = remaps
        .iter()
        .filter_map(|(path, to)| {
            path.to_str()
                .map(|from| format!("--remap-path-prefix={from}={to}"))
        })
        .chain([GUEST_TARGET_FEATURES.to_string()])
        .collect();

    let cargo = env::var_os("CARGO").unwrap_or_else(|| OsString::from("cargo"));
    let mut cmd = Command::new(&cargo);
    cmd.current_dir(workspace)
        .arg("build")
        .arg("--manifest-path")
        .arg(workspace.join("Cargo.toml"))
        .args(["--package", GUEST_PACKAGE])
        .args(["--target", GUEST_TARGET])
        .args(["--profile", GUEST_PROFILE])
        .arg("--locked")
        .arg("--target-dir")
        .arg(&target_dir);
    scrub_env(&mut cmd);
    cmd.env("CARGO_ENCODED_RUSTFLAGS", rustflags.join("\x1f"));

    let output = cmd
        .output()
        .with_context(|| format!("running {}", Path::new(&cargo).display()))?;
    // Visible with `cargo build -vv`, and in the failure report below.
    eprint!("{}", String::from_utf8_lossy(&output.stderr));
    if !output.status.success() {
        bail!(
            "nested `cargo build -p {GUEST_PACKAGE} --target {GUEST_TARGET} --profile \
             {GUEST_PROFILE}` failed ({}); see its output above.\n\
             Is the target installed (`rustup target add {GUEST_TARGET}`)? To skip the \
             nested build, set {GUEST_WASM_ENV}=<path to a prebuilt core module>.",
            output.status
        );
    }

    let built = target_dir.join(GUEST_TARGET).join(GUEST_PROFILE);
    let wasm = built.join("straddle_policy_guest.wasm");
    let dep_info = built.join("straddle_policy_guest.d");
    emit_rerun_from_dep_info(&dep_info, workspace, &target_dir)?;
    for manifest in [
        "Cargo.toml",
        "Cargo.lock",
        "policy/guest/Cargo.toml",
        "policy/engine/Cargo.toml",
    ] {
        println!(
            "cargo:rerun-if-changed={}",
            workspace.join(manifest).display()
        );
    }
    fs::read(&wasm).with_context(|| format!("reading {}", wasm.display()))
}

/// `<target dir>/` of the outer build: the nearest ancestor of OUT_DIR with
/// cargo's `CACHEDIR.TAG`. Falls back to OUT_DIR (not shared, but works).
fn shared_target_dir(out_dir: &Path) -> PathBuf {
    out_dir
        .ancestors()
        .skip(1)
        .find(|dir| dir.join("CACHEDIR.TAG").is_file())
        .unwrap_or(out_dir)
        .to_path_buf()
}

fn cargo_home() -> Option<PathBuf> {
    if let Some(home) = env::var_os("CARGO_HOME").filter(|h| !h.is_empty()) {
        return Some(PathBuf::from(home));
    }
    env::var_os("HOME").map(|home| PathBuf::from(home).join(".cargo"))
}

/// Removes what the outer cargo (or the user's shell) set that would change
/// the nested build: flags, target, profile and target-dir overrides, and
/// wrappers such as clippy's (which would rebuild the guest on every switch
/// between `cargo clippy` and `cargo build`). Keeps the jobserver
/// (CARGO_MAKEFLAGS), cargo home, and network/registry settings.
fn scrub_env(cmd: &mut Command) {
    const KEEP: &[&str] = &["CARGO_HOME", "CARGO_MAKEFLAGS"];
    const KEEP_PREFIXES: &[&str] = &[
        "CARGO_NET_",
        "CARGO_HTTP_",
        "CARGO_REGISTRIES_",
        "CARGO_REGISTRY_",
        "CARGO_TERM_",
    ];
    const DROP: &[&str] = &[
        "RUSTFLAGS",
        "RUSTDOCFLAGS",
        "RUSTC_WORKSPACE_WRAPPER",
        "CLIPPY_ARGS",
        "CLIPPY_CONF_DIR",
        "OUT_DIR",
        "TARGET",
        "HOST",
        "NUM_JOBS",
        "OPT_LEVEL",
        "DEBUG",
        "PROFILE",
        "RUSTC_LINKER",
    ];
    for (key, _) in env::vars_os() {
        let Some(name) = key.to_str() else { continue };
        let cargo_var = name.starts_with("CARGO") || name.starts_with("__CARGO");
        let keep = KEEP.contains(&name) || KEEP_PREFIXES.iter().any(|p| name.starts_with(p));
        if DROP.contains(&name) || (cargo_var && !keep) {
            cmd.env_remove(&key);
        }
    }
}

/// Makes cargo rerun this script when a source file of the guest changes.
/// Only files inside the workspace are listed (registry sources don't change
/// under a fixed Cargo.lock), minus generated files in the nested target dir.
fn emit_rerun_from_dep_info(dep_info: &Path, workspace: &Path, target_dir: &Path) -> Result<()> {
    let text = fs::read_to_string(dep_info)
        .with_context(|| format!("reading dep-info {}", dep_info.display()))?;
    for line in text.lines() {
        // `<output>: <dep> <dep> ...`, with spaces in paths escaped as `\ `.
        let Some((_, deps)) = line.split_once(": ") else {
            continue;
        };
        for dep in split_escaped(deps) {
            let path = PathBuf::from(dep);
            if path.starts_with(workspace) && !path.starts_with(target_dir) {
                println!("cargo:rerun-if-changed={}", path.display());
            }
        }
    }
    Ok(())
}

fn split_escaped(deps: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut chars = deps.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => {
                if let Some(next) = chars.next() {
                    cur.push(next);
                }
            }
            ' ' | '\t' => {
                if !cur.is_empty() {
                    out.push(std::mem::take(&mut cur));
                }
            }
            _ => cur.push(c),
        }
    }
    if !cur.is_empty() {
        out.push(cur);
    }
    out
}

/// The policy module must stay pure: no WASI, no host functions.
fn check_no_imports(core: &[u8]) -> Result<()> {
    let mut imports = Vec::new();
    for payload in wasmparser::Parser::new(0).parse_all(core) {
        if let wasmparser::Payload::ImportSection(reader) = payload.context("parsing the guest")? {
            for import in reader.into_imports() {
                let import = import.context("parsing the guest's imports")?;
                imports.push(format!("{}::{}", import.module, import.name));
            }
        }
    }
    if !imports.is_empty() {
        bail!(
            "the policy guest must have no imports, but it imports {}",
            imports.join(", ")
        );
    }
    Ok(())
}

/// Leaves the file (and its mtime) alone when the bytes are the same, so
/// that crates embedding it are not rebuilt for nothing.
fn write_if_changed(path: &Path, bytes: &[u8]) -> Result<()> {
    if fs::read(path).is_ok_and(|old| old == bytes) {
        return Ok(());
    }
    fs::write(path, bytes).with_context(|| format!("writing {}", path.display()))
}
