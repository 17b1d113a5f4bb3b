use super::*;
use crate::plan::{BundleInfo, PlanBuilder, PropEdit};

pub(crate) fn plan() -> Vec<u8> {
    let mut b = PlanBuilder::new();
    let sts = ObjectRule {
        field: "spec.kafka.brokers".into(),
        checks: vec![Check::ScaleLimit {
            max: 10,
            exact: false,
            field: "spec.kafka.brokers.idBlockSize".into(),
        }],
        ops: vec![
            Op::Annotation {
                key: "straddle.dev/policy-digest".into(),
                value: "sha256:1".into(),
            },
            Op::Replicas(3),
            Op::OrdinalsStart(10),
            Op::Env {
                container: "main".into(),
                init: false,
                set: vec![
                    EnvVar {
                        name: "REAL".into(),
                        value: EnvValue::FieldRef("metadata.name".into()),
                        before: Some("POD_NAME".into()),
                    },
                    EnvVar {
                        name: "POD_NAME".into(),
                        value: EnvValue::Literal("$(REAL).west".into()),
                        before: None,
                    },
                ],
                remove: vec!["GONE".into()],
            },
        ],
    };
    b.insert("west", ObjectKind::StatefulSet, "ns", "kafka", &sts);
    let cm = ObjectRule {
        field: "spec.kafka".into(),
        checks: vec![],
        ops: vec![Op::Properties {
            data_key: "server.properties".into(),
            edits: vec![PropEdit::Set {
                key: "broker.rack".into(),
                value: "west".into(),
            }],
        }],
    };
    b.insert("west", ObjectKind::ConfigMap, "ns", "cfg", &cm);
    let svc = ObjectRule {
        field: "spec.zookeeper".into(),
        checks: vec![],
        ops: vec![
            Op::Label {
                key: "mirror.linkerd.io/exported".into(),
                value: "remote-discovery".into(),
            },
            Op::Annotation {
                key: "service.cilium.io/global".into(),
                value: "true".into(),
            },
            Op::ServicePort {
                name: "client".into(),
                port: 2181,
            },
            Op::ServicePort {
                name: "server".into(),
                port: 2888,
            },
            Op::PublishNotReadyAddresses(true),
        ],
    };
    b.insert("west", ObjectKind::Service, "ns", "zk-headless", &svc);
    let per_pod = ObjectRule {
        field: "spec.kafka.brokers".into(),
        checks: vec![Check::Indices {
            count: 10,
            beyond: "set the chart value brokers".into(),
        }],
        ops: vec![
            Op::PodIndex {
                selector: "statefulset.kubernetes.io/pod-name".into(),
                label: "pod".into(),
                pod_prefix: "kafka-".into(),
                start: 10,
            },
            Op::IndexedPort {
                name: "external".into(),
                base: 31100,
            },
        ],
    };
    b.insert(
        "west",
        ObjectKind::Service,
        "ns",
        "kafka-#-external",
        &per_pod,
    );
    let refused_below = ObjectRule {
        field: "spec.kafka".into(),
        checks: vec![
            Check::Indices {
                count: 10,
                beyond: "".into(),
            },
            Check::Refuse {
                message: "set the chart value nodeport=false".into(),
            },
        ],
        ops: vec![],
    };
    b.insert(
        "west",
        ObjectKind::Service,
        "ns",
        "kafka-#-nodeport",
        &refused_below,
    );
    let refused = ObjectRule {
        field: "spec.kafka".into(),
        checks: vec![Check::Refuse {
            message: "set the chart value x=false".into(),
        }],
        ops: vec![],
    };
    b.insert(
        "west",
        ObjectKind::Service,
        "ns",
        "kafka-9-external",
        &refused,
    );
    let shaped = ObjectRule {
        field: "spec.kafka.controllers".into(),
        checks: vec![
            Check::Env {
                container: "main".into(),
                init: false,
                name: "ROLES".into(),
                value: "controller".into(),
                message: "set controllerOnly=true".into(),
            },
            Check::ContainerPort {
                container: "main".into(),
                name: "controller".into(),
                port: 9093,
                message: "set the port back".into(),
            },
        ],
        ops: vec![Op::Replicas(3)],
    };
    b.insert("west", ObjectKind::StatefulSet, "ns", "ctl", &shaped);
    let external = ObjectRule {
        field: "spec.kafka.brokers".into(),
        checks: vec![
            Check::NoContainer {
                name: "auto-discovery".into(),
                init: true,
                message: "turn autoDiscovery off".into(),
            },
            Check::PortCount {
                container: "main".into(),
                prefix: "nodeport-".into(),
                min: 3,
                max: 10,
                message: "set brokers".into(),
            },
        ],
        ops: vec![Op::Env {
            container: "prepare".into(),
            init: true,
            set: vec![EnvVar {
                name: "HOSTS".into(),
                value: EnvValue::Prefixed {
                    saved: "CHART_HOSTS".into(),
                    prefix: "-,-,".into(),
                    entries: 2,
                    short: "list every pod".into(),
                },
                before: None,
            }],
            remove: vec![],
        }],
    };
    b.insert("west", ObjectKind::StatefulSet, "ns", "ext", &external);
    let script = ObjectRule {
        field: "spec.kafka.controllers".into(),
        checks: vec![],
        ops: vec![Op::ScriptLine {
            container: "main".into(),
            prefix: "ADVERTISED_HOST=".into(),
            line: "ADVERTISED_HOST=\"k-${ORDINAL}.west\"".into(),
        }],
    };
    b.insert("west", ObjectKind::StatefulSet, "ns", "script", &script);
    let secretive = ObjectRule {
        field: "spec.kafka.controllers".into(),
        checks: vec![Check::NoSecret {
            name: "generated".into(),
            message: "set existingSecret".into(),
        }],
        ops: vec![],
    };
    b.insert(
        "west",
        ObjectKind::StatefulSet,
        "ns",
        "secretive",
        &secretive,
    );
    let families = ObjectRule {
        field: "spec.zookeeper".into(),
        checks: vec![Check::NoVolume {
            name: "config".into(),
            message: "remove configuration".into(),
        }],
        ops: vec![Op::Env {
            container: "main".into(),
            init: false,
            set: vec![EnvVar {
                name: "ZOO_CFG_group_1".into(),
                value: EnvValue::Literal("1:2".into()),
                before: None,
            }],
            remove: vec!["ZOO_CFG_group_*".into()],
        }],
    };
    b.insert("west", ObjectKind::StatefulSet, "ns", "families", &families);
    b.finish(&BundleInfo {
        name: "t".into(),
        spec_digest: "sha256:1".into(),
        clusters: vec!["east".into(), "west".into()],
        namespaces: vec!["ns".into()],
        compiler_version: "0".into(),
        watches: vec![crate::plan::Watch {
            label: "app".into(),
            value: "cp-kafka".into(),
            release_label: "release".into(),
            release: "prod".into(),
            namespace: "ns".into(),
            chart: "cp-kafka".into(),
            field: "spec.kafka".into(),
        }],
    })
}

