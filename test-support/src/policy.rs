//! Policy modules compiled from specs by the workspace's `straddle` binary,
//! exactly as `straddle compile` writes them (built on demand by
//! [`workspace_binary`]; each spec once per test process).

use std::process::Command;
use std::sync::{Mutex, OnceLock};

use crate::process::workspace_binary;
use crate::scratch::Scratch;

pub const CP_TWO: &str = "examples/cp-two-clusters.yaml";
pub const CP_STAGE: &str = "tests/specs/cp-first-cluster-stage.yaml";
pub const BITNAMI_THREE: &str = "examples/bitnami-kraft-three-clusters.yaml";

/// The policy module compiled from `spec` (a path relative to the
/// repository root). Panics with the compiler's message if it refuses.
pub fn compile(spec: &str) -> Vec<u8> {
    type Compiled = Vec<(String, Vec<u8>)>;
    static MODULES: OnceLock<Mutex<Compiled>> = OnceLock::new();
    let modules = MODULES.get_or_init(Default::default);
    let mut modules = modules.lock().unwrap();
    if let Some((_, m)) = modules.iter().find(|(s, _)| s == spec) {
        return m.clone();
    }
    let straddle = workspace_binary("straddle-compiler", "straddle").expect("the straddle binary");
    let scratch = Scratch::new("compile").expect("a scratch directory");
    let out = scratch.join("policy.wasm");
    let run = Command::new(straddle)
        .arg("compile")
        .arg(crate::path(spec))
        .arg("-o")
        .arg(&out)
        .output()
        .expect("running straddle compile");
    assert!(
        run.status.success(),
        "straddle compile {spec}: {}\n{}",
        run.status,
        String::from_utf8_lossy(&run.stderr)
    );
    let module = std::fs::read(&out).unwrap();
    modules.push((spec.to_owned(), module.clone()));
    module
}
