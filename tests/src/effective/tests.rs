//! The image rules of `shared/research/domain-stretch.md`, checked on the
//! real chart output (`tests/fixtures/charts`, before any mutation).

use std::collections::BTreeMap;

use serde_json::Value;

use super::*;

fn fixture(path: &str) -> Value {
    let p = crate::root().join("tests/fixtures/charts").join(path);
    serde_json::from_str(&fs::read_to_string(&p).unwrap()).unwrap()
}

fn configmap(variant: &str, name: &str) -> Value {
    let text = fs::read_to_string(
        crate::root()
            .join("tests/fixtures/charts")
            .join(variant)
            .join("rendered.yaml"),
    )
    .unwrap();
    straddle_compiler::manifest::parse(&text)
        .unwrap()
        .into_iter()
        .find(|d| d["kind"] == "ConfigMap" && d["metadata"]["name"] == name)
        .unwrap()
}

fn set_env(sts: &mut Value, container: &str, name: &str, value: &str) {
    let c = sts["spec"]["template"]["spec"]["containers"]
        .as_array_mut()
        .unwrap()
        .iter_mut()
        .find(|c| c["name"] == container)
        .unwrap();
    let env = c["env"].as_array_mut().unwrap();
    env.retain(|e| e["name"] != name);
    env.push(serde_json::json!({"name": name, "value": value}));
}

const ZK: &str = "cp-zk-kafka-only/statefulset-confluent-cp-zookeeper.json";
const CP_KAFKA: &str = "cp-zk-kafka-only/statefulset-confluent-cp-kafka.json";

/// §1.2: `myid` = ordinal + 1 (the command's `$((${HOSTNAME##*-}+1))`);
/// `ZOOKEEPER_SERVERS` split on `;` into `server.<1-based position>`; the
/// pod's own entry, and only it, rewritten to `0.0.0.0`; env mapped through
/// the template's table; `initLimit`/`syncLimit` from env.
#[test]
fn cp_zookeeper_numbers_servers_by_position_and_rewrites_its_own_entry() {
    let sts = fixture(ZK);
    let c = cp_zookeeper::effective_config(&sts, "confluent", 1).unwrap();
    assert_eq!(c.myid, 2);
    let servers = c.properties.indexed("server");
    let host = |i: u32| {
        format!("confluent-cp-zookeeper-{i}.confluent-cp-zookeeper-headless.confluent:2888:3888")
    };
    assert_eq!(
        servers,
        BTreeMap::from([
            (1, host(0)),
            (2, "0.0.0.0:2888:3888".to_string()),
            (3, host(2)),
        ])
    );
    let p = &c.properties;
    assert_eq!(p.get("clientPort"), Some("2181"));
    assert_eq!(p.get("tickTime"), Some("2000"));
    assert_eq!(p.get("initLimit"), Some("10"));
    assert_eq!(p.get("syncLimit"), Some("5"));
    assert_eq!(p.get("dataDir"), Some("/var/lib/zookeeper/data"));
    assert!(p.indexed("group").is_empty() && p.indexed("weight").is_empty());
}

/// §1.2: `ZOOKEEPER_GROUPS`/`ZOOKEEPER_WEIGHTS` split on `;` into
/// `group.<position>`/`weight.<position>`; the `ZOOKEEPER_SERVER_ID` env value
/// is overwritten by the command (setting it does nothing).
#[test]
fn cp_zookeeper_groups_and_weights_are_positional_and_the_id_env_is_ignored() {
    let mut sts = fixture(ZK);
    set_env(
        &mut sts,
        cp_zookeeper::CONTAINER,
        "ZOOKEEPER_GROUPS",
        "1:2;3",
    );
    set_env(
        &mut sts,
        cp_zookeeper::CONTAINER,
        "ZOOKEEPER_WEIGHTS",
        "1;1;0",
    );
    set_env(
        &mut sts,
        cp_zookeeper::CONTAINER,
        "ZOOKEEPER_SERVER_ID",
        "77",
    );
    let c = cp_zookeeper::effective_config(&sts, "confluent", 0).unwrap();
    assert_eq!(c.myid, 1);
    assert_eq!(
        c.properties.indexed("group"),
        BTreeMap::from([(1, "1:2".to_string()), (2, "3".to_string())])
    );
    assert_eq!(c.properties.indexed("weight")[&3], "0");
}

