//! The engine's object views (`straddle_policy::k8s`) read a second way,
//! from a `serde_json::Value`: the oracle the engine's own JSON reader is
//! fuzzed against (`fuzzing::policy_review`).
//!
//! Both sides are turned into the same plain JSON "view" (`view_*` from the
//! engine's types, `oracle_*` from the Value), so they compare with `==`.
//! The rules the oracle states: an optional field may be absent or null; a
//! required one (`name`, `fieldPath`) must be a string; a field of the wrong
//! type refuses the whole object; a key given twice counts once, the last;
//! text kept raw (volumes, envFrom, command, args, targetPort, env entries,
//! secretKeyRef, ...) is compared as the JSON it holds.

use serde_json::{Map, Value, json};
use straddle_policy::k8s;

type Oracle = Result<Value, String>;

/// Panics when the engine's reader and the oracle disagree on `object`,
/// read as each kind of object the engine reads.
pub fn assert_agree(object: &str) {
    let parsed = match serde_json::from_str::<Value>(object) {
        // Within an ulp of f64::MAX the reader rounds correctly and
        // serde_json's default parser may not: either may refuse alone.
        Ok(value) if holds_number_near_f64_max(&value) => return,
        Ok(value) => Some(value),
        // Beyond f64 for serde_json: the reader refuses it too, unless it
        // is within serde_json's rounding error of the limit.
        Err(e) if e.to_string().contains("number out of range") => return,
        Err(_) => None,
    };
    let oracle = |read: fn(&Value) -> Oracle| parsed.as_ref().ok_or(String::new()).and_then(read);
    // A key given twice is one key to the Value (the last), while the
    // reader reads every one: its views differ by design (the API server
    // never sends such an object; it decodes and re-encodes what it gets).
    if has_duplicate_keys(object) {
        return;
    }
    let check = |kind: &str, engine: Oracle, oracle: Oracle| {
        check(kind, object, engine, oracle);
    };
    check(
        "StatefulSet",
        view(k8s::StatefulSet::from_json(object), view_sts),
        oracle(oracle_sts),
    );
    check(
        "Service",
        view(k8s::Service::from_json(object), view_svc),
        oracle(oracle_svc),
    );
    check(
        "ConfigMap",
        view(k8s::ConfigMap::from_json(object), view_cm),
        oracle(oracle_cm),
    );
    check(
        "Scale",
        view(k8s::Scale::from_json(object), |s| json!(s.replicas)),
        oracle(oracle_scale),
    );
    check(
        "Object",
        view(k8s::Object::from_json(object), |o| view_meta(&o.metadata)),
        oracle(|v| as_object(v).and_then(|_| oracle_top_meta(v))),
    );
    check(
        "SecretRefs",
        view(k8s::SecretRefs::from_json(object), |s| json!(s.0)),
        oracle(oracle_secret_refs),
    );
    check(
        "volumes",
        view(k8s::Named::list(object), |l| {
            json!(l.iter().map(|n| &n.name).collect::<Vec<_>>())
        }),
        oracle(oracle_names),
    );
    check(
        "words",
        view(k8s::words(object), |w| json!(w)),
        oracle(oracle_words),
    );
}

fn check(kind: &str, object: &str, engine: Oracle, oracle: Oracle) {
    match (&engine, &oracle) {
        (Ok(a), Ok(b)) => assert_eq!(a, b, "{kind}: the views differ for\n{object}"),
        (Err(_), Err(_)) => {}
        _ => panic!("{kind}: the engine read {engine:?}, the oracle {oracle:?}, for\n{object}"),
    }
}

fn view<T>(read: Result<T, straddle_policy::json::Error>, to_view: impl Fn(&T) -> Value) -> Oracle {
    read.map(|t| to_view(&t)).map_err(|e| e.to_string())
}

/// Whether the value holds a number of at least 1e308 in magnitude.
fn holds_number_near_f64_max(value: &Value) -> bool {
    match value {
        Value::Number(n) => n.as_f64().is_some_and(|x| x.abs() >= 1e308),
        Value::Array(items) => items.iter().any(holds_number_near_f64_max),
        Value::Object(members) => members.values().any(holds_number_near_f64_max),
        _ => false,
    }
}

