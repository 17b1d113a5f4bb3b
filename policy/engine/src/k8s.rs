//! Partial, borrowed views of the Kubernetes objects the engine reads.
//!
//! Only the fields the engine compares are decoded; everything else is
//! skipped by serde without allocation. Env entries are kept as raw JSON so
//! that untouched ones are written back exactly as they came.

use std::borrow::Cow;

use serde::Deserialize;
use serde::de::{Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::value::RawValue;

/// A string map kept as pairs in document order: lookups touch a handful of
/// keys, and a Vec costs far less code in the wasm guest than a BTreeMap.
#[derive(Default)]
pub struct StrMap<'a>(pub Vec<(Cow<'a, str>, Cow<'a, str>)>);

impl StrMap<'_> {
    pub fn get(&self, key: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_ref())
    }
}

impl<'de: 'a, 'a> Deserialize<'de> for StrMap<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<'a>(std::marker::PhantomData<&'a ()>);
        impl<'de: 'a, 'a> Visitor<'de> for V<'a> {
            type Value = StrMap<'a>;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a map of strings")
            }
            fn visit_map<M: MapAccess<'de>>(self, mut m: M) -> Result<StrMap<'a>, M::Error> {
                let mut pairs = Vec::new();
                while let Some((k, v)) = m.next_entry::<Cow<'a, str>, Cow<'a, str>>()? {
                    pairs.push((k, v));
                }
                Ok(StrMap(pairs))
            }
        }
        d.deserialize_map(V(std::marker::PhantomData))
    }
}

#[derive(Deserialize, Default)]
pub struct Metadata<'a> {
    #[serde(borrow, default)]
    pub annotations: Option<StrMap<'a>>,
    #[serde(borrow, default)]
    pub labels: Option<StrMap<'a>>,
}

/// Any object, for its labels.
#[derive(Deserialize)]
pub struct Object<'a> {
    #[serde(borrow, default)]
    pub metadata: Metadata<'a>,
}

#[derive(Deserialize)]
pub struct StatefulSet<'a> {
    #[serde(borrow, default)]
    pub metadata: Metadata<'a>,
    #[serde(borrow, default)]
    pub spec: Option<StatefulSetSpec<'a>>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct StatefulSetSpec<'a> {
    #[serde(default)]
    pub replicas: Option<i64>,
    #[serde(default)]
    pub ordinals: Option<Ordinals>,
    #[serde(borrow, default)]
    pub template: Option<PodTemplate<'a>>,
}

#[derive(Deserialize, Default)]
pub struct Ordinals {
    #[serde(default)]
    pub start: Option<i64>,
}

#[derive(Deserialize, Default)]
pub struct PodTemplate<'a> {
    #[serde(borrow, default)]
    pub spec: Option<PodSpec<'a>>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct PodSpec<'a> {
    #[serde(borrow, default)]
    pub containers: Option<Vec<Container<'a>>>,
    #[serde(borrow, default)]
    pub init_containers: Option<Vec<Container<'a>>>,
    /// Read only by the checks that need it ([`SecretRefs`]).
    #[serde(borrow, default)]
    pub volumes: Option<&'a RawValue>,
}

/// Every Secret a piece of a pod spec references, wherever it sits: a
/// `secret` volume (`secretName`) or projected source (`name`), an env
/// `secretKeyRef` or an `envFrom` `secretRef`. One recursive walk instead of
/// a type per place keeps the guest small.
#[derive(Default)]
pub struct SecretRefs<'a>(pub Vec<Cow<'a, str>>);

/// The object under a `secret`, `secretRef` or `secretKeyRef` key.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SecretRef<'a> {
    #[serde(borrow, default)]
    pub name: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    pub secret_name: Option<Cow<'a, str>>,
}

impl<'de: 'a, 'a> Deserialize<'de> for SecretRefs<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<'a>(std::marker::PhantomData<&'a ()>);
        impl<'de: 'a, 'a> Visitor<'de> for V<'a> {
            type Value = SecretRefs<'a>;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("any JSON value")
            }
            fn visit_map<M: MapAccess<'de>>(self, mut m: M) -> Result<SecretRefs<'a>, M::Error> {
                let mut out = SecretRefs::default();
                while let Some(key) = m.next_key::<Cow<'de, str>>()? {
                    if matches!(key.as_ref(), "secret" | "secretRef" | "secretKeyRef") {
                        let r: SecretRef<'a> = m.next_value()?;
                        out.0.extend(r.name.into_iter().chain(r.secret_name));
                    } else {
                        out.0.extend(m.next_value::<SecretRefs<'a>>()?.0);
                    }
                }
                Ok(out)
            }
            fn visit_seq<S: SeqAccess<'de>>(self, mut s: S) -> Result<SecretRefs<'a>, S::Error> {
                let mut out = SecretRefs::default();
                while let Some(inner) = s.next_element::<SecretRefs<'a>>()? {
                    out.0.extend(inner.0);
                }
                Ok(out)
            }
            fn visit_str<E>(self, _: &str) -> Result<SecretRefs<'a>, E> {
                Ok(SecretRefs::default())
            }
            fn visit_bool<E>(self, _: bool) -> Result<SecretRefs<'a>, E> {
                Ok(SecretRefs::default())
            }
            fn visit_i64<E>(self, _: i64) -> Result<SecretRefs<'a>, E> {
                Ok(SecretRefs::default())
            }
            fn visit_u64<E>(self, _: u64) -> Result<SecretRefs<'a>, E> {
                Ok(SecretRefs::default())
            }
            fn visit_f64<E>(self, _: f64) -> Result<SecretRefs<'a>, E> {
                Ok(SecretRefs::default())
            }
            fn visit_unit<E>(self) -> Result<SecretRefs<'a>, E> {
                Ok(SecretRefs::default())
            }
        }
        d.deserialize_any(V(std::marker::PhantomData))
    }
}

