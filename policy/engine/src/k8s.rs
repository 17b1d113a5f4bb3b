//! Partial, borrowed views of the Kubernetes objects the engine reads.
//!
//! Only the fields the engine compares are decoded, with [`json::Reader`];
//! everything else is checked and skipped without allocation. Env entries
//! are also kept as the JSON text they came as, so that untouched ones are
//! written back exactly as they came.
//!
//! Field rules, the same for every type: an optional field may be absent or
//! `null`; a field of the wrong JSON type is an error naming its path.

use std::borrow::Cow;

use crate::json::{self, Reader};

/// A string map kept as pairs in document order: lookups touch a handful of
/// keys, and a Vec costs far less code in the wasm guest than a BTreeMap.
#[derive(Default, Debug, PartialEq)]
pub struct StrMap<'a>(pub Vec<(Cow<'a, str>, Cow<'a, str>)>);

impl<'a> StrMap<'a> {
    /// The value of `key`; the last one if the key is given twice, as
    /// Kubernetes reads it.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.0
            .iter()
            .rev()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_ref())
    }

    fn read(r: &mut Reader<'a>) -> json::Result<Self> {
        let mut pairs = Vec::with_capacity(8); // as in `Reader::vec`
        r.object(|r, key| {
            let value = r.string()?;
            pairs.push((key.clone(), value));
            Ok(())
        })?;
        Ok(StrMap(pairs))
    }
}

#[derive(Default, Debug, PartialEq)]
pub struct Metadata<'a> {
    pub annotations: Option<StrMap<'a>>,
    pub labels: Option<StrMap<'a>>,
}

impl<'a> Metadata<'a> {
    fn read(r: &mut Reader<'a>) -> json::Result<Self> {
        let mut m = Metadata::default();
        r.object(|r, key| {
            match key.as_ref() {
                "annotations" => m.annotations = r.optional(StrMap::read)?,
                "labels" => m.labels = r.optional(StrMap::read)?,
                _ => r.skip()?,
            }
            Ok(())
        })?;
        Ok(m)
    }
}

/// Any object, for its labels.
#[derive(Debug, PartialEq)]
pub struct Object<'a> {
    pub metadata: Metadata<'a>,
}

impl<'a> Object<'a> {
    pub fn from_json(src: &'a str) -> json::Result<Self> {
        Reader::document(src, Self::read)
    }

    pub fn read(r: &mut Reader<'a>) -> json::Result<Self> {
        let mut metadata = Metadata::default();
        r.object(|r, key| match key.as_ref() {
            "metadata" => Metadata::read(r).map(|m| metadata = m),
            _ => r.skip(),
        })?;
        Ok(Object { metadata })
    }
}

#[derive(Debug, PartialEq)]
pub struct StatefulSet<'a> {
    pub metadata: Metadata<'a>,
    pub spec: Option<StatefulSetSpec<'a>>,
}

impl<'a> StatefulSet<'a> {
    pub fn from_json(src: &'a str) -> json::Result<Self> {
        Reader::document(src, Self::read)
    }

    pub fn read(r: &mut Reader<'a>) -> json::Result<Self> {
        let mut sts = StatefulSet {
            metadata: Metadata::default(),
            spec: None,
        };
        r.object(|r, key| {
            match key.as_ref() {
                "metadata" => sts.metadata = Metadata::read(r)?,
                "spec" => sts.spec = r.optional(StatefulSetSpec::read)?,
                _ => r.skip()?,
            }
            Ok(())
        })?;
        Ok(sts)
    }
}

#[derive(Default, Debug, PartialEq)]
pub struct StatefulSetSpec<'a> {
    pub replicas: Option<i64>,
    pub ordinals: Option<Ordinals>,
    pub template: Option<PodTemplate<'a>>,
}

impl<'a> StatefulSetSpec<'a> {
    fn read(r: &mut Reader<'a>) -> json::Result<Self> {
        let mut spec = StatefulSetSpec::default();
        r.object(|r, key| {
            match key.as_ref() {
                "replicas" => spec.replicas = r.optional(Reader::integer)?,
                "ordinals" => spec.ordinals = r.optional(Ordinals::read)?,
                "template" => spec.template = r.optional(PodTemplate::read)?,
                _ => r.skip()?,
            }
            Ok(())
        })?;
        Ok(spec)
    }
}

#[derive(Default, Debug, PartialEq)]
pub struct Ordinals {
    pub start: Option<i64>,
}

impl Ordinals {
    fn read(r: &mut Reader<'_>) -> json::Result<Self> {
        let mut ordinals = Ordinals::default();
        r.object(|r, key| {
            match key.as_ref() {
                "start" => ordinals.start = r.optional(Reader::integer)?,
                _ => r.skip()?,
            }
            Ok(())
        })?;
        Ok(ordinals)
    }
}

