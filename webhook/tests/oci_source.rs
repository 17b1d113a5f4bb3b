//! `--policy oci://…` against a real registry (Debian's docker-registry on
//! loopback): a signed pinned bundle serves; a tag update is picked up by a
//! running webhook; unsigned, wrongly signed and corrupted bundles are
//! refused (at start, and while serving: the current policy keeps serving);
//! with the registry stopped, the webhook starts from its bundle cache.

mod common;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use common::*;
use straddle_oci::signature::SigningKey;
use straddle_oci::{BundleMeta, Connection, PolicyRef, Pushed, Registry, sha256_digest};
use straddle_test_support::registry::{self, Options, RegistryServer};
use straddle_webhook::Server;

const CLUSTER: &str = "cluster-1";

struct World {
    server: RegistryServer,
    key: SigningKey,
    dir: Scratch,
}

impl World {
    fn new(name: &str) -> Option<World> {
        if !registry::available() {
            return None;
        }
        // The webhook's refusals and swaps, in the test's output.
        let _ = tracing_subscriber::fmt()
            .with_max_level(tracing::Level::INFO)
            .with_test_writer()
            .try_init();
        let dir = Scratch::new(name).unwrap();
        let key = SigningKey::generate();
        std::fs::write(dir.join("straddle.pub"), key.verifying_key().to_pem()).unwrap();
        Some(World {
            server: RegistryServer::start(name, Options::default()),
            key,
            dir,
        })
    }

    fn reference(&self, rest: &str) -> PolicyRef {
        PolicyRef::parse(&format!("oci://{}/{rest}", self.server.host())).unwrap()
    }

    fn registry(&self) -> Registry {
        let connection = Connection {
            plain_http: true,
            ..Connection::default()
        };
        Registry::connect(&connection, &self.reference("straddle/policy:x")).unwrap()
    }

    /// Pushes `module` to `tag`, signed with `key` (or unsigned).
    async fn push(&self, tag: &str, module: &[u8], key: Option<&SigningKey>) -> Pushed {
        self.push_named(tag, module, "", key).await
    }

    /// The same with a stretch-name annotation: the same module under
    /// another manifest digest.
    async fn push_named(
        &self,
        tag: &str,
        module: &[u8],
        name: &str,
        key: Option<&SigningKey>,
    ) -> Pushed {
        let registry = self.registry();
        let reference = self.reference(&format!("straddle/policy:{tag}"));
        let meta = BundleMeta {
            name: name.to_owned(),
            ..BundleMeta::default()
        };
        let pushed = registry.push(&reference, module, &meta).await.unwrap();
        if let Some(key) = key {
            registry.sign(&pushed.pinned, key).await.unwrap();
        }
        pushed
    }

    /// A webhook configuration for `policy` (an oci:// reference) with
    /// --verify-key, --plain-http and a bundle cache of its own.
    fn setup(&self, name: &str, policy: &str) -> Setup {
        let mut setup = Setup::new(name, CLUSTER, b"unused");
        setup.config.policy = PathBuf::from(policy);
        setup.config.verify_key = Some(self.dir.join("straddle.pub"));
        setup.config.registry.plain_http = true;
        setup.config.cache_dir = Some(self.dir.join("cache"));
        setup.config.policy_poll_interval = Duration::from_millis(50);
        setup
    }
}

fn module_digest(module: &[u8]) -> String {
    sha256_digest(module)
}