/// §1.2 inference: the self-replacement is keyed on the bare pod name, so two
/// clusters with the same pod names would both be rewritten to `0.0.0.0`
/// (why Straddle moves ordinals).
#[test]
fn cp_zookeeper_rewrites_every_entry_of_its_pod_name() {
    let mut sts = fixture(ZK);
    set_env(
        &mut sts,
        cp_zookeeper::CONTAINER,
        "ZOOKEEPER_SERVERS",
        "confluent-cp-zookeeper-0.a:2888:3888;confluent-cp-zookeeper-0.b:2888:3888;confluent-cp-zookeeper-01.a:2888:3888",
    );
    let c = cp_zookeeper::effective_config(&sts, "confluent", 0).unwrap();
    let s = c.properties.indexed("server");
    assert_eq!(s[&1], "0.0.0.0:2888:3888");
    assert_eq!(s[&2], "0.0.0.0:2888:3888");
    assert_eq!(s[&3], "confluent-cp-zookeeper-01.a:2888:3888");
}

#[test]
fn cp_zookeeper_refuses_variables_the_image_model_does_not_know() {
    let mut sts = fixture(ZK);
    set_env(
        &mut sts,
        cp_zookeeper::CONTAINER,
        "ZOOKEEPER_SSL_QUORUM",
        "true",
    );
    let err = cp_zookeeper::effective_config(&sts, "confluent", 0).unwrap_err();
    assert!(err.to_string().contains("ZOOKEEPER_SSL_QUORUM"), "{err}");
}

/// §1.3: `broker.id` = ordinal (0-based); the advertised PLAINTEXT host is
/// `${POD_NAME}.<fullname>-headless.${POD_NAMESPACE}`, EXTERNAL is
/// `${HOST_IP}:31090+id`; listeners derived with `0.0.0.0`; `KAFKA_*` env
/// becomes properties (`env_to_props`).
#[test]
fn cp_kafka_builds_the_broker_id_and_advertised_listener_in_the_command() {
    let sts = fixture(CP_KAFKA);
    let c = cp_kafka::effective_config(&sts, "confluent", 2).unwrap();
    let p = &c.properties;
    assert_eq!(c.id(), Some(2));
    assert_eq!(
        p.get("advertised.listeners"),
        Some(
            "PLAINTEXT://confluent-cp-kafka-2.confluent-cp-kafka-headless.confluent:9092,EXTERNAL://192.0.2.20:31092"
        )
    );
    assert_eq!(
        p.get("listeners"),
        Some("PLAINTEXT://0.0.0.0:9092,EXTERNAL://0.0.0.0:31092")
    );
    assert_eq!(
        p.get("zookeeper.connect"),
        Some("confluent-cp-zookeeper-headless:2181")
    );
    assert_eq!(p.get("offsets.topic.replication.factor"), Some("3"));
    assert_eq!(
        p.get("listener.security.protocol.map"),
        Some("PLAINTEXT:PLAINTEXT,EXTERNAL:PLAINTEXT")
    );
    assert_eq!(p.get("broker.rack"), None);
}

/// §1.3: env set on the container that the command re-exports does nothing;
/// `KAFKA_BROKER_RACK` -> `broker.rack`; `__` -> `_`, `___` -> `-`.
#[test]
fn cp_kafka_env_to_props_and_re_exported_variables() {
    let mut sts = fixture(CP_KAFKA);
    set_env(&mut sts, cp_kafka::CONTAINER, "KAFKA_BROKER_ID", "42");
    set_env(
        &mut sts,
        cp_kafka::CONTAINER,
        "KAFKA_BROKER_RACK",
        "eu-west-1",
    );
    let c = cp_kafka::effective_config(&sts, "confluent", 1).unwrap();
    assert_eq!(c.id(), Some(1));
    assert_eq!(c.properties.get("broker.rack"), Some("eu-west-1"));
    assert_eq!(
        cp_kafka::property_name("KAFKA_LISTENER_NAME_INTERNAL_SSL__KEY___PASSWORD").as_deref(),
        Some("listener.name.internal.ssl_key-password")
    );
    assert_eq!(cp_kafka::property_name("CONFLUENT_X"), None);
}

