//! The Helm chart, rendered by Helm's own engine (Helm v4 Go SDK through
//! helm-python-sdk, `helm lint --strict` included) for default and
//! non-default values: every object must fit its Kubernetes API type, and
//! the webhook configuration, Deployment, RBAC and certificates must have
//! the properties deploy/README.md promises.

use std::collections::{BTreeMap, BTreeSet};

use anyhow::Result;
use k8s_openapi::api::admissionregistration::v1::MutatingWebhookConfiguration;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::api::rbac::v1::{ClusterRole, Role};
use serde_json::{Value, json};
use straddle_deploy_tests::{Rendered, by_key, check_typed, render_chart, selector_matches, typed};

const NS: &str = "straddle-system";
const RELEASE: &str = "straddle-webhook";

fn render(values: Value) -> Option<BTreeMap<String, Value>> {
    match render_chart(RELEASE, NS, &values).unwrap() {
        None => None,
        Some(Rendered::Objects(objects)) => {
            for object in &objects {
                check_typed(object).unwrap();
            }
            Some(by_key(&objects).unwrap())
        }
        Some(Rendered::Refused(why)) => panic!("the chart refused {values}: {why}"),
    }
}

fn get<T: serde::de::DeserializeOwned>(objects: &BTreeMap<String, Value>, key: &str) -> T {
    let object = objects
        .get(key)
        .unwrap_or_else(|| panic!("no {key} among {:?}", objects.keys()));
    typed(object).unwrap()
}

fn kinds(objects: &BTreeMap<String, Value>) -> BTreeSet<String> {
    objects.keys().cloned().collect()
}

fn args(deployment: &Deployment) -> Vec<String> {
    let pod = deployment
        .spec
        .as_ref()
        .unwrap()
        .template
        .spec
        .as_ref()
        .unwrap();
    pod.containers[0].args.clone().unwrap_or_default()
}

fn arg<'a>(args: &'a [String], flag: &str) -> Option<&'a str> {
    args.iter()
        .find_map(|a| a.strip_prefix(&format!("{flag}=")))
}

/// The properties every rendering of the webhook configuration has.
fn assert_webhook_basics(config: &MutatingWebhookConfiguration, service: &Service) {
    let webhooks = config.webhooks.as_ref().unwrap();
    assert_eq!(webhooks.len(), 1);
    let w = &webhooks[0];
    assert_eq!(w.admission_review_versions, vec!["v1".to_string()]);
    assert_eq!(w.side_effects, "None");
    assert_eq!(w.match_policy.as_deref(), Some("Equivalent"));
    let timeout = w.timeout_seconds.unwrap();
    assert!((1..=10).contains(&timeout), "timeoutSeconds {timeout}");
    // The Service the API server calls, on the path the webhook serves.
    let svc = w.client_config.service.as_ref().unwrap();
    assert_eq!(Some(&svc.name), service.metadata.name.as_ref());
    assert_eq!(Some(&svc.namespace), service.metadata.namespace.as_ref());
    assert_eq!(svc.path.as_deref(), Some("/mutate"));
    let port = &service.spec.as_ref().unwrap().ports.as_ref().unwrap()[0];
    assert_eq!(svc.port, Some(port.port));
    assert!(w.client_config.url.is_none());
    // StatefulSets (+ scale), Services, ConfigMaps; CREATE and UPDATE only.
    let mut resources = BTreeSet::new();
    for rule in w.rules.as_ref().unwrap() {
        assert_eq!(
            rule.operations.as_deref().unwrap(),
            ["CREATE".to_string(), "UPDATE".to_string()]
        );
        assert_eq!(rule.scope.as_deref(), Some("Namespaced"));
        assert_eq!(rule.api_versions.as_deref().unwrap(), ["v1".to_string()]);
        for group in rule.api_groups.as_ref().unwrap() {
            for resource in rule.resources.as_ref().unwrap() {
                resources.insert(format!("{group}/{resource}"));
            }
        }
    }
    let expected: BTreeSet<String> = [
        "apps/statefulsets",
        "apps/statefulsets/scale",
        "/services",
        "/configmaps",
        // Reviewed for refusals only (a chart's policy that drops peers).
        "networking.k8s.io/networkpolicies",
    ]
    .map(String::from)
    .into();
    assert_eq!(resources, expected);
    // CEL conditions: named uniquely, within the API's limit of 64.
    let conditions = w.match_conditions.as_ref().unwrap();
    let names: BTreeSet<&str> = conditions.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(names.len(), conditions.len());
    assert!(!conditions.is_empty() && conditions.len() <= 64);
    assert!(conditions.iter().all(|c| !c.expression.trim().is_empty()));
}