/// Any list entry with a `name` (a volume), read for its name only.
#[derive(Deserialize)]
pub struct Named<'a> {
    #[serde(borrow)]
    pub name: Cow<'a, str>,
}

#[derive(Deserialize)]
pub struct Container<'a> {
    #[serde(borrow)]
    pub name: Cow<'a, str>,
    #[serde(borrow, default)]
    pub env: Option<Vec<Env<'a>>>,
    #[serde(borrow, default)]
    pub ports: Option<Vec<ContainerPort<'a>>>,
    // Kept raw and read only by the rules that need them: a chart's
    // script can be kilobytes of escaped text.
    #[serde(borrow, default, rename = "envFrom")]
    pub env_from: Option<&'a RawValue>,
    #[serde(borrow, default)]
    pub command: Option<&'a RawValue>,
    #[serde(borrow, default)]
    pub args: Option<&'a RawValue>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ContainerPort<'a> {
    #[serde(borrow, default)]
    pub name: Option<Cow<'a, str>>,
    #[serde(default)]
    pub container_port: Option<i64>,
}

/// One entry of a container's `env`: decoded once per review for every
/// rule that reads it, and kept as sent, so that entries the policy leaves
/// alone are written back exactly as they came.
pub struct Env<'a> {
    pub raw: &'a RawValue,
    pub entry: EnvEntry<'a>,
}

impl<'de: 'a, 'a> Deserialize<'de> for Env<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let raw = <&'a RawValue>::deserialize(d)?;
        let entry = serde_json::from_str(raw.get())
            .map_err(|e| serde::de::Error::custom(format_args!("an env entry: {e}")))?;
        Ok(Env { raw, entry })
    }
}

/// The parts of one `EnvVar` the engine compares.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EnvEntry<'a> {
    #[serde(borrow)]
    pub name: Cow<'a, str>,
    #[serde(borrow, default)]
    pub value: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    pub value_from: Option<ValueFrom<'a>>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ValueFrom<'a> {
    #[serde(borrow, default)]
    pub field_ref: Option<FieldRef<'a>>,
    // Any other source (secretKeyRef, configMapKeyRef, ...) makes the entry
    // differ from every value the engine writes.
    #[serde(borrow, default)]
    pub secret_key_ref: Option<&'a RawValue>,
    #[serde(borrow, default)]
    pub config_map_key_ref: Option<&'a RawValue>,
    #[serde(borrow, default)]
    pub resource_field_ref: Option<&'a RawValue>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FieldRef<'a> {
    #[serde(borrow)]
    pub field_path: Cow<'a, str>,
}

#[derive(Deserialize)]
pub struct Service<'a> {
    #[serde(borrow, default)]
    pub metadata: Metadata<'a>,
    #[serde(borrow, default)]
    pub spec: Option<ServiceSpec<'a>>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct ServiceSpec<'a> {
    #[serde(default)]
    pub publish_not_ready_addresses: Option<bool>,
    #[serde(borrow, default)]
    pub ports: Option<Vec<ServicePort<'a>>>,
    #[serde(borrow, default)]
    pub selector: Option<StrMap<'a>>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ServicePort<'a> {
    #[serde(borrow, default)]
    pub name: Option<Cow<'a, str>>,
    #[serde(default)]
    pub port: Option<i64>,
    /// A number or a named port, kept as written.
    #[serde(borrow, default)]
    pub target_port: Option<&'a RawValue>,
    #[serde(default)]
    pub node_port: Option<i64>,
}

#[derive(Deserialize)]
pub struct ConfigMap<'a> {
    #[serde(borrow, default)]
    pub metadata: Metadata<'a>,
    #[serde(borrow, default)]
    pub data: Option<StrMap<'a>>,
}

/// `autoscaling/v1` Scale, as sent for the `statefulsets/scale` subresource.
#[derive(Deserialize)]
pub struct Scale {
    #[serde(default)]
    pub spec: Option<ScaleSpec>,
}

#[derive(Deserialize, Default)]
pub struct ScaleSpec {
    #[serde(default)]
    pub replicas: Option<i64>,
}