/// Whether any object in the JSON text has a key twice.
fn has_duplicate_keys(text: &str) -> bool {
    use serde::de::{Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
    struct Walk(bool);
    impl<'de> Deserialize<'de> for Walk {
        fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            d.deserialize_any(WalkVisitor)
        }
    }
    struct WalkVisitor;
    impl<'de> Visitor<'de> for WalkVisitor {
        type Value = Walk;
        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("any JSON value")
        }
        fn visit_map<M: MapAccess<'de>>(self, mut m: M) -> Result<Walk, M::Error> {
            let mut keys = std::collections::BTreeSet::new();
            let mut dup = false;
            while let Some(key) = m.next_key::<String>()? {
                dup |= !keys.insert(key);
                dup |= m.next_value::<Walk>()?.0;
            }
            Ok(Walk(dup))
        }
        fn visit_seq<S: SeqAccess<'de>>(self, mut s: S) -> Result<Walk, S::Error> {
            let mut dup = false;
            while let Some(inner) = s.next_element::<Walk>()? {
                dup |= inner.0;
            }
            Ok(Walk(dup))
        }
        fn visit_bool<E>(self, _: bool) -> Result<Walk, E> {
            Ok(Walk(false))
        }
        fn visit_i64<E>(self, _: i64) -> Result<Walk, E> {
            Ok(Walk(false))
        }
        fn visit_u64<E>(self, _: u64) -> Result<Walk, E> {
            Ok(Walk(false))
        }
        fn visit_f64<E>(self, _: f64) -> Result<Walk, E> {
            Ok(Walk(false))
        }
        fn visit_str<E>(self, _: &str) -> Result<Walk, E> {
            Ok(Walk(false))
        }
        fn visit_unit<E>(self) -> Result<Walk, E> {
            Ok(Walk(false))
        }
    }
    serde_json::from_str::<Walk>(text).is_ok_and(|w| w.0)
}

// ---------------------------------------------------------------- engine side

fn raw(text: Option<&str>) -> Value {
    text.map_or(Value::Null, |t| {
        serde_json::from_str(t).expect("raw text is JSON")
    })
}

fn view_map(map: &Option<k8s::StrMap<'_>>) -> Value {
    let Some(map) = map else { return Value::Null };
    let mut out = Map::new();
    for (k, v) in &map.0 {
        out.insert(k.to_string(), json!(v));
    }
    Value::Object(out)
}

fn view_meta(m: &k8s::Metadata<'_>) -> Value {
    json!({"annotations": view_map(&m.annotations), "labels": view_map(&m.labels)})
}

fn view_sts(s: &k8s::StatefulSet<'_>) -> Value {
    let spec = s.spec.as_ref().map(|spec| {
        let pod = spec.template.as_ref().map(|t| {
            t.spec.as_ref().map(|p| {
                let containers = |cs: &Option<Vec<k8s::Container<'_>>>| {
                    cs.as_ref()
                        .map(|cs| cs.iter().map(view_container).collect::<Vec<_>>())
                };
                json!({
                    "containers": containers(&p.containers),
                    "initContainers": containers(&p.init_containers),
                    "volumes": raw(p.volumes),
                })
            })
        });
        json!({
            "replicas": spec.replicas,
            "ordinals": spec.ordinals.as_ref().map(|o| json!({"start": o.start})),
            "template": pod.map(|p| json!({"spec": p})),
        })
    });
    json!({"metadata": view_meta(&s.metadata), "spec": spec})
}

fn view_container(c: &k8s::Container<'_>) -> Value {
    let env = c.env.as_ref().map(|env| {
        env.iter()
            .map(|e| {
                let from = e.entry.value_from.as_ref().map(|f| {
                    json!({
                        "fieldRef": f.field_ref.as_ref().map(|r| json!({"fieldPath": r.field_path})),
                        "secretKeyRef": raw(f.secret_key_ref),
                        "configMapKeyRef": raw(f.config_map_key_ref),
                        "resourceFieldRef": raw(f.resource_field_ref),
                    })
                });
                json!({
                    "raw": raw(Some(e.raw)),
                    "name": e.entry.name,
                    "value": e.entry.value,
                    "valueFrom": from,
                })
            })
            .collect::<Vec<_>>()
    });
    let ports = c.ports.as_ref().map(|ports| {
        ports
            .iter()
            .map(|p| json!({"name": p.name, "containerPort": p.container_port}))
            .collect::<Vec<_>>()
    });
    json!({
        "name": c.name,
        "env": env,
        "ports": ports,
        "envFrom": raw(c.env_from),
        "command": raw(c.command),
        "args": raw(c.args),
    })
}