fn req<'a>(cluster: &'a str, kind: &'a str, name: &'a str, object: &'a str) -> Request<'a> {
    Request {
        cluster,
        operation: Operation::Create,
        kind,
        namespace: "ns",
        name,
        object,
        old_object: None,
    }
}

fn apply(object: &str, verdict: &Verdict) -> String {
    let Verdict::Patch(p) = verdict else {
        panic!("expected a patch, got {verdict:?}")
    };
    let mut doc: serde_json::Value = serde_json::from_str(object).unwrap();
    let patch: json_patch::Patch = serde_json::from_str(p).unwrap();
    json_patch::patch(&mut doc, &patch).unwrap();
    doc.to_string()
}

const STS: &str = r#"{"metadata":{"name":"kafka"},"spec":{"replicas":5,"template":{"spec":{"containers":[{"name":"main","env":[{"name":"A","value":"1"},{"name":"POD_NAME","valueFrom":{"fieldRef":{"fieldPath":"metadata.name"}}},{"name":"GONE","value":"x"},{"name":"POD_NAME","value":"dup"}]}]}}}}"#;

#[test]
fn service_labels_annotations_and_ports_are_end_values() {
    let p = plan();
    for object in [
        r#"{"metadata":{"name":"zk-headless"},"spec":{"clusterIP":"None","ports":[{"name":"peer","port":2888}]}}"#,
        r#"{"metadata":{"name":"zk-headless","labels":{"app":"zk"},"annotations":{}},"spec":{}}"#,
        r#"{"metadata":{"name":"zk-headless"}}"#,
    ] {
        let v = review(&p, &req("west", "Service", "zk-headless", object));
        let after = apply(object, &v);
        let doc: serde_json::Value = serde_json::from_str(&after).unwrap();
        assert_eq!(
            doc["metadata"]["labels"]["mirror.linkerd.io/exported"],
            "remote-discovery"
        );
        assert_eq!(
            doc["metadata"]["annotations"]["service.cilium.io/global"],
            "true"
        );
        let ports: Vec<i64> = doc["spec"]["ports"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["port"].as_i64().unwrap())
            .collect();
        assert!(ports.contains(&2181) && ports.contains(&2888), "{after}");
        assert_eq!(
            ports.len(),
            2,
            "a declared port is not added twice: {after}"
        );
        if let Some(name) = doc["metadata"]["labels"]["app"].as_str() {
            assert_eq!(name, "zk", "other labels are kept");
        }
        let again = review(&p, &req("west", "Service", "zk-headless", &after));
        assert_eq!(again, Verdict::Allow, "not idempotent: {after}");
    }
}

