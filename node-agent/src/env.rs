//! A container's environment, assembled as the kubelet's `makeEnvironmentVariables` does:
//! the Service variables (`<NAME>_SERVICE_HOST`, the docker-link `<NAME>_PORT...`), then
//! `envFrom` (ConfigMaps and Secrets, with `prefix`), then `env` (values with `$(VAR)`
//! expanded against what came before, and `valueFrom`: ConfigMap and Secret keys, pod fields,
//! container resources). Service variables a container defines itself are not added again.
//! `$(VAR)` in `command` and `args` is expanded against the result.

use std::collections::BTreeMap;
use std::sync::Arc;

use k8s_openapi::api::core::v1::{Container, Pod, Service};

use crate::AgentError;
use crate::fieldref::{self, Addresses, Allocatable};
use crate::objects::ObjectSource;

/// A container's environment, each name once, in the order it was defined.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Environment {
    pub vars: Vec<(String, String)>,
}

impl Environment {
    fn set(&mut self, name: String, value: String) {
        match self.vars.iter_mut().find(|(k, _)| *k == name) {
            Some(slot) => slot.1 = value,
            None => self.vars.push((name, value)),
        }
    }

    pub fn get(&self, name: &str) -> Option<&str> {
        self.vars
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// Expands `$(VAR)` in `input` with `lookup`; `$$` is a literal `$`, and a reference that does
/// not resolve (or is not closed) stays as written, as Kubernetes' expansion does.
pub fn expand(input: &str, lookup: impl Fn(&str) -> Option<String>) -> String {
    let bytes = input.as_bytes();
    let mut out = String::with_capacity(input.len());
    let mut i = 0;
    let mut last = 0;
    while i < bytes.len() {
        if bytes[i] == b'$' && i + 1 < bytes.len() {
            match bytes[i + 1] {
                b'$' => {
                    out.push_str(&input[last..i]);
                    out.push('$');
                    i += 2;
                    last = i;
                    continue;
                }
                b'(' => {
                    if let Some(close) = input[i + 2..].find(')') {
                        let name = &input[i + 2..i + 2 + close];
                        out.push_str(&input[last..i]);
                        match lookup(name) {
                            Some(v) => out.push_str(&v),
                            None => out.push_str(&input[i..i + 3 + close]),
                        }
                        i += 3 + close;
                        last = i;
                        continue;
                    }
                }
                _ => {}
            }
        }
        i += 1;
    }
    out.push_str(&input[last..]);
    out
}

/// `my-svc` → `MY_SVC`, as Service variable names are made.
fn env_prefix(name: &str) -> String {
    name.to_ascii_uppercase().replace('-', "_")
}

/// The variables of the Services a pod sees (kubelet `envvars.FromServices`): services without
/// a cluster IP are skipped; `kubernetes` in `default` is always seen, the pod's own
/// namespace's only with `enableServiceLinks`.
pub fn service_vars(
    services: &[Arc<Service>],
    namespace: &str,
    service_links: bool,
) -> Vec<(String, String)> {
    let mut chosen: BTreeMap<String, &Service> = BTreeMap::new();
    for s in services {
        let ns = s.metadata.namespace.as_deref().unwrap_or("");
        let name = s.metadata.name.clone().unwrap_or_default();
        let ip = s
            .spec
            .as_ref()
            .and_then(|sp| sp.cluster_ip.as_deref())
            .unwrap_or("");
        if ip.is_empty() || ip == "None" {
            continue;
        }
        if ns == "default" && name == "kubernetes" {
            chosen.entry(name).or_insert(s);
        } else if ns == namespace && service_links {
            chosen.insert(name, s);
        }
    }
    let mut out = Vec::new();
    for (name, s) in chosen {
        let spec = s.spec.clone().unwrap_or_default();
        let ip = spec.cluster_ip.clone().unwrap_or_default();
        let prefix = env_prefix(&name);
        let ports = spec.ports.clone().unwrap_or_default();
        out.push((format!("{prefix}_SERVICE_HOST"), ip.clone()));
        if let Some(first) = ports.first() {
            out.push((format!("{prefix}_SERVICE_PORT"), first.port.to_string()));
        }
        for p in &ports {
            if let Some(pn) = p.name.as_deref().filter(|n| !n.is_empty()) {
                out.push((
                    format!("{prefix}_SERVICE_PORT_{}", env_prefix(pn)),
                    p.port.to_string(),
                ));
            }
        }
        for (i, p) in ports.iter().enumerate() {
            let proto = p.protocol.clone().unwrap_or_else(|| "TCP".to_owned());
            let lower = proto.to_ascii_lowercase();
            let url = format!("{lower}://{ip}:{}", p.port);
            if i == 0 {
                out.push((format!("{prefix}_PORT"), url.clone()));
            }
            let pp = format!("{prefix}_PORT_{}_{}", p.port, proto.to_ascii_uppercase());
            out.push((pp.clone(), url));
            out.push((format!("{pp}_PROTO"), lower));
            out.push((format!("{pp}_PORT"), p.port.to_string()));
            out.push((format!("{pp}_ADDR"), ip.clone()));
        }
    }
    out
}

/// Everything the environment is made from besides the pod and container.
#[derive(Clone, Copy)]
pub struct EnvContext<'a> {
    pub objects: &'a dyn ObjectSource,
    pub addresses: &'a Addresses,
    pub allocatable: Allocatable,
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// The value of a ConfigMap or Secret key: `value` is `None` when the object does not exist,
/// `Some(None)` when the key does not. What is missing is an error unless `optional`, and then
/// the variable is left out (`Ok(None)`).
fn key_value(
    value: Option<Option<String>>,
    kind: &'static str,
    namespace: &str,
    name: &str,
    key: &str,
    optional: Option<bool>,
) -> Result<Option<String>, AgentError> {
    let optional = optional.unwrap_or(false);
    match value {
        Some(Some(v)) => Ok(Some(v)),
        _ if optional => Ok(None),
        Some(None) => Err(AgentError::KeyMissing {
            kind,
            namespace: namespace.to_owned(),
            name: name.to_owned(),
            key: key.to_owned(),
        }),
        None => Err(AgentError::ObjectMissing {
            kind: if kind == "Secret" {
                "secret"
            } else {
                "configmap"
            },
            name: name.to_owned(),
        }),
    }
}

/// The container's environment, or the `CreateContainerConfigError` that keeps it from being
/// created (a missing ConfigMap, Secret or key that is not optional).
pub async fn environment(
    pod: &Pod,
    container: &Container,
    ctx: EnvContext<'_>,
) -> Result<Environment, AgentError> {
    let uid = pod.metadata.uid.as_deref().unwrap_or("");
    let namespace = pod.metadata.namespace.as_deref().unwrap_or("default");
    let links = pod
        .spec
        .as_ref()
        .and_then(|s| s.enable_service_links)
        .unwrap_or(true);
    let services = ctx.objects.services(namespace).await?;
    let service_env = service_vars(&services, namespace, links);
    let mut env = Environment::default();

    for from in container.env_from.iter().flatten() {
        let prefix = from.prefix.clone().unwrap_or_default();
        // Only a ConfigMap's `data` and a Secret's `data` become variables, as in the kubelet;
        // every key is taken as it is (Kubernetes 1.34+ relaxed variable names).
        let data: Vec<(String, String)> = if let Some(r) = &from.config_map_ref {
            let optional = r.optional.unwrap_or(false);
            match ctx.objects.config_map(uid, namespace, &r.name).await? {
                Some(cm) => cm.data.clone().unwrap_or_default().into_iter().collect(),
                None if optional => continue,
                None => {
                    return Err(AgentError::ObjectMissing {
                        kind: "configmap",
                        name: r.name.clone(),
                    });
                }
            }
        } else if let Some(r) = &from.secret_ref {
            let optional = r.optional.unwrap_or(false);
            match ctx.objects.secret(uid, namespace, &r.name).await? {
                Some(s) => s
                    .data
                    .clone()
                    .unwrap_or_default()
                    .into_iter()
                    .map(|(k, v)| (k, text(&v.0)))
                    .collect(),
                None if optional => continue,
                None => {
                    return Err(AgentError::ObjectMissing {
                        kind: "secret",
                        name: r.name.clone(),
                    });
                }
            }
        } else {
            continue;
        };
        for (k, v) in data {
            env.set(format!("{prefix}{k}"), v);
        }
    }

    for e in container.env.iter().flatten() {
        let value = if let Some(v) = e.value.as_deref().filter(|v| !v.is_empty()) {
            let lookup = |name: &str| {
                env.get(name).map(str::to_owned).or_else(|| {
                    service_env
                        .iter()
                        .find(|(k, _)| k == name)
                        .map(|(_, v)| v.clone())
                })
            };
            expand(v, lookup)
        } else if let Some(from) = &e.value_from {
            if let Some(f) = &from.field_ref {
                fieldref::pod_field(pod, f, ctx.addresses)?
            } else if let Some(r) = &from.resource_field_ref {
                let target = match r.container_name.as_deref().filter(|n| !n.is_empty()) {
                    Some(n) if n != container.name => pod
                        .spec
                        .iter()
                        .flat_map(|s| {
                            s.containers
                                .iter()
                                .chain(s.init_containers.iter().flatten())
                        })
                        .find(|c| c.name == n)
                        .unwrap_or(container),
                    _ => container,
                };
                fieldref::resource_field(target, r, ctx.allocatable)?
            } else if let Some(r) = &from.config_map_key_ref {
                let value = ctx
                    .objects
                    .config_map(uid, namespace, &r.name)
                    .await?
                    .map(|cm| cm.data.as_ref().and_then(|d| d.get(&r.key).cloned()));
                match key_value(value, "ConfigMap", namespace, &r.name, &r.key, r.optional)? {
                    Some(v) => v,
                    None => continue,
                }
            } else if let Some(r) = &from.secret_key_ref {
                let value = ctx.objects.secret(uid, namespace, &r.name).await?.map(|s| {
                    s.data
                        .as_ref()
                        .and_then(|d| d.get(&r.key))
                        .map(|b| text(&b.0))
                });
                match key_value(value, "Secret", namespace, &r.name, &r.key, r.optional)? {
                    Some(v) => v,
                    None => continue,
                }
            } else {
                String::new()
            }
        } else {
            String::new()
        };
        env.set(e.name.clone(), value);
    }

    for (k, v) in service_env {
        if env.get(&k).is_none() {
            env.vars.push((k, v));
        }
    }
    Ok(env)
}

/// `command` and `args` with `$(VAR)` expanded against the container's environment.
pub fn expand_command(words: &[String], env: &Environment) -> Vec<String> {
    words
        .iter()
        .map(|w| expand(w, |n| env.get(n).map(str::to_owned)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::objects::FakeObjects;
    use k8s_openapi::api::core::v1::{
        ConfigMapEnvSource, ConfigMapKeySelector, EnvFromSource, EnvVar, EnvVarSource,
        ObjectFieldSelector, PodSpec, SecretKeySelector, ServicePort, ServiceSpec,
    };

    #[test]
    fn expansion_follows_kubernetes() {
        let vars = |n: &str| match n {
            "A" => Some("x".to_owned()),
            "EMPTY" => Some(String::new()),
            _ => None,
        };
        assert_eq!(expand("$(A)-$(A)", vars), "x-x");
        assert_eq!(expand("$$(A)", vars), "$(A)");
        assert_eq!(expand("$$$(A)", vars), "$x");
        assert_eq!(expand("$(MISSING)", vars), "$(MISSING)");
        assert_eq!(expand("$(A", vars), "$(A");
        assert_eq!(expand("a$b$", vars), "a$b$");
        assert_eq!(expand("[$(EMPTY)]", vars), "[]");
    }

    fn svc(ns: &str, name: &str, ip: &str, ports: &[(Option<&str>, i32)]) -> Arc<Service> {
        let mut s = Service::default();
        s.metadata.namespace = Some(ns.into());
        s.metadata.name = Some(name.into());
        s.spec = Some(ServiceSpec {
            cluster_ip: Some(ip.into()),
            ports: Some(
                ports
                    .iter()
                    .map(|(n, p)| ServicePort {
                        name: n.map(str::to_owned),
                        port: *p,
                        protocol: Some("TCP".into()),
                        ..Default::default()
                    })
                    .collect(),
            ),
            ..Default::default()
        });
        Arc::new(s)
    }

    #[test]
    fn service_variables_like_docker_links() {
        let services = vec![
            svc(
                "shop",
                "redis-primary",
                "10.96.0.11",
                &[(Some("redis"), 6379)],
            ),
            svc("shop", "headless", "None", &[(None, 80)]),
            svc("other", "web", "10.96.0.12", &[(None, 80)]),
            svc(
                "default",
                "kubernetes",
                "10.96.0.1",
                &[(Some("https"), 443)],
            ),
        ];
        let vars: BTreeMap<String, String> =
            service_vars(&services, "shop", true).into_iter().collect();
        assert_eq!(vars["REDIS_PRIMARY_SERVICE_HOST"], "10.96.0.11");
        assert_eq!(vars["REDIS_PRIMARY_SERVICE_PORT"], "6379");
        assert_eq!(vars["REDIS_PRIMARY_SERVICE_PORT_REDIS"], "6379");
        assert_eq!(vars["REDIS_PRIMARY_PORT"], "tcp://10.96.0.11:6379");
        assert_eq!(vars["REDIS_PRIMARY_PORT_6379_TCP"], "tcp://10.96.0.11:6379");
        assert_eq!(vars["REDIS_PRIMARY_PORT_6379_TCP_ADDR"], "10.96.0.11");
        assert_eq!(vars["KUBERNETES_SERVICE_HOST"], "10.96.0.1");
        assert!(!vars.contains_key("HEADLESS_SERVICE_HOST"));
        assert!(!vars.contains_key("WEB_SERVICE_HOST"));
        // Without service links only the API server's service remains.
        let vars = service_vars(&services, "shop", false);
        assert!(vars.iter().all(|(k, _)| k.starts_with("KUBERNETES_")));
    }

    fn pod(container: Container) -> Pod {
        let mut p = Pod::default();
        p.metadata.name = Some("web".into());
        p.metadata.namespace = Some("shop".into());
        p.metadata.uid = Some("u1".into());
        p.spec = Some(PodSpec {
            containers: vec![container],
            enable_service_links: Some(true),
            ..Default::default()
        });
        p
    }

    fn var(name: &str, value: &str) -> EnvVar {
        EnvVar {
            name: name.into(),
            value: Some(value.into()),
            value_from: None,
        }
    }

    fn var_from(name: &str, from: EnvVarSource) -> EnvVar {
        EnvVar {
            name: name.into(),
            value: None,
            value_from: Some(from),
        }
    }

    async fn env_of(objects: &FakeObjects, c: &Container) -> Result<Environment, AgentError> {
        let p = pod(c.clone());
        let addr = Addresses {
            pod_ips: vec!["10.88.0.9".into()],
            host_ip: "192.168.0.2".into(),
        };
        environment(
            &p,
            c,
            EnvContext {
                objects,
                addresses: &addr,
                allocatable: Allocatable {
                    cpu_milli: 2000,
                    memory: 1 << 30,
                },
            },
        )
        .await
    }

    #[tokio::test]
    async fn env_from_objects_fields_and_expansion() {
        let objects = FakeObjects::default();
        objects.add_config_map("shop", "app", &[("MODE", "prod"), ("dotted.key", "x")]);
        objects.add_secret("shop", "db", &[("password", b"s3cret")]);
        objects
            .state()
            .services
            .push(svc("shop", "db", "10.96.0.20", &[(None, 5432)]));
        let c = Container {
            name: "c".into(),
            env_from: Some(vec![EnvFromSource {
                config_map_ref: Some(ConfigMapEnvSource {
                    name: "app".into(),
                    optional: None,
                }),
                prefix: Some("APP_".into()),
                secret_ref: None,
            }]),
            env: Some(vec![
                var_from(
                    "PASSWORD",
                    EnvVarSource {
                        secret_key_ref: Some(SecretKeySelector {
                            name: "db".into(),
                            key: "password".into(),
                            optional: None,
                        }),
                        ..Default::default()
                    },
                ),
                var_from(
                    "POD_IP",
                    EnvVarSource {
                        field_ref: Some(ObjectFieldSelector {
                            field_path: "status.podIP".into(),
                            api_version: None,
                        }),
                        ..Default::default()
                    },
                ),
                var(
                    "URL",
                    "postgres://$(DB_SERVICE_HOST):$(DB_SERVICE_PORT)/$(APP_MODE)",
                ),
                var("LITERAL", "$$(POD_IP)"),
            ]),
            ..Default::default()
        };
        let env = env_of(&objects, &c).await.unwrap();
        let m: BTreeMap<_, _> = env.vars.iter().cloned().collect();
        assert_eq!(m["APP_MODE"], "prod");
        assert_eq!(m["PASSWORD"], "s3cret");
        assert_eq!(m["POD_IP"], "10.88.0.9");
        assert_eq!(m["URL"], "postgres://10.96.0.20:5432/prod");
        assert_eq!(m["LITERAL"], "$(POD_IP)");
        assert_eq!(m["DB_SERVICE_HOST"], "10.96.0.20");
        assert_eq!(m["APP_dotted.key"], "x");
        let args = expand_command(&["echo".into(), "$(POD_IP)".into()], &env);
        assert_eq!(args, ["echo", "10.88.0.9"]);
    }

    #[tokio::test]
    async fn missing_objects_and_keys_name_what_is_missing() {
        let objects = FakeObjects::default();
        let key_ref = |optional| EnvVarSource {
            config_map_key_ref: Some(ConfigMapKeySelector {
                name: "app".into(),
                key: "MODE".into(),
                optional,
            }),
            ..Default::default()
        };
        let c = Container {
            name: "c".into(),
            env: Some(vec![var_from("MODE", key_ref(None))]),
            ..Default::default()
        };
        let e = env_of(&objects, &c).await.unwrap_err();
        assert_eq!(e.to_string(), "configmap \"app\" not found");
        objects.add_config_map("shop", "app", &[("OTHER", "1")]);
        let e = env_of(&objects, &c).await.unwrap_err();
        assert_eq!(
            e.to_string(),
            "couldn't find key MODE in ConfigMap shop/app"
        );
        // Optional references to what is missing are left out.
        let c = Container {
            name: "c".into(),
            env: Some(vec![var_from("MODE", key_ref(Some(true)))]),
            ..Default::default()
        };
        let env = env_of(&objects, &c).await.unwrap();
        assert!(env.vars.iter().all(|(k, _)| k != "MODE"));
    }
}