#[derive(Default, Debug, PartialEq)]
pub struct PodTemplate<'a> {
    pub spec: Option<PodSpec<'a>>,
}

impl<'a> PodTemplate<'a> {
    fn read(r: &mut Reader<'a>) -> json::Result<Self> {
        let mut template = PodTemplate::default();
        r.object(|r, key| {
            match key.as_ref() {
                "spec" => template.spec = r.optional(PodSpec::read)?,
                _ => r.skip()?,
            }
            Ok(())
        })?;
        Ok(template)
    }
}

#[derive(Default, Debug, PartialEq)]
pub struct PodSpec<'a> {
    pub containers: Option<Vec<Container<'a>>>,
    pub init_containers: Option<Vec<Container<'a>>>,
    /// Read only by the checks that need it ([`Named::list`], [`SecretRefs`]).
    pub volumes: Option<&'a str>,
}

impl<'a> PodSpec<'a> {
    fn read(r: &mut Reader<'a>) -> json::Result<Self> {
        let mut pod = PodSpec::default();
        r.object(|r, key| {
            match key.as_ref() {
                "containers" => pod.containers = r.optional(|r| r.vec(Container::read))?,
                "initContainers" => {
                    pod.init_containers = r.optional(|r| r.vec(Container::read))?;
                }
                "volumes" => pod.volumes = r.optional(Reader::raw)?,
                _ => r.skip()?,
            }
            Ok(())
        })?;
        Ok(pod)
    }
}

/// Every Secret a piece of a pod spec references, wherever it sits: a
/// `secret` volume (`secretName`) or projected source (`name`), an env
/// `secretKeyRef` or an `envFrom` `secretRef`. One recursive walk instead of
/// a type per place keeps the guest small.
#[derive(Default, Debug, PartialEq)]
pub struct SecretRefs<'a>(pub Vec<Cow<'a, str>>);

impl<'a> SecretRefs<'a> {
    pub fn from_json(src: &'a str) -> json::Result<Self> {
        let mut refs = SecretRefs::default();
        Reader::document(src, |r| refs.walk(r))?;
        Ok(refs)
    }

    fn walk(&mut self, r: &mut Reader<'a>) -> json::Result<()> {
        if r.null()? {
            return Ok(());
        }
        match r.next_byte() {
            Some(b'{') => r.object(|r, key| {
                if matches!(key.as_ref(), "secret" | "secretRef" | "secretKeyRef") {
                    let found = SecretRef::read(r)?;
                    self.0
                        .extend(found.name.into_iter().chain(found.secret_name));
                    Ok(())
                } else {
                    self.walk(r)
                }
            }),
            Some(b'[') => r.array(|r| self.walk(r)),
            _ => r.skip(),
        }
    }
}

/// The object under a `secret`, `secretRef` or `secretKeyRef` key.
#[derive(Default, Debug, PartialEq)]
pub struct SecretRef<'a> {
    pub name: Option<Cow<'a, str>>,
    pub secret_name: Option<Cow<'a, str>>,
}

impl<'a> SecretRef<'a> {
    pub fn from_json(src: &'a str) -> json::Result<Self> {
        Reader::document(src, SecretRef::read)
    }

    fn read(r: &mut Reader<'a>) -> json::Result<Self> {
        let mut found = SecretRef::default();
        r.object(|r, key| {
            match key.as_ref() {
                "name" => found.name = r.optional(Reader::string)?,
                "secretName" => found.secret_name = r.optional(Reader::string)?,
                _ => r.skip()?,
            }
            Ok(())
        })?;
        Ok(found)
    }
}

/// Any list entry with a `name` (a volume), read for its name only.
#[derive(Debug, PartialEq)]
pub struct Named<'a> {
    pub name: Cow<'a, str>,
}

impl<'a> Named<'a> {
    /// A JSON array of named entries.
    pub fn list(src: &'a str) -> json::Result<Vec<Self>> {
        Reader::document(src, |r| {
            r.vec(|r| {
                let mut name = None;
                r.object(|r, key| match key.as_ref() {
                    "name" => r.string().map(|n| name = Some(n)),
                    _ => r.skip(),
                })?;
                let name = name.ok_or_else(|| r.missing("name"))?;
                Ok(Named { name })
            })
        })
    }
}

/// A JSON array of strings (a container's `command` or `args`).
pub fn words(src: &str) -> json::Result<Vec<Cow<'_, str>>> {
    Reader::document(src, |r| r.vec(Reader::string))
}