#[test]
fn statefulset_gets_end_values_and_is_idempotent() {
    let p = plan();
    let v = review(&p, &req("west", "StatefulSet", "kafka", STS));
    let out = apply(STS, &v);
    let doc: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(doc["spec"]["replicas"], 3);
    assert_eq!(doc["spec"]["ordinals"]["start"], 10);
    assert_eq!(
        doc["metadata"]["annotations"]["straddle.dev/policy-digest"],
        "sha256:1"
    );
    let env: Vec<&str> = doc["spec"]["template"]["spec"]["containers"][0]["env"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["name"].as_str().unwrap())
        .collect();
    // REAL before POD_NAME; GONE and the later duplicate dropped.
    assert_eq!(env, ["A", "REAL", "POD_NAME"]);
    assert_eq!(
        review(&p, &req("west", "StatefulSet", "kafka", &out)),
        Verdict::Allow
    );
}

#[test]
fn api_server_defaulting_of_field_refs_is_not_a_difference() {
    let p = plan();
    let out = apply(STS, &review(&p, &req("west", "StatefulSet", "kafka", STS)));
    // The API server adds apiVersion to fieldRef; it must still compare equal.
    let defaulted = out.replace(
        r#"{"fieldPath":"metadata.name"}"#,
        r#"{"apiVersion":"v1","fieldPath":"metadata.name"}"#,
    );
    assert_eq!(
        review(&p, &req("west", "StatefulSet", "kafka", &defaulted)),
        Verdict::Allow
    );
}

