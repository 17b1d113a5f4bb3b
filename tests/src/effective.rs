//! The configuration each pod actually runs with, derived from the
//! (mutated) objects the way the chart's commands and the images do it.
//! Written once; used by the real-ZooKeeper proof and the Kafka checks.
//!
//! Each rule cites `shared/research/domain-stretch.md` (the section) and
//! the source it read. The charts' own shell code is run for real (`bash`,
//! `sh`, `sed`), with only the image entrypoint replaced by `env -0` (to
//! capture what it would receive) or, for bitnami's init script, the two
//! library functions it calls replaced by their documented behaviour.
//! What the images then do with that environment is modelled here:
//!
//! - cp-zookeeper (§1.2; `confluentinc/kafka-images@v6.1.0` and `@v7.9.0`
//!   `zookeeper/include/etc/confluent/docker/configure`, `myid.template`,
//!   `zookeeper.properties.template`): `myid` = `ZOOKEEPER_SERVER_ID`;
//!   `initLimit`/`syncLimit` default to 10/5 when `ZOOKEEPER_SERVERS` is
//!   set; a fixed table of `ZOOKEEPER_*` variables becomes properties;
//!   `ZOOKEEPER_SERVERS`/`GROUPS`/`WEIGHTS` split on `;` into
//!   `server.<i>`/`group.<i>`/`weight.<i>`, `<i>` the 1-based position.
//! - cp-kafka (§1.3; `kafka-images@v6.1.0:kafka/include/etc/confluent/docker/configure`,
//!   `kafka.properties.template`, `confluent-docker-utils` `dub.py env_to_props`,
//!   `cub.py get_kafka_listeners`): every `KAFKA_*` variable but a few JVM
//!   ones becomes a property (`KAFKA_` stripped, lower case, `___` -> `-`,
//!   `__` -> `_`, `_` -> `.`); `listeners` defaults to the advertised
//!   listeners with every host replaced by `0.0.0.0`.
//! - bitnami/kafka (§2.2-2.4; `bitnami/charts@5165628a:bitnami/kafka/templates/_init_containers.tpl`,
//!   `bitnami/containers@b3477708:bitnami/kafka/4.0/.../kafka-env.sh`): the
//!   `prepare-config` init container copies the role's ConfigMap
//!   `server.properties`, sets `node.id` = ordinal + `KAFKA_MIN_ID` (fresh
//!   volume) and replaces `advertised-address-placeholder`; the main
//!   container's `KAFKA_KRAFT_CLUSTER_ID` is the cluster id, and
//!   `KAFKA_INITIAL_CONTROLLERS_FILE` (when set) overrides
//!   `KAFKA_INITIAL_CONTROLLERS`.
//! - CloudPirates kafka (`CloudPirates-io/helm-charts@983ec96e:charts/kafka/templates/statefulset.yaml`):
//!   the container script is the configuration (see [`cloudpirates_kafka`]).

use std::collections::BTreeMap;
use std::fs;
use std::process::Command;

use anyhow::{Context, Result, bail, ensure};
use serde_json::Value;

use crate::kube::{self, PodFacts};
use crate::scratch::Scratch;

/// `key=value` lines in file order (Java properties as the images write them).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Properties {
    pub lines: Vec<(String, String)>,
}

impl Properties {
    /// Parses `key=value` lines; blank lines and `#` comments are skipped.
    pub fn parse(text: &str) -> Properties {
        let lines = text
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty() && !l.starts_with('#') && !l.starts_with('!'))
            .filter_map(|l| l.split_once('='))
            .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
            .collect();
        Properties { lines }
    }

    /// The last value of `key` (Java properties: a later line wins).
    pub fn get(&self, key: &str) -> Option<&str> {
        self.lines
            .iter()
            .rev()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// `<prefix>.<n>=<value>` lines by `n` (server, group, weight).
    pub fn indexed(&self, prefix: &str) -> BTreeMap<u32, String> {
        self.lines
            .iter()
            .filter_map(|(k, v)| {
                let n = k.strip_prefix(prefix)?.strip_prefix('.')?.parse().ok()?;
                Some((n, v.clone()))
            })
            .collect()
    }

    fn push(&mut self, key: &str, value: impl Into<String>) {
        self.lines.push((key.to_string(), value.into()));
    }
}

