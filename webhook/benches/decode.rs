//! Reading one `POST /mutate` body (`admission::decode`), the work done on
//! every request before the policy runs, on the fixture StatefulSets.
//!
//! `cargo bench -p straddle-webhook --bench decode`

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use straddle_test_support::review::review_for;
use straddle_webhook::admission::{self, Decoded};

fn bench(c: &mut Criterion) {
    for (label, variant, file) in [
        (
            "cp-zookeeper",
            "cp-zk-kafka-only",
            "statefulset-confluent-cp-zookeeper.json",
        ),
        (
            "cp-kafka",
            "cp-zk-kafka-only",
            "statefulset-confluent-cp-kafka.json",
        ),
    ] {
        let object = straddle_test_support::fixture_json(variant, file);
        let body =
            serde_json::to_vec(&review_for(&object, "confluent", "UPDATE", "bench")).unwrap();
        // An UPDATE carries the object twice (object and oldObject).
        assert!(matches!(admission::decode(&body), Decoded::Review(_)));
        c.bench_function(&format!("decode/{label} ({} bytes)", body.len()), |b| {
            b.iter(|| admission::decode(black_box(&body)))
        });
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