#[test]
fn script_lines_are_end_values() {
    let p = plan();
    let sts = |args: &str| {
        format!(
            r#"{{"spec":{{"template":{{"spec":{{"containers":[{{"name":"main","command":["/bin/sh","-ec"],"args":[{}]}}]}}}}}}}}"#,
            serde_json::to_string(args).unwrap()
        )
    };
    let object = sts("ORDINAL=1\n  ADVERTISED_HOST=\"k-${ORDINAL}.local\"\nexec run");
    let after = apply(
        &object,
        &review(&p, &req("west", "StatefulSet", "script", &object)),
    );
    let doc: serde_json::Value = serde_json::from_str(&after).unwrap();
    assert_eq!(
        doc["spec"]["template"]["spec"]["containers"][0]["args"][0],
        "ORDINAL=1\n  ADVERTISED_HOST=\"k-${ORDINAL}.west\"\nexec run"
    );
    assert_eq!(
        review(&p, &req("west", "StatefulSet", "script", &after)),
        Verdict::Allow
    );
    let Verdict::Deny(m) = review(&p, &req("west", "StatefulSet", "script", &sts("exec run")))
    else {
        panic!()
    };
    assert!(
        m.contains("no line starting with \"ADVERTISED_HOST=\""),
        "{m}"
    );
}

