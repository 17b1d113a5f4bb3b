//! The epoch ticker sleeps while no review runs, and a review that starts
//! then is still stopped at its deadline. Its own test binary: the one
//! runtime in the process, so its ticker thread is the only one.

use std::time::{Duration, Instant};

use straddle_policy_host::{HostError, Runtime, RuntimeConfig};
use straddle_test_support::host_plan::{self, CLUSTER, ZOOKEEPER, request};

/// Voluntary context switches of the ticker thread so far (its wake-ups).
fn ticker_wakeups() -> u64 {
    let tasks = std::fs::read_dir("/proc/self/task").unwrap();
    let ticker = tasks
        .map(|task| task.unwrap().path())
        .find(|task| {
            std::fs::read_to_string(task.join("comm")).is_ok_and(|c| c.trim() == "straddle-epoch")
        })
        .expect("the runtime's ticker thread");
    let status = std::fs::read_to_string(ticker.join("status")).unwrap();
    status
        .lines()
        .find_map(|line| line.strip_prefix("voluntary_ctxt_switches:"))
        .expect("a Linux task status")
        .trim()
        .parse()
        .unwrap()
}

#[test]
fn an_idle_ticker_sleeps_and_wakes_for_the_next_review() {
    let deadline = Duration::from_millis(20);
    let runtime = Runtime::new(RuntimeConfig {
        memory_limit_bytes: 256 << 20,
        deadline,
        epoch_tick: Duration::from_millis(1),
        ..RuntimeConfig::default()
    })
    .unwrap();
    let policy = runtime
        .load(&host_plan::module(&host_plan::plan()))
        .unwrap();

    // Past the linger time after the load's reviews, a 1 ms ticker would
    // wake up about 300 times in 300 ms.
    std::thread::sleep(Duration::from_millis(500));
    let before = ticker_wakeups();
    std::thread::sleep(Duration::from_millis(300));
    let idle = ticker_wakeups() - before;
    assert!(idle <= 3, "the idle ticker woke up {idle} times in 300 ms");

    // A review that runs too long is still stopped, and not before its
    // deadline.
    let slow = host_plan::slow_statefulset(4 << 20);
    let started = Instant::now();
    let err = policy
        .review(&request(CLUSTER, ZOOKEEPER, &slow))
        .unwrap_err();
    let took = started.elapsed();
    assert_eq!(err, HostError::Timeout { deadline });
    assert!(took >= deadline, "stopped after {took:?}");
    assert!(took < Duration::from_secs(2), "stopped only after {took:?}");

    // And the next one, right after, works.
    let object = host_plan::statefulset(3, "x");
    assert!(policy.review(&request(CLUSTER, ZOOKEEPER, &object)).is_ok());
}