async fn wait_until(what: &str, limit: Duration, mut done: impl FnMut() -> bool) {
    let started = Instant::now();
    while !done() {
        assert!(started.elapsed() < limit, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// A signed bundle pinned by digest starts and reviews like a file policy;
/// stopped and restarted with the registry down, it starts from the cache.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pinned_signed_bundle_then_cache_fallback() {
    let Some(mut world) = World::new("oci-pinned") else {
        return;
    };
    let module = compile(CP_TWO);
    let pushed = world.push("v1", &module, Some(&world.key)).await;
    let policy = format!("oci://{}", pushed.pinned);

    let started = Instant::now();
    let running = world.setup("oci-pinned-a", &policy).start().await;
    let cold = started.elapsed();
    assert_eq!(
        running.app.active.get().unwrap().digest(),
        module_digest(&module)
    );
    let mut client = running.client().await;
    let ready = client.request("GET", "/readyz", &[], "").await.unwrap();
    assert_eq!(ready.status, 200, "{}", ready.text());
    running.stop().await;

    world.server.stop();
    let started = Instant::now();
    let running = world.setup("oci-pinned-b", &policy).start().await;
    let warm = started.elapsed();
    assert_eq!(
        running.app.active.get().unwrap().digest(),
        module_digest(&module)
    );
    eprintln!(
        "start to ready: {cold:?} from the registry, {warm:?} from the cache (registry down)"
    );
    running.stop().await;

    // A tag, registry down: the digest the tag last resolved to, from the cache.
    world.server.restart();
    let tag_policy = format!("oci://{}", world.reference("straddle/policy:v1"));
    world
        .setup("oci-pinned-c", &tag_policy)
        .start()
        .await
        .stop()
        .await;
    world.server.stop();
    let running = world.setup("oci-pinned-d", &tag_policy).start().await;
    assert_eq!(
        running.app.active.get().unwrap().digest(),
        module_digest(&module)
    );
    running.stop().await;
}

/// Refused before it ever runs: unsigned, signed by another key, corrupted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_bundles_are_refused_at_start() {
    let Some(world) = World::new("oci-refused") else {
        return;
    };
    let module = compile(CP_TWO);

    let unsigned = world.push("unsigned", &module, None).await;
    let setup = world.setup("oci-refused-a", &format!("oci://{}", unsigned.pinned));
    let e = format!(
        "{:#}",
        Server::bind(setup.config).await.err().expect("refused")
    );
    assert!(e.contains("not signed"), "{e}");

    let other_key = SigningKey::generate();
    let stage = compile(CP_STAGE);
    let foreign = world.push("foreign", &stage, Some(&other_key)).await;
    let setup = world.setup("oci-refused-b", &format!("oci://{}", foreign.pinned));
    let e = format!(
        "{:#}",
        Server::bind(setup.config).await.err().expect("refused")
    );
    assert!(e.contains("does not match the key"), "{e}");

    let bitnami = compile(BITNAMI_THREE);
    let corrupt = world.push("corrupt", &bitnami, Some(&world.key)).await;
    world.server.corrupt_blob(&corrupt.layer_digest);
    let setup = world.setup("oci-refused-c", &format!("oci://{}", corrupt.pinned));
    let e = format!(
        "{:#}",
        Server::bind(setup.config).await.err().expect("refused")
    );
    assert!(e.contains("digest"), "{e}");
}

/// A running webhook on a tag: a new signed bundle takes over; an unsigned
/// one, one signed by another key and one with a corrupted layer are refused
/// while the current policy keeps serving.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tag_updates_are_picked_up_and_bad_ones_refused() {
    let Some(world) = World::new("oci-tag") else {
        return;
    };
    let (a, b) = (compile(CP_TWO), compile(CP_STAGE));
    world.push("stable", &a, Some(&world.key)).await;
    let policy = format!("oci://{}", world.reference("straddle/policy:stable"));
    let running = world.setup("oci-tag", &policy).start().await;
    let app = running.app.clone();
    assert_eq!(app.active.get().unwrap().digest(), module_digest(&a));

    let serving = |m: &[u8]| {
        let want = module_digest(m);
        let app = app.clone();
        move || app.active.get().unwrap().digest() == want
    };
    let cache = straddle_oci::Cache::new(&world.dir.join("cache"));
    let poll_a_few_times = || tokio::time::sleep(Duration::from_millis(500));

    // A new signed bundle: picked up.
    world.push("stable", &b, Some(&world.key)).await;
    wait_until("the new bundle", Duration::from_secs(20), serving(&b)).await;
    let mut client = running.client().await;

    // A third valid module for cluster-1, pushed under distinct manifest
    // digests (annotations differ) so that each refusal is its own.
    let c = compile("tests/specs/cp-three-clusters-mcs.yaml");

    // Unsigned: refused before it is cached or loaded; b keeps serving.
    let unsigned = world.push_named("stable", &c, "unsigned", None).await;
    poll_a_few_times().await;
    assert!(serving(&b)());
    assert!(cache.load(&unsigned.manifest_digest).unwrap().is_none());
    assert_eq!(
        client
            .request("GET", "/readyz", &[], "")
            .await
            .unwrap()
            .status,
        200
    );

    // Signed by another key: refused.
    let foreign = world
        .push_named("stable", &c, "foreign", Some(&SigningKey::generate()))
        .await;
    poll_a_few_times().await;
    assert!(serving(&b)());
    assert!(cache.load(&foreign.manifest_digest).unwrap().is_none());

    // Corrupted layer: a signed bundle pushed under another tag, its layer
    // damaged in the registry's storage, then the tag moved to it.
    let candidate = world
        .push_named("candidate", &c, "corrupt", Some(&world.key))
        .await;
    let blob = world.server.blob_file(&candidate.layer_digest);
    let intact = std::fs::read(&blob).unwrap();
    world.server.corrupt_blob(&candidate.layer_digest);
    world.push_named("stable", &c, "corrupt", None).await;
    poll_a_few_times().await;
    assert!(serving(&b)());
    assert!(cache.load(&candidate.manifest_digest).unwrap().is_none());
    assert_eq!(
        client
            .request("GET", "/readyz", &[], "")
            .await
            .unwrap()
            .status,
        200
    );

    // The same module, intact and signed: it was only ever the bundle.
    std::fs::write(&blob, intact).unwrap();
    world
        .push_named("stable", &c, "good", Some(&world.key))
        .await;
    wait_until("the good bundle", Duration::from_secs(20), serving(&c)).await;
    running.stop().await;
}