fn view_svc(s: &k8s::Service<'_>) -> Value {
    let spec = s.spec.as_ref().map(|spec| {
        let ports = spec.ports.as_ref().map(|ports| {
            ports
                .iter()
                .map(|p| {
                    json!({
                        "name": p.name,
                        "port": p.port,
                        "targetPort": raw(p.target_port),
                        "nodePort": p.node_port,
                    })
                })
                .collect::<Vec<_>>()
        });
        json!({
            "publishNotReadyAddresses": spec.publish_not_ready_addresses,
            "ports": ports,
            "selector": view_map(&spec.selector),
        })
    });
    json!({"metadata": view_meta(&s.metadata), "spec": spec})
}

fn view_cm(c: &k8s::ConfigMap<'_>) -> Value {
    json!({"metadata": view_meta(&c.metadata), "data": view_map(&c.data)})
}

// ---------------------------------------------------------------- oracle side

/// A field of an object (absent and null are the same).
fn field<'v>(v: &'v Value, key: &str) -> Option<&'v Value> {
    v.get(key).filter(|v| !v.is_null())
}

fn as_object(v: &Value) -> Result<&Map<String, Value>, String> {
    v.as_object().ok_or_else(|| format!("not an object: {v}"))
}

fn opt(v: Option<&Value>, read: impl Fn(&Value) -> Oracle) -> Oracle {
    v.map_or(Ok(Value::Null), read)
}

fn string(v: &Value) -> Oracle {
    v.as_str()
        .map(|s| json!(s))
        .ok_or_else(|| format!("not a string: {v}"))
}

fn required_string(v: &Value, key: &str) -> Oracle {
    v.get(key)
        .ok_or_else(|| format!("no {key}"))
        .and_then(string)
}

fn integer(v: &Value) -> Oracle {
    v.as_i64()
        .map(|n| json!(n))
        .ok_or_else(|| format!("not an i64: {v}"))
}

fn boolean(v: &Value) -> Oracle {
    v.as_bool()
        .map(|b| json!(b))
        .ok_or_else(|| format!("not a boolean: {v}"))
}

fn list(v: &Value, read: impl Fn(&Value) -> Oracle) -> Oracle {
    let items = v.as_array().ok_or_else(|| format!("not an array: {v}"))?;
    items
        .iter()
        .map(read)
        .collect::<Result<Vec<_>, _>>()
        .map(Value::Array)
}

fn any(v: Option<&Value>) -> Oracle {
    Ok(v.cloned().unwrap_or(Value::Null))
}

fn oracle_map(v: Option<&Value>) -> Oracle {
    opt(v, |v| {
        let mut out = Map::new();
        for (k, v) in as_object(v)? {
            out.insert(k.clone(), string(v)?);
        }
        Ok(Value::Object(out))
    })
}

fn oracle_meta(v: Option<&Value>) -> Oracle {
    let Some(v) = v else {
        return Ok(json!({"annotations": null, "labels": null}));
    };
    as_object(v)?;
    Ok(json!({
        "annotations": oracle_map(field(v, "annotations"))?,
        "labels": oracle_map(field(v, "labels"))?,
    }))
}

/// `metadata` may be absent but not null (it is not optional in the views).
fn oracle_top_meta(v: &Value) -> Oracle {
    match v.get("metadata") {
        Some(Value::Null) => Err("null metadata".into()),
        other => oracle_meta(other),
    }
}

fn oracle_sts(v: &Value) -> Oracle {
    as_object(v)?;
    let spec = opt(field(v, "spec"), |spec| {
        as_object(spec)?;
        let template = opt(field(spec, "template"), |t| {
            as_object(t)?;
            let pod = opt(field(t, "spec"), |p| {
                as_object(p)?;
                let containers = |key| opt(field(p, key), |cs| list(cs, oracle_container));
                Ok(json!({
                    "containers": containers("containers")?,
                    "initContainers": containers("initContainers")?,
                    "volumes": any(field(p, "volumes"))?,
                }))
            })?;
            Ok(json!({"spec": pod}))
        })?;
        let ordinals = opt(field(spec, "ordinals"), |o| {
            as_object(o)?;
            Ok(json!({"start": opt(field(o, "start"), integer)?}))
        })?;
        Ok(json!({
            "replicas": opt(field(spec, "replicas"), integer)?,
            "ordinals": ordinals,
            "template": template,
        }))
    })?;
    Ok(json!({"metadata": oracle_top_meta(v)?, "spec": spec}))
}

