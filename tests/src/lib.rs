//! Test support shared by the end-to-end tests (`tests/tests/`): from a
//! stretch spec and real chart output to what every pod of every simulated
//! cluster runs with, and what every cluster's DNS answers.
//!
//! - [`kube`]: what Kubernetes does before a container starts (pod names,
//!   env resolution);
//! - [`effective`]: what the chart commands and images do with that (the
//!   effective ZooKeeper and Kafka configuration of a pod);
//! - [`stretch`]: a spec compiled, its policy run over a fixture in every
//!   cluster, every pod enumerated from the mutated StatefulSets;
//! - [`dns`]: each cluster's DNS view for the networking mode;
//! - [`controlplane`]: real Kubernetes control planes (etcd, kube-apiserver,
//!   kube-controller-manager) per member cluster, on loopback;
//! - [`netns`]: the network-namespace lab the real ZooKeeper and Kafka
//!   proofs run in (a namespace per pod, a DNS view per cluster, cuts);
//! - [`realkafka`]: real Kafka in that lab (jars, configuration, tools);
//! - [`process`], [`scratch`]: child processes and directories that never
//!   outlive the test (`straddle-test-support`, re-exported: the support
//!   every crate's tests share);
//! - [`golden`]: golden files (`STRADDLE_BLESS=1` writes them);
//! - [`waiting`]: the reasons a lab's wait saw, for its failure message;
//! - [`fuzzing`]: the invariants the fuzz targets in `fuzz/` check, shared
//!   with `tests/fuzz_corpus.rs`.

pub mod controlplane;
pub mod dns;
pub mod effective;
pub mod fuzzing;
pub mod golden;
pub mod kube;
pub mod netns;
pub mod object_views;
pub mod realkafka;
pub mod stretch;
pub mod waiting;

pub use straddle_test_support::{process, root, scratch};