#[test]
fn a_generated_secret_is_found_wherever_the_pod_uses_it() {
    let p = plan();
    let review_pod = |pod: &str| {
        let object = format!(r#"{{"spec":{{"template":{{"spec":{pod}}}}}}}"#);
        review(&p, &req("west", "StatefulSet", "secretive", &object))
    };
    for pod in [
        r#"{"volumes":[{"name":"v","secret":{"secretName":"generated"}}]}"#,
        r#"{"volumes":[{"name":"v","projected":{"sources":[{"configMap":{"name":"x"}},{"secret":{"name":"generated"}}]}}]}"#,
        r#"{"initContainers":[{"name":"i","env":[{"name":"P","valueFrom":{"secretKeyRef":{"name":"generated","key":"k"}}}]}]}"#,
        r#"{"containers":[{"name":"c","envFrom":[{"secretRef":{"name":"generated"}}]}]}"#,
    ] {
        let verdict = review_pod(pod);
        assert!(
            matches!(&verdict, Verdict::Deny(m) if m.ends_with("uses Secret \"generated\": set existingSecret")),
            "{pod}: {verdict:?}"
        );
    }
    let shared = r#"{"volumes":[{"name":"v","secret":{"secretName":"shared"}}],"containers":[{"name":"c","env":[{"name":"P","valueFrom":{"secretKeyRef":{"name":"shared","key":"k"}}}]}]}"#;
    assert_eq!(review_pod(shared), Verdict::Allow);
}

#[test]
fn a_family_of_env_vars_converges_and_a_mounted_config_is_refused() {
    let p = plan();
    let object = r#"{"spec":{"template":{"spec":{"containers":[{"name":"main","env":[{"name":"A","value":"1"},{"name":"ZOO_CFG_group_2","value":"3"},{"name":"ZOO_CFG_group_1","value":"old"},{"name":"ZOO_CFG_weight_1","value":"1"}]}]}}}}"#;
    let out = apply(
        object,
        &review(&p, &req("west", "StatefulSet", "families", object)),
    );
    let env = &serde_json::from_str::<serde_json::Value>(&out).unwrap()["spec"]["template"]["spec"]
        ["containers"][0]["env"];
    assert_eq!(
        env.to_string(),
        r#"[{"name":"A","value":"1"},{"name":"ZOO_CFG_group_1","value":"1:2"},{"name":"ZOO_CFG_weight_1","value":"1"}]"#
    );
    assert_eq!(
        review(&p, &req("west", "StatefulSet", "families", &out)),
        Verdict::Allow
    );
    let mounted = r#"{"spec":{"template":{"spec":{"volumes":[{"name":"config","configMap":{"name":"zk"}}],"containers":[{"name":"main"}]}}}}"#;
    let verdict = review(&p, &req("west", "StatefulSet", "families", mounted));
    assert!(
        matches!(&verdict, Verdict::Deny(m) if m.ends_with("has volume \"config\": remove configuration")),
        "{verdict:?}"
    );
}

#[test]
fn pattern_names_hold_the_index() {
    use crate::plan::pattern_of;
    assert_eq!(
        pattern_of("kafka-broker-12-external"),
        Some(("kafka-broker-#-external".into(), 12))
    );
    assert_eq!(pattern_of("zk-3"), Some(("zk-#".into(), 3)));
    assert_eq!(pattern_of("a-1-b-2-c"), Some(("a-1-b-#-c".into(), 2)));
    assert_eq!(pattern_of("kafka-headless"), None);
    assert_eq!(pattern_of("kafka-1a-x"), None);
    assert_eq!(pattern_of("x-99999999999-y"), None);
}

#[test]
fn per_pod_services_are_re_pointed_and_idempotent() {
    let p = plan();
    let object = r#"{"metadata":{"name":"kafka-2-external","labels":{"pod":"kafka-2"}},"spec":{"type":"NodePort","selector":{"app":"kafka","statefulset.kubernetes.io/pod-name":"kafka-2"},"ports":[{"name":"external","port":19092,"targetPort":31092,"nodePort":31092}]}}"#;
    let v = review(&p, &req("west", "Service", "kafka-2-external", object));
    let after = apply(object, &v);
    let doc: serde_json::Value = serde_json::from_str(&after).unwrap();
    assert_eq!(
        doc["spec"]["selector"]["statefulset.kubernetes.io/pod-name"],
        "kafka-12"
    );
    assert_eq!(doc["metadata"]["labels"]["pod"], "kafka-12");
    assert_eq!(doc["spec"]["selector"]["app"], "kafka");
    let port = &doc["spec"]["ports"][0];
    assert_eq!(
        (&port["port"], &port["targetPort"], &port["nodePort"]),
        (&19092.into(), &31102.into(), &31102.into())
    );
    assert_eq!(
        review(&p, &req("west", "Service", "kafka-2-external", &after)),
        Verdict::Allow
    );
    let no_port =
        r#"{"metadata":{"name":"kafka-0-external"},"spec":{"ports":[{"name":"other","port":1}]}}"#;
    let Verdict::Deny(m) = review(&p, &req("west", "Service", "kafka-0-external", no_port)) else {
        panic!()
    };
    assert!(m.contains("port \"external\" not found"), "{m}");
    let Verdict::Deny(m) = review(&p, &req("west", "Service", "kafka-10-external", object)) else {
        panic!()
    };
    assert!(
        m.contains("index 10 is beyond 10: set the chart value brokers"),
        "{m}"
    );
    // A refusal that covers the chart's indices only: higher ones are
    // another object of the same shape (e.g. one `straddle render` emits).
    assert!(matches!(
        review(&p, &req("west", "Service", "kafka-3-nodeport", "{}")),
        Verdict::Deny(m) if m.ends_with("nodeport=false")
    ));
    assert_eq!(
        review(&p, &req("west", "Service", "kafka-13-nodeport", "{}")),
        Verdict::Allow
    );
}

#[test]
fn refused_objects_and_contradicting_shapes_are_denied_with_the_fix() {
    let p = plan();
    let Verdict::Deny(m) = review(&p, &req("west", "Service", "kafka-9-external", "{}")) else {
        panic!()
    };
    assert!(m.ends_with("set the chart value x=false"), "{m}");
    let sts = |roles: &str, port: u16| {
        format!(
            r#"{{"spec":{{"replicas":3,"template":{{"spec":{{"containers":[{{"name":"main","ports":[{{"name":"controller","containerPort":{port}}}],"env":[{{"name":"ROLES","value":"{roles}"}}]}}]}}}}}}}}"#
        )
    };
    assert_eq!(
        review(
            &p,
            &req("west", "StatefulSet", "ctl", &sts("controller", 9093))
        ),
        Verdict::Allow
    );
    let Verdict::Deny(m) = review(
        &p,
        &req(
            "west",
            "StatefulSet",
            "ctl",
            &sts("controller,broker", 9093),
        ),
    ) else {
        panic!()
    };
    assert!(
        m.contains("ROLES=controller,broker contradicts") && m.ends_with("controllerOnly=true"),
        "{m}"
    );
    let Verdict::Deny(m) = review(
        &p,
        &req("west", "StatefulSet", "ctl", &sts("controller", 19093)),
    ) else {
        panic!()
    };
    assert!(
        m.contains("is 19093 where the stretch spec needs 9093"),
        "{m}"
    );
}

#[test]
fn unnamed_objects_of_a_stretched_chart_get_a_warning() {
    let p = plan();
    let labelled = |release: &str| {
        format!(r#"{{"metadata":{{"labels":{{"app":"cp-kafka","release":"{release}"}}}}}}"#)
    };
    let Verdict::Warn(m) = review(&p, &req("west", "Service", "other", &labelled("kafka"))) else {
        panic!()
    };
    assert!(
        m.contains("release \"kafka\"") && m.contains("spec.kafka.release"),
        "{m}"
    );
    // The spec's own release: other Services of the chart are fine, an
    // unknown StatefulSet is not.
    assert_eq!(
        review(&p, &req("west", "Service", "other", &labelled("prod"))),
        Verdict::Allow
    );
    assert!(matches!(
        review(&p, &req("west", "StatefulSet", "other", &labelled("prod"))),
        Verdict::Warn(_)
    ));
    assert_eq!(
        review(&p, &req("west", "Service", "other", r#"{"metadata":{}}"#)),
        Verdict::Allow
    );
}

#[test]
fn per_ordinal_lists_are_prefixed_once_and_follow_chart_upgrades() {
    let p = plan();
    let sts = |hosts: &str| {
        format!(
            r#"{{"spec":{{"template":{{"spec":{{"initContainers":[{{"name":"prepare","env":[{{"name":"A","value":"1"}},{{"name":"HOSTS","value":"{hosts}"}}]}}],"containers":[{{"name":"main"}}]}}}}}}}}"#
        )
    };
    let env = |doc: &str| -> Vec<(String, String)> {
        let doc: serde_json::Value = serde_json::from_str(doc).unwrap();
        doc["spec"]["template"]["spec"]["initContainers"][0]["env"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| {
                (
                    e["name"].as_str().unwrap().into(),
                    e["value"].as_str().unwrap().into(),
                )
            })
            .collect()
    };
    let first = sts("a,b");
    let once = apply(
        &first,
        &review(&p, &req("west", "StatefulSet", "ext", &first)),
    );
    let want = |chart: &str| {
        vec![
            ("A".to_string(), "1".to_string()),
            ("CHART_HOSTS".to_string(), chart.to_string()),
            ("HOSTS".to_string(), "-,-,$(CHART_HOSTS)".to_string()),
        ]
    };
    assert_eq!(env(&once), want("a,b"));
    assert_eq!(
        review(&p, &req("west", "StatefulSet", "ext", &once)),
        Verdict::Allow
    );
    // A chart upgrade sends its own list again, next to the saved one.
    let upgraded = once.replace(r#""value":"-,-,$(CHART_HOSTS)""#, r#""value":"c,d""#);
    let again = apply(
        &upgraded,
        &review(&p, &req("west", "StatefulSet", "ext", &upgraded)),
    );
    assert_eq!(env(&again), want("c,d"));
    // A list shorter than this cluster's pods is refused, as sent or saved.
    for short in [sts("a"), once.replace(r#""value":"a,b""#, r#""value":"a""#)] {
        let Verdict::Deny(m) = review(&p, &req("west", "StatefulSet", "ext", &short)) else {
            panic!("{short}")
        };
        assert!(
            m.ends_with(
                "HOSTS holds 1 entries where this cluster's 2 pods each need one: list every pod"
            ),
            "{m}"
        );
    }
    // A chart without the variable is left alone.
    let none = r#"{"spec":{"template":{"spec":{"initContainers":[{"name":"prepare"}],"containers":[{"name":"main"}]}}}}"#;
    assert_eq!(
        review(&p, &req("west", "StatefulSet", "ext", none)),
        Verdict::Allow
    );
    let discovery = r#"{"spec":{"template":{"spec":{"initContainers":[{"name":"prepare"},{"name":"auto-discovery"}]}}}}"#;
    let Verdict::Deny(m) = review(&p, &req("west", "StatefulSet", "ext", discovery)) else {
        panic!()
    };
    assert!(m.ends_with("turn autoDiscovery off"), "{m}");
    let ports = |n: usize| {
        let ports: Vec<String> = (0..n)
            .map(|i| format!(r#"{{"name":"nodeport-{i}","containerPort":{}}}"#, 31090 + i))
            .collect();
        format!(
            r#"{{"spec":{{"template":{{"spec":{{"initContainers":[{{"name":"prepare"}}],"containers":[{{"name":"main","ports":[{}]}}]}}}}}}}}"#,
            ports.join(",")
        )
    };
    assert_eq!(
        review(&p, &req("west", "StatefulSet", "ext", &ports(3))),
        Verdict::Allow
    );
    let Verdict::Deny(m) = review(&p, &req("west", "StatefulSet", "ext", &ports(2))) else {
        panic!()
    };
    assert!(m.contains("declares 2 \"nodeport-*\" ports"), "{m}");
}

#[test]
fn unknown_cluster_is_denied_and_names_the_field() {
    let p = plan();
    let Verdict::Deny(m) = review(&p, &req("north", "Service", "anything", "{}")) else {
        panic!()
    };
    assert!(
        m.contains("spec.clusters") && m.contains("east, west"),
        "{m}"
    );
}

#[test]
fn unnamed_objects_and_other_kinds_pass_untouched() {
    let p = plan();
    assert_eq!(
        review(&p, &req("east", "StatefulSet", "kafka", STS)),
        Verdict::Allow
    );
    assert_eq!(
        review(&p, &req("west", "Secret", "kafka", "{}")),
        Verdict::Allow
    );
    assert_eq!(
        review(&p, &req("west", "StatefulSet", "other", STS)),
        Verdict::Allow
    );
}

#[test]
fn scale_is_limited_to_the_id_block() {
    let p = plan();
    let scale = |n: u32| format!(r#"{{"spec":{{"replicas":{n}}}}}"#);
    assert_eq!(
        review(&p, &req("west", "Scale", "kafka", &scale(10))),
        Verdict::Allow
    );
    let Verdict::Deny(m) = review(&p, &req("west", "Scale", "kafka", &scale(11))) else {
        panic!()
    };
    assert!(m.contains("spec.kafka.brokers.idBlockSize"), "{m}");
}

#[test]
fn configmap_properties_are_edited() {
    let p = plan();
    let cm = r#"{"metadata":{"name":"cfg"},"data":{"server.properties":"a=1"}}"#;
    let out = apply(cm, &review(&p, &req("west", "ConfigMap", "cfg", cm)));
    assert!(out.contains(r#"a=1\nbroker.rack=west"#), "{out}");
    assert_eq!(
        review(&p, &req("west", "ConfigMap", "cfg", &out)),
        Verdict::Allow
    );
}

#[test]
fn malformed_objects_are_denied_not_panics() {
    let p = plan();
    for bad in [
        "",
        "{",
        "[]",
        "null",
        r#"{"spec":{"replicas":"x"}}"#,
        r#"{"spec":{}}"#,
        "\u{0}",
    ] {
        for kind in ["StatefulSet", "ConfigMap", "Scale"] {
            let name = if kind == "ConfigMap" { "cfg" } else { "kafka" };
            assert!(
                matches!(review(&p, &req("west", kind, name, bad)), Verdict::Deny(_)),
                "{kind} {bad:?}"
            );
        }
    }
    assert!(matches!(
        review(b"garbage", &req("west", "Service", "x", "{}")),
        Verdict::Deny(_)
    ));
}