/// Whether the webhook's namespaceSelector selects a namespace (its name
/// label is set by the API server; `extra` labels as the user sets them).
fn selects(config: &MutatingWebhookConfiguration, namespace: &str, extra: &[(&str, &str)]) -> bool {
    let selector = serde_json::to_value(
        config.webhooks.as_ref().unwrap()[0]
            .namespace_selector
            .as_ref()
            .unwrap(),
    )
    .unwrap();
    let mut labels: BTreeMap<&str, &str> = extra.iter().copied().collect();
    labels.insert("kubernetes.io/metadata.name", namespace);
    selector_matches(&selector, &labels).unwrap()
}

#[test]
fn chart_with_default_values() {
    let Some(objects) = render(json!({"cluster": "east"})) else {
        return;
    };
    let full = RELEASE; // the release name contains the chart name
    assert_eq!(
        kinds(&objects),
        [
            format!("ClusterRole//{full}-ca-bundle"),
            format!("ClusterRoleBinding//{full}-ca-bundle"),
            format!("Deployment/{NS}/{full}"),
            format!("MutatingWebhookConfiguration//{full}"),
            format!("PodDisruptionBudget/{NS}/{full}"),
            format!("PriorityClass//{full}"),
            format!("Role/{NS}/{full}-certs"),
            format!("RoleBinding/{NS}/{full}-certs"),
            format!("Secret/{NS}/{full}-certs"),
            format!("Service/{NS}/{full}"),
            format!("Service/{NS}/{full}-metrics"),
            format!("ServiceAccount/{NS}/{full}"),
        ]
        .into_iter()
        .collect()
    );

    let service: Service = get(&objects, &format!("Service/{NS}/{full}"));
    let config: MutatingWebhookConfiguration =
        get(&objects, &format!("MutatingWebhookConfiguration//{full}"));
    assert_webhook_basics(&config, &service);
    let w = &config.webhooks.as_ref().unwrap()[0];
    assert_eq!(w.failure_policy.as_deref(), Some("Fail"));
    assert_eq!(w.reinvocation_policy.as_deref(), Some("IfNeeded"));
    // Self-managed: the webhook fills caBundle; no cert-manager annotation.
    assert!(w.client_config.ca_bundle.is_none());
    assert!(config.metadata.annotations.is_none());
    // Opt-in by namespace label; never its own namespace or kube-system.
    let opted_in = [("straddle.dev/stretch", "enabled")];
    assert!(selects(&config, "confluent", &opted_in));
    assert!(!selects(&config, "confluent", &[]));
    assert!(!selects(&config, NS, &opted_in));
    assert!(!selects(&config, "kube-system", &opted_in));
    assert!(w.object_selector.is_none());

    // The Deployment: 2 replicas spread over nodes, locked down, probed.
    let deployment: Deployment = get(&objects, &format!("Deployment/{NS}/{full}"));
    let spec = deployment.spec.as_ref().unwrap();
    assert_eq!(spec.replicas, Some(2));
    let pod = spec.template.spec.as_ref().unwrap();
    let pod_labels = spec
        .template
        .metadata
        .as_ref()
        .unwrap()
        .labels
        .clone()
        .unwrap();
    let anti = pod
        .affinity
        .as_ref()
        .unwrap()
        .pod_anti_affinity
        .as_ref()
        .unwrap();
    let term = &anti
        .preferred_during_scheduling_ignored_during_execution
        .as_ref()
        .unwrap()[0];
    assert_eq!(
        term.pod_affinity_term.topology_key,
        "kubernetes.io/hostname"
    );
    assert_eq!(
        term.pod_affinity_term
            .label_selector
            .as_ref()
            .unwrap()
            .match_labels
            .as_ref()
            .unwrap(),
        &spec.selector.match_labels.clone().unwrap()
    );
    assert_eq!(pod.priority_class_name.as_deref(), Some(full));
    let psc = pod.security_context.as_ref().unwrap();
    assert_eq!(psc.run_as_non_root, Some(true));
    assert!(psc.run_as_user.unwrap() > 0);
    assert_eq!(
        psc.seccomp_profile.as_ref().unwrap().type_,
        "RuntimeDefault"
    );
    let container = &pod.containers[0];
    let csc = container.security_context.as_ref().unwrap();
    assert_eq!(csc.read_only_root_filesystem, Some(true));
    assert_eq!(csc.allow_privilege_escalation, Some(false));
    assert_eq!(
        csc.capabilities.as_ref().unwrap().drop.as_deref().unwrap(),
        ["ALL".to_string()]
    );
    let resources = container.resources.as_ref().unwrap();
    for (what, list) in [
        ("requests", &resources.requests),
        ("limits", &resources.limits),
    ] {
        let list = list.as_ref().unwrap_or_else(|| panic!("no {what}"));
        assert!(
            list.contains_key("cpu") && list.contains_key("memory"),
            "{what}"
        );
    }
    // 12 MiB idle: the memory limit leaves room, the request is not padded.
    assert_eq!(resources.limits.as_ref().unwrap()["memory"].0, "128Mi");
    let probe_port = |p: &Option<k8s_openapi::api::core::v1::Probe>| {
        let get = p.as_ref().unwrap().http_get.as_ref().unwrap();
        (
            get.path.clone().unwrap(),
            serde_json::to_value(&get.port).unwrap(),
        )
    };
    assert_eq!(
        probe_port(&container.readiness_probe),
        ("/readyz".into(), json!("http-metrics"))
    );
    assert_eq!(
        probe_port(&container.liveness_probe),
        ("/healthz".into(), json!("http-metrics"))
    );
    let named_port = |name: &str| {
        container
            .ports
            .as_ref()
            .unwrap()
            .iter()
            .find(|p| p.name.as_deref() == Some(name))
            .unwrap()
            .container_port
    };
    let args = args(&deployment);
    assert_eq!(arg(&args, "--cluster"), Some("east"));
    assert_eq!(
        arg(&args, "--listen"),
        Some(format!("0.0.0.0:{}", named_port("https")).as_str())
    );
    assert_eq!(
        arg(&args, "--probe-listen"),
        Some(format!("0.0.0.0:{}", named_port("http-metrics")).as_str())
    );
    // Writable paths are emptyDirs: the cache, and the self-managed TLS files.
    let volumes = pod.volumes.as_ref().unwrap();
    let volume = |name: &str| volumes.iter().find(|v| v.name == name).unwrap();
    let mount = |name: &str| {
        container
            .volume_mounts
            .as_ref()
            .unwrap()
            .iter()
            .find(|m| m.name == name)
            .unwrap()
    };
    assert!(volume("cache").empty_dir.is_some());
    assert_eq!(
        arg(&args, "--cache-dir"),
        Some(mount("cache").mount_path.as_str())
    );
    assert!(volume("tls").empty_dir.is_some());
    assert!(
        arg(&args, "--tls-cert")
            .unwrap()
            .starts_with(&mount("tls").mount_path)
    );
    assert_eq!(
        volume("policy").config_map.as_ref().unwrap().name,
        "straddle-policy"
    );
    assert_eq!(
        arg(&args, "--policy"),
        Some(format!("{}/policy.wasm", mount("policy").mount_path).as_str())
    );
    // The self-managed flags name the objects the chart makes, and RBAC
    // allows exactly those, nothing else.
    assert!(args.contains(&"--self-managed-certs".to_string()));
    assert_eq!(pod.automount_service_account_token, Some(true));
    let secret = arg(&args, "--cert-secret").unwrap();
    assert!(objects.contains_key(&format!("Secret/{NS}/{secret}")));
    assert_eq!(
        arg(&args, "--webhook-config"),
        config.metadata.name.as_deref()
    );
    assert_eq!(
        arg(&args, "--service-name"),
        service.metadata.name.as_deref()
    );
    assert_eq!(arg(&args, "--namespace"), Some(NS));
    let role: Role = get(&objects, &format!("Role/{NS}/{full}-certs"));
    let rules = role.rules.unwrap();
    assert_eq!(rules.len(), 1);
    assert_eq!(
        rules[0].resources.as_deref().unwrap(),
        ["secrets".to_string()]
    );
    assert_eq!(
        rules[0].resource_names.as_deref().unwrap(),
        [secret.to_string()]
    );
    assert_eq!(rules[0].verbs, ["get".to_string(), "update".to_string()]);
    let cluster_role: ClusterRole = get(&objects, &format!("ClusterRole//{full}-ca-bundle"));
    let rules = cluster_role.rules.unwrap();
    assert_eq!(rules.len(), 1);
    assert_eq!(
        rules[0].resources.as_deref().unwrap(),
        ["mutatingwebhookconfigurations".to_string()]
    );
    assert_eq!(
        rules[0].resource_names.as_deref().unwrap(),
        [config.metadata.name.clone().unwrap()]
    );
    assert_eq!(rules[0].verbs, ["get".to_string(), "patch".to_string()]);
    for binding in [
        format!("RoleBinding/{NS}/{full}-certs"),
        format!("ClusterRoleBinding//{full}-ca-bundle"),
    ] {
        let subjects = &objects[&binding]["subjects"];
        assert_eq!(
            subjects,
            &json!([{"kind": "ServiceAccount", "name": pod.service_account_name.clone().unwrap(), "namespace": NS}])
        );
    }

    // The PodDisruptionBudget keeps one replica through node drains.
    let pdb: PodDisruptionBudget = get(&objects, &format!("PodDisruptionBudget/{NS}/{full}"));
    let pdb = pdb.spec.unwrap();
    assert_eq!(serde_json::to_value(pdb.min_available).unwrap(), json!(1));
    let selector = serde_json::to_value(pdb.selector.unwrap()).unwrap();
    let pod_labels: BTreeMap<&str, &str> = pod_labels
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    assert!(selector_matches(&selector, &pod_labels).unwrap());
}