#[derive(Debug, PartialEq)]
pub struct Container<'a> {
    pub name: Cow<'a, str>,
    pub env: Option<Vec<Env<'a>>>,
    pub ports: Option<Vec<ContainerPort<'a>>>,
    // Kept as text and read only by the rules that need them: a chart's
    // script can be kilobytes of escaped text.
    pub env_from: Option<&'a str>,
    pub command: Option<&'a str>,
    pub args: Option<&'a str>,
}

impl<'a> Container<'a> {
    fn read(r: &mut Reader<'a>) -> json::Result<Self> {
        let mut name = None;
        let (mut env, mut ports, mut env_from, mut command, mut args) =
            (None, None, None, None, None);
        r.object(|r, key| {
            match key.as_ref() {
                "name" => name = Some(r.string()?),
                "env" => env = r.optional(|r| r.vec(Env::read))?,
                "ports" => ports = r.optional(|r| r.vec(ContainerPort::read))?,
                "envFrom" => env_from = r.optional(Reader::raw)?,
                "command" => command = r.optional(Reader::raw)?,
                "args" => args = r.optional(Reader::raw)?,
                _ => r.skip()?,
            }
            Ok(())
        })?;
        Ok(Container {
            name: name.ok_or_else(|| r.missing("name"))?,
            env,
            ports,
            env_from,
            command,
            args,
        })
    }
}

#[derive(Default, Debug, PartialEq)]
pub struct ContainerPort<'a> {
    pub name: Option<Cow<'a, str>>,
    pub container_port: Option<i64>,
}

impl<'a> ContainerPort<'a> {
    fn read(r: &mut Reader<'a>) -> json::Result<Self> {
        let mut port = ContainerPort::default();
        r.object(|r, key| {
            match key.as_ref() {
                "name" => port.name = r.optional(Reader::string)?,
                "containerPort" => port.container_port = r.optional(Reader::integer)?,
                _ => r.skip()?,
            }
            Ok(())
        })?;
        Ok(port)
    }
}

/// One entry of a container's `env`: decoded once per review for every
/// rule that reads it, and kept as sent, so that entries the policy leaves
/// alone are written back exactly as they came.
#[derive(Debug, PartialEq)]
pub struct Env<'a> {
    pub raw: &'a str,
    pub entry: EnvEntry<'a>,
}

impl<'a> Env<'a> {
    fn read(r: &mut Reader<'a>) -> json::Result<Self> {
        let (entry, raw) = r.spanned(EnvEntry::read)?;
        Ok(Env { raw, entry })
    }
}

/// The parts of one `EnvVar` the engine compares.
#[derive(Debug, PartialEq)]
pub struct EnvEntry<'a> {
    pub name: Cow<'a, str>,
    pub value: Option<Cow<'a, str>>,
    pub value_from: Option<ValueFrom<'a>>,
}

impl<'a> EnvEntry<'a> {
    fn read(r: &mut Reader<'a>) -> json::Result<Self> {
        let (mut name, mut value, mut value_from) = (None, None, None);
        r.object(|r, key| {
            match key.as_ref() {
                "name" => name = Some(r.string()?),
                "value" => value = r.optional(Reader::string)?,
                "valueFrom" => value_from = r.optional(ValueFrom::read)?,
                _ => r.skip()?,
            }
            Ok(())
        })?;
        Ok(EnvEntry {
            name: name.ok_or_else(|| r.missing("name"))?,
            value,
            value_from,
        })
    }
}

#[derive(Default, Debug, PartialEq)]
pub struct ValueFrom<'a> {
    pub field_ref: Option<FieldRef<'a>>,
    // Any other source (secretKeyRef, configMapKeyRef, ...) makes the entry
    // differ from every value the engine writes.
    pub secret_key_ref: Option<&'a str>,
    pub config_map_key_ref: Option<&'a str>,
    pub resource_field_ref: Option<&'a str>,
}

impl<'a> ValueFrom<'a> {
    fn read(r: &mut Reader<'a>) -> json::Result<Self> {
        let mut from = ValueFrom::default();
        r.object(|r, key| {
            match key.as_ref() {
                "fieldRef" => from.field_ref = r.optional(FieldRef::read)?,
                "secretKeyRef" => from.secret_key_ref = r.optional(Reader::raw)?,
                "configMapKeyRef" => from.config_map_key_ref = r.optional(Reader::raw)?,
                "resourceFieldRef" => from.resource_field_ref = r.optional(Reader::raw)?,
                _ => r.skip()?,
            }
            Ok(())
        })?;
        Ok(from)
    }
}

#[derive(Debug, PartialEq)]
pub struct FieldRef<'a> {
    pub field_path: Cow<'a, str>,
}