/// Runs `shell <flags…> script` with exactly `env` (and a plain `PATH`);
/// fails with the script's stderr.
fn run_script(
    pod: &str,
    shell: &str,
    flags: &[String],
    script: &str,
    env: &BTreeMap<String, String>,
) -> Result<()> {
    let out = Command::new(shell)
        .args(flags)
        .arg(script)
        .env_clear()
        .env("PATH", "/usr/local/bin:/usr/bin:/bin")
        .envs(env)
        .output()
        .with_context(|| format!("{pod}: running {shell}"))?;
    ensure!(
        out.status.success(),
        "{pod}: the chart's script failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(())
}

/// Runs a chart's shell command with `env`, the image entrypoint replaced by
/// `env -0`; returns the environment the entrypoint would have received.
fn run_until_entrypoint(
    pod: &str,
    command: &[&str],
    entrypoint: &str,
    env: &BTreeMap<String, String>,
) -> Result<BTreeMap<String, String>> {
    let (shell, script) = match command {
        [shell, flags @ .., script] if !flags.is_empty() => (shell, script),
        _ => bail!("{pod}: the command is no longer `<shell> -c <script>`: {command:?}"),
    };
    ensure!(
        script.matches(entrypoint).count() == 1,
        "{pod}: the command must run {entrypoint} exactly once"
    );
    // The environment goes to a file: what the script echoes on stdout
    // must not mix with it.
    let scratch = Scratch::new("entrypoint-env")?;
    let captured = scratch.join("env");
    let script = script.replace(entrypoint, &format!("env -0 > '{}'", captured.display()));
    let flags: Vec<String> = command[1..command.len() - 1]
        .iter()
        .map(|f| f.to_string())
        .collect();
    run_script(pod, shell, &flags, &script, env)?;
    Ok(String::from_utf8(fs::read(&captured)?)?
        .split('\0')
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect())
}

/// Pod `<sts>-<ordinal>`'s name and the environment its `container`'s
/// command hands to the image `entrypoint` (Kubernetes env resolution, then
/// the chart's shell script run for real).
fn chart_command_env(
    sts: &Value,
    namespace: &str,
    ordinal: u32,
    container: &str,
    entrypoint: &str,
) -> Result<(String, BTreeMap<String, String>)> {
    let pod = PodFacts::of(sts, namespace, ordinal);
    let container = kube::container(sts, container, false)?;
    let env = kube::environment(container, &pod, &|n, k| format!("secret {n}/{k}"))?;
    let command = string_command(container, &pod.name)?;
    let command: Vec<&str> = command.iter().map(String::as_str).collect();
    let seen = run_until_entrypoint(&pod.name, &command, entrypoint, &env)?;
    Ok((pod.name, seen))
}

fn string_command(container: &Value, pod: &str) -> Result<Vec<String>> {
    container["command"]
        .as_array()
        .with_context(|| format!("{pod}: the container has no command"))?
        .iter()
        .chain(container["args"].as_array().into_iter().flatten())
        .map(|a| {
            a.as_str()
                .map(str::to_string)
                .with_context(|| format!("{pod}: a command word is not a string"))
        })
        .collect()
}

// ---------------------------------------------------------------------------
// cp-zookeeper

/// What the cp-zookeeper image writes for one pod: `myid` and the lines of
/// `zookeeper.properties`, in the template's order.
#[derive(Debug, Clone, PartialEq)]
pub struct ZkConfig {
    pub myid: u32,
    pub properties: Properties,
}

pub mod cp_zookeeper {
    use super::*;

    pub use straddle_compiler::charts::cp::ZOOKEEPER_CONTAINER as CONTAINER;
    const ENTRYPOINT: &str = "/etc/confluent/docker/run";

    /// `ZOOKEEPER_*` env -> property, from the image's template (the subset
    /// of its table the chart can set; any other `ZOOKEEPER_*` variable is an
    /// error rather than silently dropped).
    pub const IMAGE_PROPS: &[(&str, &str)] = &[
        ("ZOOKEEPER_CLIENT_PORT", "clientPort"),
        ("ZOOKEEPER_TICK_TIME", "tickTime"),
        ("ZOOKEEPER_MAX_CLIENT_CNXNS", "maxClientCnxns"),
        ("ZOOKEEPER_CLIENT_PORT_ADDRESS", "clientPortAddress"),
        ("ZOOKEEPER_MIN_SESSION_TIMEOUT", "minSessionTimeout"),
        ("ZOOKEEPER_MAX_SESSION_TIMEOUT", "maxSessionTimeout"),
        (
            "ZOOKEEPER_AUTOPURGE_SNAP_RETAIN_COUNT",
            "autopurge.snapRetainCount",
        ),
        (
            "ZOOKEEPER_AUTOPURGE_PURGE_INTERVAL",
            "autopurge.purgeInterval",
        ),
        ("ZOOKEEPER_ELECTION_ALG", "electionAlg"),
        ("ZOOKEEPER_INIT_LIMIT", "initLimit"),
        ("ZOOKEEPER_LEADER_SERVES", "leaderServes"),
        ("ZOOKEEPER_SYNC_LIMIT", "syncLimit"),
        ("ZOOKEEPER_CNX_TIMEOUT", "cnxTimeout"),
        ("ZOOKEEPER_QUORUM_LISTEN_ON_ALL_IPS", "quorumListenOnAllIPs"),
        ("ZOOKEEPER_TCP_KEEP_ALIVE", "tcpKeepAlive"),
        ("ZOOKEEPER_ADMIN_ENABLE_SERVER", "admin.enableServer"),
    ];
    /// Read by the image outside `IMAGE_PROPS` (or only by the chart's command).
    const IMAGE_LISTS: &[&str] = &[
        "ZOOKEEPER_SERVERS",
        "ZOOKEEPER_SERVER_ID",
        "ZOOKEEPER_GROUPS",
        "ZOOKEEPER_WEIGHTS",
    ];

    /// The effective configuration of pod `<sts>-<ordinal>`.
    ///
    /// 1. Kubernetes builds the environment ([`kube::environment`]).
    /// 2. The chart's command (`charts/cp-zookeeper/templates/statefulset.yaml`)
    ///    runs for real: `ZOOKEEPER_SERVER_ID=$((${HOSTNAME##*-}+1))` and
    ///    `ZOOKEEPER_SERVERS` through `sed "s/${HOSTNAME}\.[^:]*:/0.0.0.0:/g"`
    ///    (the pod's own entry becomes `0.0.0.0:<ports>`).
    /// 3. The image writes `myid` and `zookeeper.properties` (module docs).
    pub fn effective_config(sts: &Value, namespace: &str, ordinal: u32) -> Result<ZkConfig> {
        let (pod, seen) = chart_command_env(sts, namespace, ordinal, CONTAINER, ENTRYPOINT)?;
        image(&pod, &seen)
    }

    /// Step 3 alone: what the image does with the entrypoint's environment.
    pub fn image(pod: &str, seen: &BTreeMap<String, String>) -> Result<ZkConfig> {
        let var = |k: &str| seen.get(k).filter(|v| !v.is_empty()).cloned();
        for k in seen.keys().filter(|k| k.starts_with("ZOOKEEPER_")) {
            ensure!(
                IMAGE_LISTS.contains(&k.as_str()) || IMAGE_PROPS.iter().any(|(e, _)| e == k),
                "{pod}: env {k} is not in this model of the image; add it from the template"
            );
        }
        let clustered = var("ZOOKEEPER_SERVERS").is_some();
        let myid: u32 = var("ZOOKEEPER_SERVER_ID")
            .and_then(|v| v.parse().ok())
            .with_context(|| format!("{pod}: no numeric ZOOKEEPER_SERVER_ID reaches the image"))?;
        let mut p = Properties::default();
        p.push("dataDir", "/var/lib/zookeeper/data");
        p.push("dataLogDir", "/var/lib/zookeeper/log");
        for (env_var, property) in IMAGE_PROPS {
            // `configure`: `export ZOOKEEPER_INIT_LIMIT=${ZOOKEEPER_INIT_LIMIT:-"10"}` (SYNC: 5)
            // when clustered; the template writes any other variable that is set.
            let value = match *env_var {
                "ZOOKEEPER_INIT_LIMIT" if clustered => var(env_var).or(Some("10".into())),
                "ZOOKEEPER_SYNC_LIMIT" if clustered => var(env_var).or(Some("5".into())),
                _ => seen.get(*env_var).cloned(),
            };
            if let Some(v) = value {
                p.push(property, v);
            }
        }
        for (env_var, prefix) in [
            ("ZOOKEEPER_SERVERS", "server"),
            ("ZOOKEEPER_GROUPS", "group"),
            ("ZOOKEEPER_WEIGHTS", "weight"),
        ] {
            if let Some(list) = var(env_var) {
                for (i, item) in list.split(';').enumerate() {
                    p.push(&format!("{prefix}.{}", i + 1), item);
                }
            }
        }
        Ok(ZkConfig {
            myid,
            properties: p,
        })
    }
}

pub mod cloudpirates_zookeeper {
    //! CloudPirates `zookeeper` on the official zookeeper image: `zoo.cfg`
    //! is the ConfigMap's, mounted as is (the image's entrypoint writes one
    //! from `ZOO_SERVERS` only when none exists); the container script
    //! exports `ZOO_MY_ID=$((POD_INDEX + SERVER_ID_OFFSET))` before the
    //! entrypoint, which writes it to `myid` (`31z4/zookeeper-docker`
    //! `3.9.5/docker-entrypoint.sh`).
    use super::*;

    pub use straddle_compiler::charts::cloudpirates::{
        ZOOKEEPER_CONFIG_KEY as CONFIG_KEY, ZOOKEEPER_CONTAINER as CONTAINER,
    };
    /// The entrypoint as the script runs it.
    const ENTRYPOINT: &str = "/docker-entrypoint.sh zkServer.sh start-foreground";

    /// The effective configuration of pod `<sts>-<ordinal>`, given the
    /// role's ConfigMap.
    pub fn effective_config(
        sts: &Value,
        configmap: &Value,
        namespace: &str,
        ordinal: u32,
    ) -> Result<ZkConfig> {
        let facts = PodFacts::of(sts, namespace, ordinal);
        let pod = facts.name.clone();
        let container = kube::container(sts, CONTAINER, false)?;
        let mut env = kube::environment(container, &facts, &|n, k| format!("secret {n}/{k}"))?;
        // The image's `ENV ZOO_DATA_DIR=/data`; the script creates it.
        let data = Scratch::new("zookeeper-data")?;
        env.insert("ZOO_DATA_DIR".into(), data.path().display().to_string());
        let command = string_command(container, &pod)?;
        let command: Vec<&str> = command.iter().map(String::as_str).collect();
        let seen = run_until_entrypoint(&pod, &command, ENTRYPOINT, &env)?;
        let myid = seen
            .get("ZOO_MY_ID")
            .and_then(|v| v.parse().ok())
            .with_context(|| format!("{pod}: no numeric ZOO_MY_ID reaches the entrypoint"))?;
        let text = configmap["data"][CONFIG_KEY]
            .as_str()
            .with_context(|| format!("{pod}: the ConfigMap has no {CONFIG_KEY}"))?;
        Ok(ZkConfig {
            myid,
            properties: Properties::parse(text),
        })
    }
}

// ---------------------------------------------------------------------------
// Kafka

/// What a Kafka node runs with: `server.properties`, plus the format-time
/// inputs of KRaft (cluster id, initial controllers).
#[derive(Debug, Clone, PartialEq)]
pub struct KafkaConfig {
    pub properties: Properties,
    pub cluster_id: Option<String>,
    pub initial_controllers: Option<String>,
}

impl KafkaConfig {
    /// `broker.id` (ZooKeeper mode) or `node.id` (KRaft).
    pub fn id(&self) -> Option<u32> {
        self.properties
            .get("node.id")
            .or(self.properties.get("broker.id"))
            .and_then(|v| v.parse().ok())
    }

    /// `advertised.listeners` as (listener name, host, port).
    pub fn advertised(&self) -> Vec<(String, String, u16)> {
        listeners(self.properties.get("advertised.listeners").unwrap_or(""))
    }
}

/// `NAME://host:port,...` -> (name, host, port); unparsable entries dropped.
pub fn listeners(list: &str) -> Vec<(String, String, u16)> {
    list.split(',')
        .filter_map(|l| {
            let (name, addr) = l.trim().split_once("://")?;
            let (host, port) = addr.rsplit_once(':')?;
            Some((name.to_string(), host.to_string(), port.parse().ok()?))
        })
        .collect()
}

pub mod cp_kafka {
    use super::*;

    pub use straddle_compiler::charts::cp::KAFKA_CONTAINER as CONTAINER;
    const ENTRYPOINT: &str = "/etc/confluent/docker/run";
    /// `kafka.properties.template` (read at kafka-images `07ec4fc9`). The
    /// missing comma after `'KAFKA_HEAP_OPTS'` is in the template: Python
    /// joins the two strings, so neither name is excluded.
    const EXCLUDED: &[&str] = &[
        "KAFKA_VERSION",
        "KAFKA_HEAP_OPTSKAFKA_LOG4J_OPTS",
        "KAFKA_OPTS",
        "KAFKA_JMX_OPTS",
        "KAFKA_JVM_PERFORMANCE_OPTS",
        "KAFKA_GC_LOG_OPTS",
        "KAFKA_LOG4J_ROOT_LOGLEVEL",
        "KAFKA_LOG4J_LOGGERS",
        "KAFKA_TOOLS_LOG4J_LOGLEVEL",
    ];

    /// `dub.py env_to_props`: `KAFKA_` stripped, lower case, `___` -> `-`,
    /// `__` -> `_`, `_` -> `.`.
    pub fn property_name(var: &str) -> Option<String> {
        let raw = var.strip_prefix("KAFKA_")?;
        Some(
            raw.to_lowercase()
                .replace("___", "-")
                .replace("__", "\0")
                .replace('_', ".")
                .replace('\0', "_"),
        )
    }

    /// The effective configuration of broker pod `<sts>-<ordinal>`: the
    /// chart's command run for real (`export KAFKA_BROKER_ID=${HOSTNAME##*-}`,
    /// `export KAFKA_ADVERTISED_LISTENERS=PLAINTEXT://${POD_NAME}.<fullname>-headless.${POD_NAMESPACE}:9092,EXTERNAL://${HOST_IP}:$((31090 + ${KAFKA_BROKER_ID}))`),
    /// then the image's `configure` and template.
    pub fn effective_config(sts: &Value, namespace: &str, ordinal: u32) -> Result<KafkaConfig> {
        let (pod, seen) = chart_command_env(sts, namespace, ordinal, CONTAINER, ENTRYPOINT)?;
        image(&pod, &seen)
    }

    /// What the image does with the entrypoint's environment.
    pub fn image(pod: &str, seen: &BTreeMap<String, String>) -> Result<KafkaConfig> {
        for required in ["KAFKA_ZOOKEEPER_CONNECT", "KAFKA_ADVERTISED_LISTENERS"] {
            ensure!(
                seen.get(required).is_some_and(|v| !v.is_empty()),
                "{pod}: the image's `configure` requires {required}"
            );
        }
        let mut env = seen.clone();
        if !env.contains_key("KAFKA_LISTENERS") {
            let derived = listeners(&env["KAFKA_ADVERTISED_LISTENERS"])
                .into_iter()
                .map(|(name, _, port)| format!("{name}://0.0.0.0:{port}"))
                .collect::<Vec<_>>()
                .join(",");
            env.insert("KAFKA_LISTENERS".into(), derived);
        }
        let mut p = Properties::default();
        for (var, value) in &env {
            if EXCLUDED.contains(&var.as_str()) {
                continue;
            }
            if let Some(name) = property_name(var) {
                p.push(&name, value.clone());
            }
        }
        Ok(KafkaConfig {
            properties: p,
            cluster_id: None,
            initial_controllers: None,
        })
    }
}

pub mod bitnami_kafka {
    use super::*;

    pub use straddle_compiler::charts::bitnami::{
        INIT_CONTAINER, MAIN_CONTAINER as CONTAINER, PROPERTIES_KEY,
    };
    const LIBRARY: &str = ". /opt/bitnami/scripts/libkafka.sh";
    /// Absolute paths the init script uses, moved under a scratch directory.
    const PATHS: &[&str] = &[
        "/configmaps/",
        "/bitnami/kafka/data/",
        "/shared/",
        "/secret-config/",
    ];
    /// The two `libkafka.sh`/`libfile.sh` functions the script calls, as
    /// their documentation describes them: `kafka_server_conf_set KEY VALUE`
    /// replaces the (possibly commented) `KEY=` line of `$KAFKA_CONF_FILE`
    /// or appends one; `replace_in_file FILE MATCH SUBST` replaces every match.
    const LIBRARY_MODEL: &str = r#"
kafka_server_conf_set() {
    if grep -q "^[#[:space:]]*$1[[:space:]]*=" "$KAFKA_CONF_FILE"; then
        sed -i "s|^[#[:space:]]*$1[[:space:]]*=.*|$1=$2|" "$KAFKA_CONF_FILE"
    else
        printf '\n%s=%s' "$1" "$2" >> "$KAFKA_CONF_FILE"
    fi
}
replace_in_file() { sed -i "s|$2|$3|g" "$1"; }
warn() { echo "WARN $*" >&2; }
"#;

    /// The effective configuration of pod `<sts>-<ordinal>` on a fresh
    /// volume: the role's ConfigMap through the `prepare-config` script (run
    /// for real), then the main container's cluster id and initial
    /// controllers. `secret(name, key)` stands for the per-install Secret.
    pub fn effective_config(
        sts: &Value,
        configmap: &Value,
        namespace: &str,
        ordinal: u32,
        secret: &dyn Fn(&str, &str) -> String,
    ) -> Result<KafkaConfig> {
        let pod = PodFacts::of(sts, namespace, ordinal);
        let init = kube::container(sts, INIT_CONTAINER, true)?;
        let main = kube::container(sts, CONTAINER, false)?;
        let command = string_command(init, &pod.name)?;
        let (shell, script) = match command.as_slice() {
            [shell, flag, script] if shell.ends_with("bash") && flag.starts_with('-') => {
                (shell.clone(), script.clone())
            }
            _ => bail!(
                "{}: {INIT_CONTAINER} is no longer `bash -ec <script>`",
                pod.name
            ),
        };
        let properties = configmap["data"][PROPERTIES_KEY]
            .as_str()
            .with_context(|| {
                format!(
                    "{}: ConfigMap {} has no {PROPERTIES_KEY}",
                    pod.name,
                    configmap["metadata"]["name"].as_str().unwrap_or("?")
                )
            })?;

        let scratch = Scratch::new("bitnami-init")?;
        let dir = scratch.path();
        for sub in [
            "configmaps",
            "bitnami/kafka/data",
            "shared",
            "secret-config",
            "config",
        ] {
            fs::create_dir_all(dir.join(sub))?;
        }
        fs::write(dir.join("configmaps/server.properties"), properties)?;
        fs::write(dir.join("lib.sh"), LIBRARY_MODEL)?;

        ensure!(
            script.contains(LIBRARY),
            "{}: the init script no longer loads {LIBRARY}",
            pod.name
        );
        let mut script = script.replace(LIBRARY, &format!(". {}/lib.sh", dir.display()));
        for path in PATHS {
            script = script.replace(path, &format!("{}{path}", dir.display()));
        }

        let mut env = kube::environment(init, &pod, secret)?;
        // The Secret volumes the init container mounts (the SASL passwords'
        // `*_FILE`s): each file an env var names there holds
        // `secret(<Secret>, <file name>)`, under the scratch directory.
        let mounts = secret_mounts(sts, init);
        for (var, value) in env.clone() {
            let Some((mount, name)) = mounts.iter().find(|(m, _)| value.starts_with(m.as_str()))
            else {
                continue;
            };
            let key = value[mount.len()..].trim_start_matches('/');
            let file = dir.join("secret-volumes").join(&var);
            fs::create_dir_all(dir.join("secret-volumes"))?;
            fs::write(&file, secret(name, key))?;
            env.insert(var, file.display().to_string());
        }
        let conf = env.get("KAFKA_CONF_FILE").cloned().unwrap_or_default();
        let conf = conf
            .strip_prefix('/')
            .filter(|c| c.starts_with("config/"))
            .with_context(|| format!("{}: KAFKA_CONF_FILE is not under /config", pod.name))?;
        let conf = dir.join(conf);
        env.insert("KAFKA_CONF_FILE".into(), conf.display().to_string());
        run_script(&pod.name, &shell, &command[1..2], &script, &env)?;
        let written = Properties::parse(&fs::read_to_string(&conf)?);
        let file_controllers = fs::read_to_string(dir.join("shared/initial-controllers.txt"))
            .ok()
            .map(|s| s.trim().to_string());
        drop(scratch);

        // The main container (`kafka-env.sh`): `KAFKA_KRAFT_CLUSTER_ID` ->
        // `KAFKA_CLUSTER_ID`; a set `*_FILE` variable overrides the plain one.
        let main_env = kube::environment(main, &pod, secret)?;
        let initial_controllers = match main_env.get("KAFKA_INITIAL_CONTROLLERS_FILE") {
            Some(_) => file_controllers,
            None => main_env.get("KAFKA_INITIAL_CONTROLLERS").cloned(),
        };
        Ok(KafkaConfig {
            properties: written,
            cluster_id: main_env.get("KAFKA_KRAFT_CLUSTER_ID").cloned(),
            initial_controllers,
        })
    }
}

/// (mount path, Secret name) of every Secret volume `container` mounts
/// (`secret.secretName`, or a projected volume's first Secret source).
fn secret_mounts(sts: &Value, container: &Value) -> Vec<(String, String)> {
    let volumes = sts["spec"]["template"]["spec"]["volumes"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let mut out = Vec::new();
    for m in container["volumeMounts"].as_array().into_iter().flatten() {
        let Some(v) = volumes.iter().find(|v| v["name"] == m["name"]) else {
            continue;
        };
        let name = v["secret"]["secretName"].as_str().or_else(|| {
            v["projected"]["sources"]
                .as_array()?
                .iter()
                .find_map(|s| s["secret"]["name"].as_str())
        });
        if let (Some(path), Some(name)) = (m["mountPath"].as_str(), name) {
            out.push((path.trim_end_matches('/').to_string(), name.to_string()));
        }
    }
    out
}

pub mod cloudpirates_kafka {
    //! CloudPirates `kafka` on the official apache/kafka image: the
    //! container's `sh -ec` script copies the ConfigMap's `server.properties`
    //! to a runtime file, appends `node.id` and `advertised.listeners`
    //! (`ADVERTISED_HOST`), formats storage with `KAFKA_CLUSTER_ID` and starts
    //! the server on that file. The image's own `configure` never runs (the
    //! chart replaces its command), so the runtime file is the configuration.
    use super::*;

    pub use straddle_compiler::charts::cloudpirates::{
        KAFKA_CONTAINER as CONTAINER, PROPERTIES_KEY,
    };
    const CONFIG: &str = "/mnt/kafka/config/server.properties";
    const RUNTIME: &str = "/opt/kafka/config-runtime/server.properties";
    const FORMAT: &str = "/opt/kafka/bin/kafka-storage.sh";
    const START: &str = "/opt/kafka/bin/kafka-server-start.sh";

    /// The effective configuration of pod `<sts>-<ordinal>`: the script run
    /// for real on the pod's environment, with the ConfigMap's file in place
    /// and the two Kafka tools recorded instead of run.
    pub fn effective_config(
        sts: &Value,
        configmap: &Value,
        namespace: &str,
        ordinal: u32,
        secret: &dyn Fn(&str, &str) -> String,
    ) -> Result<KafkaConfig> {
        let pod = PodFacts::of(sts, namespace, ordinal);
        let container = kube::container(sts, CONTAINER, false)?;
        let command = string_command(container, &pod.name)?;
        let (shell, flag, script) = match command.as_slice() {
            [shell, flag, script] => (shell.clone(), flag.clone(), script.clone()),
            _ => bail!("{}: the command is no longer `sh -ec <script>`", pod.name),
        };
        let properties = configmap["data"][PROPERTIES_KEY]
            .as_str()
            .with_context(|| format!("{}: the ConfigMap has no {PROPERTIES_KEY}", pod.name))?;
        let scratch = Scratch::new("cloudpirates-kafka")?;
        let dir = scratch.path();
        fs::write(dir.join("config.properties"), properties)?;
        for (tool, marker) in [(FORMAT, "format"), (START, "start")] {
            ensure!(
                script.contains(tool),
                "{}: the script no longer runs {tool}",
                pod.name
            );
            let stub = dir.join(marker);
            fs::write(
                &stub,
                format!("#!/bin/sh\necho \"$*\" > {}.args\n", stub.display()),
            )?;
            let mut perms = fs::metadata(&stub)?.permissions();
            std::os::unix::fs::PermissionsExt::set_mode(&mut perms, 0o755);
            fs::set_permissions(&stub, perms)?;
        }
        let script = script
            .replace(CONFIG, &dir.join("config.properties").display().to_string())
            .replace(
                RUNTIME,
                &dir.join("runtime.properties").display().to_string(),
            )
            .replace(FORMAT, &dir.join("format").display().to_string())
            .replace(START, &dir.join("start").display().to_string());
        let env = kube::environment(container, &pod, secret)?;
        run_script(&pod.name, &shell, &[flag], &script, &env)?;
        let format = fs::read_to_string(dir.join("format.args"))?;
        let cluster_id = format
            .split_whitespace()
            .skip_while(|w| *w != "-t")
            .nth(1)
            .map(str::to_string);
        Ok(KafkaConfig {
            properties: Properties::parse(&fs::read_to_string(dir.join("runtime.properties"))?),
            cluster_id,
            initial_controllers: None,
        })
    }
}

pub mod bitnami_zookeeper;

#[cfg(test)]
mod tests;