#[test]
fn chart_with_cert_manager_and_other_values() {
    let reference = format!(
        "oci://registry.example.com/stretch/confluent@sha256:{}",
        "ab".repeat(32)
    );
    let Some(objects) = render(json!({
        "cluster": "cluster-1",
        "fullnameOverride": "straddle",
        "replicaCount": 3,
        "podAntiAffinity": "hard",
        "policy": {"reference": reference},
        "certificates": {"mode": "cert-manager"},
        "priorityClass": {"create": false, "name": "system-cluster-critical"},
        "webhook": {
            "failurePolicy": "Ignore",
            "timeoutSeconds": 3,
            "reinvocationPolicy": "Never",
            "namespaces": ["confluent", "kafka"],
            "objectSelector": {"matchLabels": {"app.kubernetes.io/instance": "confluent"}},
            "extraMatchConditions": [{"name": "not-test", "expression": "object.metadata.name != 'test'"}],
        },
        "metrics": {"service": false},
        "podDisruptionBudget": {"enabled": false},
        "image": {"digest": format!("sha256:{}", "cd".repeat(32))},
    })) else {
        return;
    };
    let keys = kinds(&objects);
    // No Secret, RBAC, PriorityClass, PDB or metrics Service; cert-manager objects instead.
    assert!(
        keys.iter().all(|k| !k.starts_with("Secret/")
            && !k.contains("Role")
            && !k.starts_with("PriorityClass/")
            && !k.starts_with("PodDisruptionBudget/")),
        "{keys:?}"
    );
    assert!(!keys.contains(&format!("Service/{NS}/straddle-metrics")));
    for k in [
        "Issuer/{NS}/straddle-selfsigned",
        "Issuer/{NS}/straddle-ca",
        "Certificate/{NS}/straddle-ca",
        "Certificate/{NS}/straddle-serving",
    ] {
        assert!(
            keys.contains(&k.replace("{NS}", NS)),
            "{k} missing from {keys:?}"
        );
    }
    let service: Service = get(&objects, &format!("Service/{NS}/straddle"));
    let config: MutatingWebhookConfiguration =
        get(&objects, "MutatingWebhookConfiguration//straddle");
    assert_webhook_basics(&config, &service);
    let w = &config.webhooks.as_ref().unwrap()[0];
    assert_eq!(w.failure_policy.as_deref(), Some("Ignore"));
    assert_eq!(w.reinvocation_policy.as_deref(), Some("Never"));
    assert_eq!(w.timeout_seconds, Some(3));
    assert!(selects(&config, "confluent", &[]) && selects(&config, "kafka", &[]));
    assert!(!selects(
        &config,
        "default",
        &[("straddle.dev/stretch", "enabled")]
    ));
    assert!(w.object_selector.as_ref().unwrap().match_labels.is_some());
    assert!(
        w.match_conditions
            .as_ref()
            .unwrap()
            .iter()
            .any(|c| c.name == "not-test")
    );
    // cert-manager's CA injector reads the serving Certificate, whose Secret
    // the pod mounts and whose names cover the Service.
    let inject = &config.metadata.annotations.as_ref().unwrap()["cert-manager.io/inject-ca-from"];
    assert_eq!(inject, &format!("{NS}/straddle-serving"));
    let cert = &objects[&format!("Certificate/{NS}/straddle-serving")];
    let dns: Vec<&str> = cert["spec"]["dnsNames"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert!(
        dns.contains(&format!("straddle.{NS}.svc").as_str()),
        "{dns:?}"
    );
    assert_eq!(cert["spec"]["issuerRef"]["name"], "straddle-ca");
    let deployment: Deployment = get(&objects, &format!("Deployment/{NS}/straddle"));
    let spec = deployment.spec.as_ref().unwrap();
    assert_eq!(spec.replicas, Some(3));
    let pod = spec.template.spec.as_ref().unwrap();
    assert_eq!(
        pod.priority_class_name.as_deref(),
        Some("system-cluster-critical")
    );
    assert_eq!(pod.automount_service_account_token, Some(false));
    assert!(
        pod.affinity
            .as_ref()
            .unwrap()
            .pod_anti_affinity
            .as_ref()
            .unwrap()
            .required_during_scheduling_ignored_during_execution
            .is_some()
    );
    let tls = pod
        .volumes
        .as_ref()
        .unwrap()
        .iter()
        .find(|v| v.name == "tls")
        .unwrap();
    assert_eq!(
        tls.secret.as_ref().unwrap().secret_name,
        cert["spec"]["secretName"].as_str().map(String::from)
    );
    assert!(
        pod.volumes
            .as_ref()
            .unwrap()
            .iter()
            .all(|v| v.name != "policy")
    );
    let args = args(&deployment);
    assert_eq!(arg(&args, "--policy"), Some(reference.as_str()));
    assert_eq!(arg(&args, "--cluster"), Some("cluster-1"));
    assert!(
        !args
            .iter()
            .any(|a| a.contains("self-managed") || a.starts_with("--cert-secret"))
    );
    assert!(
        pod.containers[0]
            .image
            .as_deref()
            .unwrap()
            .contains("@sha256:cdcd")
    );

    // An existing issuer instead of the chart's own CA.
    let Some(objects) = render(json!({
        "cluster": "east",
        "certificates": {"mode": "cert-manager", "certManager": {"issuerRef": {"name": "corp-ca", "kind": "ClusterIssuer", "group": "cert-manager.io"}}},
    })) else {
        return;
    };
    assert!(objects.keys().all(|k| !k.starts_with("Issuer/")));
    let cert = &objects[&format!("Certificate/{NS}/{RELEASE}-serving")];
    assert_eq!(
        cert["spec"]["issuerRef"],
        json!({"name": "corp-ca", "kind": "ClusterIssuer", "group": "cert-manager.io"})
    );
}

#[test]
fn chart_refuses_bad_values_by_name() -> Result<()> {
    let cases = [
        (json!({}), "`cluster` is required"),
        (json!({"cluster": "East_1"}), "cluster \"East_1\""),
        (
            json!({"cluster": "east", "certificates": {"mode": "vault"}}),
            "certificates.mode \"vault\"",
        ),
        (
            json!({"cluster": "east", "webhook": {"timeoutSeconds": 31}}),
            "webhook.timeoutSeconds 31",
        ),
        (
            json!({"cluster": "east", "webhook": {"failurePolicy": "fail"}}),
            "webhook.failurePolicy \"fail\"",
        ),
        (
            json!({"cluster": "east", "policy": {"reference": "oci://r.example/p:latest"}}),
            "policy.reference",
        ),
        (
            json!({"cluster": "east", "policy": {"configMap": {"name": ""}}}),
            "policy.configMap.name",
        ),
    ];
    for (values, expected) in cases {
        match render_chart(RELEASE, NS, &values)? {
            None => return Ok(()),
            Some(Rendered::Objects(_)) => panic!("{values} rendered"),
            Some(Rendered::Refused(why)) => {
                assert!(
                    why.contains(expected),
                    "{values}: {why:?} should name {expected:?}"
                )
            }
        }
    }
    Ok(())
}
