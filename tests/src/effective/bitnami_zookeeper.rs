//! bitnami/zookeeper 13 on the bitnami zookeeper 3.9 image.
//!
//! The container runs `/scripts/setup.sh` (ConfigMap `<fullname>-scripts`,
//! run here for real): `ZOO_SERVER_ID = ordinal + minServerId` from
//! `hostname -s`, then `exec /entrypoint.sh /run.sh`. The image's
//! `libzookeeper.sh` (`bitnami/containers@f514b05:bitnami/zookeeper/3.9/debian-12/
//! rootfs/opt/bitnami/scripts/libzookeeper.sh`, `zookeeper_initialize` and
//! `zookeeper_generate_conf`) then writes `myid` = `ZOO_SERVER_ID` and
//! `zoo.cfg`: the sample file, the `ZOO_*` settings, one
//! `server.<id>=<host>:<quorum>:<election>;<clientPort>` per `ZOO_SERVERS`
//! entry (with `::<id>` the ids are explicit, else the 1-based position),
//! and every `ZOO_CFG_<key>` as `<key>` with `_` read as `.`.

use super::*;

pub use straddle_compiler::charts::bitnami_zookeeper::CONTAINER;
/// The key of the scripts ConfigMap the container runs.
pub const SETUP_KEY: &str = "setup.sh";
const ENTRYPOINT: &str = "/entrypoint.sh /run.sh";

/// The image's defaults (`zookeeper-env.sh`) for what the chart may leave unset.
const DEFAULTS: &[(&str, &str)] = &[
    ("ZOO_DATA_DIR", "/bitnami/zookeeper/data"),
    ("ZOO_PORT_NUMBER", "2181"),
    ("ZOO_TICK_TIME", "2000"),
    ("ZOO_INIT_LIMIT", "10"),
    ("ZOO_SYNC_LIMIT", "5"),
    ("ZOO_MAX_CNXNS", "0"),
    ("ZOO_LISTEN_ALLIPS_ENABLED", "no"),
    ("ZOO_RECONFIG_ENABLED", "no"),
    ("ZOO_4LW_COMMANDS_WHITELIST", "srvr, mntr"),
];

/// The effective configuration of pod `<sts>-<ordinal>`, given the chart's
/// scripts ConfigMap.
pub fn effective_config(
    sts: &Value,
    scripts: &Value,
    namespace: &str,
    ordinal: u32,
) -> Result<ZkConfig> {
    let facts = PodFacts::of(sts, namespace, ordinal);
    let pod = facts.name.clone();
    let container = kube::container(sts, CONTAINER, false)?;
    let command = string_command(container, &pod)?;
    ensure!(
        command == ["/scripts/setup.sh"],
        "{pod}: the command is no longer /scripts/setup.sh: {command:?}"
    );
    let env = kube::environment(container, &facts, &|n, k| format!("secret {n}/{k}"))?;
    let script = scripts["data"][SETUP_KEY]
        .as_str()
        .with_context(|| format!("{pod}: the scripts ConfigMap has no {SETUP_KEY}"))?;
    // The kubelet sets the pod's hostname to its name.
    ensure!(
        script.matches("$(hostname -s)").count() == 1,
        "{pod}: setup.sh no longer reads the ordinal from `hostname -s`"
    );
    let script = script.replace("$(hostname -s)", &pod);
    let seen = run_until_entrypoint(&pod, &["bash", "-ec", &script], ENTRYPOINT, &env)?;
    image(&pod, &seen)
}

/// What the image does with the entrypoint's environment.
pub fn image(pod: &str, seen: &BTreeMap<String, String>) -> Result<ZkConfig> {
    let var = |k: &str| {
        seen.get(k)
            .filter(|v| !v.is_empty())
            .map(String::as_str)
            .or_else(|| DEFAULTS.iter().find(|(d, _)| *d == k).map(|(_, v)| *v))
            .unwrap_or("")
            .to_string()
    };
    let yes = |k: &str| if var(k) == "yes" { "true" } else { "false" };
    let myid: u32 = var("ZOO_SERVER_ID")
        .parse()
        .with_context(|| format!("{pod}: no numeric ZOO_SERVER_ID reaches the image"))?;
    // `zoo_sample.cfg`, then `zookeeper_conf_set` (replace the key, or append).
    let mut p = Properties::parse(
        "tickTime=2000\ninitLimit=10\nsyncLimit=5\ndataDir=/tmp/zookeeper\nclientPort=2181\n",
    );
    let mut set = |key: &str, value: String| match p.lines.iter_mut().find(|(k, _)| k == key) {
        Some(line) => line.1 = value,
        None => p.push(key, value),
    };
    set("tickTime", var("ZOO_TICK_TIME"));
    set("initLimit", var("ZOO_INIT_LIMIT"));
    set("syncLimit", var("ZOO_SYNC_LIMIT"));
    set("dataDir", var("ZOO_DATA_DIR"));
    set("clientPort", var("ZOO_PORT_NUMBER"));
    set("maxCnxns", var("ZOO_MAX_CNXNS"));
    set("reconfigEnabled", yes("ZOO_RECONFIG_ENABLED").into());
    set(
        "quorumListenOnAllIPs",
        yes("ZOO_LISTEN_ALLIPS_ENABLED").into(),
    );
    set("4lw.commands.whitelist", var("ZOO_4LW_COMMANDS_WHITELIST"));
    let servers = var("ZOO_SERVERS");
    let servers: Vec<&str> = servers
        .split([' ', ',', ';'])
        .filter(|s| !s.is_empty())
        .collect();
    let explicit = servers.iter().any(|s| s.contains("::"));
    if servers.len() > 1 {
        for (i, server) in servers.iter().enumerate() {
            let (address, id) = if explicit {
                server
                    .split_once("::")
                    .with_context(|| format!("{pod}: ZOO_SERVERS entry {server} has no ::<id>"))?
            } else {
                (*server, "")
            };
            let id = if explicit {
                id.to_string()
            } else {
                (i + 1).to_string()
            };
            set(
                &format!("server.{id}"),
                format!("{address};{}", var("ZOO_PORT_NUMBER")),
            );
        }
    }
    for (k, v) in seen {
        if let Some(key) = k.strip_prefix("ZOO_CFG_") {
            set(&key.replace('_', "."), v.clone());
        }
    }
    Ok(ZkConfig {
        myid,
        properties: p,
    })
}