fn oracle_container(c: &Value) -> Oracle {
    as_object(c)?;
    let env = opt(field(c, "env"), |env| {
        list(env, |e| {
            as_object(e)?;
            let from = opt(field(e, "valueFrom"), |f| {
                as_object(f)?;
                let field_ref = opt(field(f, "fieldRef"), |r| {
                    as_object(r)?;
                    Ok(json!({"fieldPath": required_string(r, "fieldPath")?}))
                })?;
                Ok(json!({
                    "fieldRef": field_ref,
                    "secretKeyRef": any(field(f, "secretKeyRef"))?,
                    "configMapKeyRef": any(field(f, "configMapKeyRef"))?,
                    "resourceFieldRef": any(field(f, "resourceFieldRef"))?,
                }))
            })?;
            Ok(json!({
                "raw": e,
                "name": required_string(e, "name")?,
                "value": opt(field(e, "value"), string)?,
                "valueFrom": from,
            }))
        })
    })?;
    let ports = opt(field(c, "ports"), |ports| {
        list(ports, |p| {
            as_object(p)?;
            Ok(json!({
                "name": opt(field(p, "name"), string)?,
                "containerPort": opt(field(p, "containerPort"), integer)?,
            }))
        })
    })?;
    Ok(json!({
        "name": required_string(c, "name")?,
        "env": env,
        "ports": ports,
        "envFrom": any(field(c, "envFrom"))?,
        "command": any(field(c, "command"))?,
        "args": any(field(c, "args"))?,
    }))
}

fn oracle_svc(v: &Value) -> Oracle {
    as_object(v)?;
    let spec = opt(field(v, "spec"), |spec| {
        as_object(spec)?;
        let ports = opt(field(spec, "ports"), |ports| {
            list(ports, |p| {
                as_object(p)?;
                Ok(json!({
                    "name": opt(field(p, "name"), string)?,
                    "port": opt(field(p, "port"), integer)?,
                    "targetPort": any(field(p, "targetPort"))?,
                    "nodePort": opt(field(p, "nodePort"), integer)?,
                }))
            })
        })?;
        Ok(json!({
            "publishNotReadyAddresses": opt(field(spec, "publishNotReadyAddresses"), boolean)?,
            "ports": ports,
            "selector": oracle_map(field(spec, "selector"))?,
        }))
    })?;
    Ok(json!({"metadata": oracle_top_meta(v)?, "spec": spec}))
}

fn oracle_cm(v: &Value) -> Oracle {
    as_object(v)?;
    Ok(json!({"metadata": oracle_top_meta(v)?, "data": oracle_map(field(v, "data"))?}))
}

fn oracle_scale(v: &Value) -> Oracle {
    as_object(v)?;
    opt(field(v, "spec"), |spec| {
        as_object(spec)?;
        opt(field(spec, "replicas"), integer)
    })
}

fn oracle_secret_refs(v: &Value) -> Oracle {
    fn walk(v: &Value, out: &mut Vec<Value>) -> Result<(), String> {
        match v {
            Value::Object(map) => {
                for (k, v) in map {
                    if matches!(k.as_str(), "secret" | "secretRef" | "secretKeyRef") {
                        as_object(v)?;
                        for key in ["name", "secretName"] {
                            if let Some(name) = field(v, key) {
                                out.push(string(name)?);
                            }
                        }
                    } else {
                        walk(v, out)?;
                    }
                }
            }
            Value::Array(items) => {
                for item in items {
                    walk(item, out)?;
                }
            }
            _ => {}
        }
        Ok(())
    }
    let mut out = Vec::new();
    walk(v, &mut out)?;
    Ok(Value::Array(out))
}

fn oracle_names(v: &Value) -> Oracle {
    list(v, |n| {
        as_object(n)?;
        required_string(n, "name")
    })
}

fn oracle_words(v: &Value) -> Oracle {
    list(v, string)
}
