//! Compiling a module leaves no threads behind: wasmtime compiles on a
//! rayon pool, and rayon's global pool would keep its threads (with the
//! stacks Cranelift grew on them) for the life of the process. Its own test
//! binary, so no other test starts or ends threads meanwhile.

use straddle_policy_host::{Runtime, RuntimeConfig};
use straddle_test_support::host_plan;
use straddle_test_support::scratch::Scratch;

fn threads() -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir("/proc/self/task")
        .unwrap()
        .filter_map(|task| std::fs::read_to_string(task.unwrap().path().join("comm")).ok())
        .map(|name| name.trim().to_owned())
        .collect();
    names.sort();
    names
}

/// The threads, once they are `want` or after 5 s. A compile's pool ends
/// its threads before `load` returns, but an ended thread can still be in
/// `/proc` for a moment while it exits (rayon's scoped pool waits for its
/// threads' work, not for the kernel to remove them).
fn threads_settled(want: &[String]) -> Vec<String> {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    loop {
        let now = threads();
        if now == want || std::time::Instant::now() > deadline {
            return now;
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
}

#[test]
fn compiling_a_module_leaves_no_threads_behind() {
    let runtime = Runtime::new(RuntimeConfig::default()).unwrap();
    let module = host_plan::module(&host_plan::plan());
    let before = threads();
    let policy = runtime.load(&module).unwrap();
    assert_eq!(threads_settled(&before), before);

    let cache = Scratch::new("compile-threads").unwrap();
    runtime.load_cached(&module, cache.path()).unwrap();
    assert_eq!(threads_settled(&before), before, "a compile for the cache");
    drop(policy);
}