impl<'a> FieldRef<'a> {
    fn read(r: &mut Reader<'a>) -> json::Result<Self> {
        let mut path = None;
        r.object(|r, key| match key.as_ref() {
            "fieldPath" => r.string().map(|p| path = Some(p)),
            _ => r.skip(),
        })?;
        Ok(FieldRef {
            field_path: path.ok_or_else(|| r.missing("fieldPath"))?,
        })
    }
}

#[derive(Debug, PartialEq)]
pub struct Service<'a> {
    pub metadata: Metadata<'a>,
    pub spec: Option<ServiceSpec<'a>>,
}

impl<'a> Service<'a> {
    pub fn from_json(src: &'a str) -> json::Result<Self> {
        Reader::document(src, Self::read)
    }

    pub fn read(r: &mut Reader<'a>) -> json::Result<Self> {
        let mut svc = Service {
            metadata: Metadata::default(),
            spec: None,
        };
        r.object(|r, key| {
            match key.as_ref() {
                "metadata" => svc.metadata = Metadata::read(r)?,
                "spec" => svc.spec = r.optional(ServiceSpec::read)?,
                _ => r.skip()?,
            }
            Ok(())
        })?;
        Ok(svc)
    }
}

#[derive(Default, Debug, PartialEq)]
pub struct ServiceSpec<'a> {
    pub publish_not_ready_addresses: Option<bool>,
    pub ports: Option<Vec<ServicePort<'a>>>,
    pub selector: Option<StrMap<'a>>,
}

impl<'a> ServiceSpec<'a> {
    fn read(r: &mut Reader<'a>) -> json::Result<Self> {
        let mut spec = ServiceSpec::default();
        r.object(|r, key| {
            match key.as_ref() {
                "publishNotReadyAddresses" => {
                    spec.publish_not_ready_addresses = r.optional(Reader::boolean)?;
                }
                "ports" => spec.ports = r.optional(|r| r.vec(ServicePort::read))?,
                "selector" => spec.selector = r.optional(StrMap::read)?,
                _ => r.skip()?,
            }
            Ok(())
        })?;
        Ok(spec)
    }
}

#[derive(Default, Debug, PartialEq)]
pub struct ServicePort<'a> {
    pub name: Option<Cow<'a, str>>,
    pub port: Option<i64>,
    /// A number or a named port, kept as written.
    pub target_port: Option<&'a str>,
    pub node_port: Option<i64>,
}

impl<'a> ServicePort<'a> {
    fn read(r: &mut Reader<'a>) -> json::Result<Self> {
        let mut port = ServicePort::default();
        r.object(|r, key| {
            match key.as_ref() {
                "name" => port.name = r.optional(Reader::string)?,
                "port" => port.port = r.optional(Reader::integer)?,
                "targetPort" => port.target_port = r.optional(Reader::raw)?,
                "nodePort" => port.node_port = r.optional(Reader::integer)?,
                _ => r.skip()?,
            }
            Ok(())
        })?;
        Ok(port)
    }
}

#[derive(Debug, PartialEq)]
pub struct ConfigMap<'a> {
    pub metadata: Metadata<'a>,
    pub data: Option<StrMap<'a>>,
}

impl<'a> ConfigMap<'a> {
    pub fn from_json(src: &'a str) -> json::Result<Self> {
        Reader::document(src, Self::read)
    }

    pub fn read(r: &mut Reader<'a>) -> json::Result<Self> {
        let mut cm = ConfigMap {
            metadata: Metadata::default(),
            data: None,
        };
        r.object(|r, key| {
            match key.as_ref() {
                "metadata" => cm.metadata = Metadata::read(r)?,
                "data" => cm.data = r.optional(StrMap::read)?,
                _ => r.skip()?,
            }
            Ok(())
        })?;
        Ok(cm)
    }
}

/// `autoscaling/v1` Scale, as sent for the `statefulsets/scale` subresource:
/// its `spec.replicas`.
#[derive(Debug, PartialEq)]
pub struct Scale {
    pub replicas: Option<i64>,
}

impl Scale {
    pub fn from_json(src: &str) -> json::Result<Self> {
        Reader::document(src, Self::read)
    }

    pub fn read(r: &mut Reader<'_>) -> json::Result<Self> {
        let mut replicas = None;
        r.object(|r, key| match key.as_ref() {
            "spec" => r
                .optional(|r| {
                    r.object(|r, key| match key.as_ref() {
                        "replicas" => r.optional(Reader::integer).map(|n| replicas = n),
                        _ => r.skip(),
                    })
                })
                .map(drop),
            _ => r.skip(),
        })?;
        Ok(Scale { replicas })
    }
}
