//! Runs the policy module's `review-admission` N times in one warm instance,
//! as the webhook does, for `tests/tools/guest-profile.sh`: with `PERFMAP=1`
//! wasmtime writes `/tmp/perf-<pid>.map`, which names the JIT code's
//! addresses in callgrind's counts.
//!
//!   straddle-guest-profile N
//!
//! Environment: `MODULE` (a compiled policy: its plan is read from it and
//! embedded in the template this tool was built with, the guest with its
//! function names), `FIXTURE` (a file under `tests/fixtures/charts`),
//! `CLUSTER`, `NAMESPACE` (the object's; default `confluent`, the cp
//! example's), `PERFMAP`, and `DUMP=<file>` to write the compiled code
//! (`Engine::precompile_component`, an ELF file `llvm-objdump -d` reads).

use anyhow::{Context, Result, bail};
use straddle_policy_artifact::{POLICY_TEMPLATE, embed};
use straddle_test_support::review::{KeyOrder, review_text};
use wasmtime::component::{Component, Linker, Val};
use wasmtime::{Config, Engine, ProfilingStrategy, Store};

fn env(name: &str, default: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| default.to_owned())
}

fn main() -> Result<()> {
    let reviews: usize = std::env::args().nth(1).map_or(Ok(1), |n| n.parse())?;
    let compiled = std::env::var("MODULE").context("MODULE: a compiled policy module")?;
    let compiled = std::fs::read(&compiled).with_context(|| format!("reading {compiled}"))?;
    let module = embed::embed_plan(POLICY_TEMPLATE, &embed::read_plan(&compiled)?)?;

    // EPOCH=0: without the interruption checks, to see what they cost.
    let epoch = std::env::var("EPOCH").map_or(true, |v| v != "0");
    let mut config = Config::new();
    config.epoch_interruption(epoch);
    if std::env::var_os("PERFMAP").is_some() {
        config.profiler(ProfilingStrategy::PerfMap);
    }
    let engine = Engine::new(&config)?;
    if let Some(path) = std::env::var_os("DUMP") {
        std::fs::write(path, engine.precompile_component(&module)?)?;
    }
    let component = Component::new(&engine, &module)?;

    let fixture = env(
        "FIXTURE",
        "cp-zk-kafka-only/statefulset-confluent-cp-zookeeper.json",
    );
    let (variant, file) = fixture
        .split_once('/')
        .context("FIXTURE: <variant>/<file> under tests/fixtures/charts")?;
    let object = straddle_test_support::fixture_json(variant, file);
    let body = review_text(
        &object,
        &env("NAMESPACE", "confluent"),
        "CREATE",
        "profile-0",
        KeyOrder::ApiServer,
    );
    let cluster = env("CLUSTER", "cluster-1");

    let mut store = Store::new(&engine, ());
    if epoch {
        store.set_epoch_deadline(u64::MAX / 2);
    }
    let instance = Linker::new(&engine).instantiate(&mut store, &component)?;
    let admission = instance
        .get_export_index(&mut store, None, "straddle:policy/admission@0.1.0")
        .context("the module has no admission interface")?;
    let index = instance
        .get_export_index(&mut store, Some(&admission), "review-admission")
        .context("the module has no review-admission")?;
    let review = instance
        .get_func(&mut store, index)
        .context("review-admission")?;
    let mut verdict = [Val::Bool(false)];
    for _ in 0..reviews {
        review.call(
            &mut store,
            &[Val::String(cluster.clone()), Val::String(body.clone())],
            &mut verdict,
        )?;
        if !matches!(&verdict[0], Val::Option(Some(_))) {
            bail!("the module left the review to the host ({fixture} in {cluster})");
        }
    }
    eprintln!(
        "{reviews} reviews of {fixture} in {cluster}: body {} bytes, module {} bytes",
        body.len(),
        module.len()
    );
    Ok(())
}