/// §2.2-2.4: `node.id` = ordinal + `KAFKA_MIN_ID` (brokers 100); the
/// placeholder becomes `${MY_POD_NAME}.${KAFKA_FULLNAME}-${POD_ROLE}-headless.${MY_POD_NAMESPACE}.svc.${CLUSTER_DOMAIN}`;
/// the cluster id is the per-install Secret's.
#[test]
fn bitnami_broker_id_and_advertised_host_come_from_the_init_script() {
    let sts = fixture("bitnami-kafka-kraft-dedicated/statefulset-kafka-broker.json");
    let cm = configmap(
        "bitnami-kafka-kraft-dedicated",
        "kafka-broker-configuration",
    );
    let c = bitnami_kafka::effective_config(&sts, &cm, "kafka", 2, &|n, k| format!("<{n}/{k}>"))
        .unwrap();
    assert_eq!(c.id(), Some(102));
    let host = "kafka-broker-2.kafka-broker-headless.kafka.svc.cluster.local";
    assert_eq!(
        c.advertised(),
        [
            ("CLIENT".to_string(), host.to_string(), 9092),
            ("INTERNAL".to_string(), host.to_string(), 9094)
        ]
    );
    assert_eq!(c.cluster_id.as_deref(), Some("<kafka-kraft/cluster-id>"));
    assert_eq!(c.initial_controllers, None, "brokers format without it");
    assert_eq!(
        c.properties.get("controller.quorum.bootstrap.servers"),
        Some(
            "kafka-controller-0.kafka-controller-headless.kafka.svc.cluster.local:9093,kafka-controller-1.kafka-controller-headless.kafka.svc.cluster.local:9093,kafka-controller-2.kafka-controller-headless.kafka.svc.cluster.local:9093"
        )
    );
}

/// §2.3: controllers (minId 0) write `i@<fullname>-controller-i.<svc>.<ns>.svc.<domain>:9093:<dir id>`
/// for the chart's replica count, read back by the main container through
/// `KAFKA_INITIAL_CONTROLLERS_FILE`; a dedicated controller advertises nothing.
#[test]
fn bitnami_controllers_write_initial_controllers_from_the_secret() {
    let sts = fixture("bitnami-kafka-kraft-dedicated/statefulset-kafka-controller.json");
    let cm = configmap(
        "bitnami-kafka-kraft-dedicated",
        "kafka-controller-configuration",
    );
    let c =
        bitnami_kafka::effective_config(&sts, &cm, "kafka", 1, &|_, k| format!("<{k}>")).unwrap();
    assert_eq!(c.id(), Some(1));
    assert!(c.advertised().is_empty(), "{:?}", c.advertised());
    let expected: Vec<String> = (0..3)
        .map(|i| format!("{i}@kafka-controller-{i}.kafka-controller-headless.kafka.svc.cluster.local:9093:<controller-{i}-id>"))
        .collect();
    assert_eq!(c.initial_controllers, Some(expected.join(",")));
}

#[test]
fn properties_parse_like_java_later_lines_win() {
    let p = Properties::parse("# c\na=1\n\n b = 2 \na=3\n!x\n");
    assert_eq!(p.get("a"), Some("3"));
    assert_eq!(p.get("b"), Some("2"));
    assert_eq!(p.lines.len(), 3);
}

/// bitnami/zookeeper: `setup.sh` numbers servers ordinal + minServerId (1);
/// `ZOO_SERVERS` with `::<id>` gives explicit ids, each line with the
/// client port; `ZOO_CFG_<key>` becomes `<key>` with `_` as `.`.
#[test]
fn bitnami_zookeeper_ids_from_the_ordinal_and_explicit_server_ids() {
    let mut sts = fixture("bitnami-zookeeper/statefulset-zookeeper.json");
    let scripts = configmap("bitnami-zookeeper", "zookeeper-scripts");
    set_env(
        &mut sts,
        bitnami_zookeeper::CONTAINER,
        "ZOO_CFG_group_1",
        "1:2:3",
    );
    let c = bitnami_zookeeper::effective_config(&sts, &scripts, "zookeeper", 2).unwrap();
    assert_eq!(c.myid, 3);
    let servers = c.properties.indexed("server");
    assert_eq!(servers.keys().copied().collect::<Vec<_>>(), [1, 2, 3]);
    assert_eq!(
        servers[&1],
        "zookeeper-0.zookeeper-headless.zookeeper.svc.cluster.local:2888:3888;2181"
    );
    assert_eq!(c.properties.get("group.1"), Some("1:2:3"));
    assert_eq!(c.properties.get("quorumListenOnAllIPs"), Some("false"));
    assert_eq!(c.properties.get("dataDir"), Some("/bitnami/zookeeper/data"));
}
