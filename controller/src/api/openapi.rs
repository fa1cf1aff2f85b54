//! OpenAPI as kubectl reads it. `/openapi/v3` lists one document per group-version, and each
//! document (`/openapi/v3/api/v1`, `/openapi/v3/apis/apps/v1`, ...) holds the paths of that
//! group-version's resources with their operations and parameters, and the schemas of their
//! kinds. kubectl uses them three ways: a kind whose PATCH operation declares `fieldValidation`
//! is validated by the server (`kubectl apply --validate`), otherwise kubectl would validate
//! against OpenAPI v2, which it gets empty (below); `kubectl apply` computes its strategic
//! merge patches from the schemas' merge keys; and `kubectl explain` renders the schemas. They
//! come from k8s-openapi's schemars impls, so they carry Kubernetes' names and descriptions.
//!
//! `/openapi/v2` in JSON is the same documents merged into one Swagger 2.0 document
//! ([`swagger`]), for clients that read v2. kubectl asks for v2 in gnostic's protobuf encoding,
//! which skiff does not produce: it gets an empty document, and reads its schemas from v3.

use std::collections::BTreeMap;
use std::hash::{Hash as _, Hasher as _};
use std::sync::OnceLock;

use k8s_openapi::schemars::generate::SchemaSettings;
use k8s_openapi::schemars::{JsonSchema, SchemaGenerator};
use serde_json::{Map, Value, json};

use super::discovery;
use super::patch;
use super::resources::{RESOURCES, Resource};

/// One group-version's document, rendered once.
#[derive(Debug)]
pub struct Document {
    /// Changes whenever the text does, so clients may cache `?hash=` URLs for good.
    pub hash: String,
    pub json: String,
}

/// `api/v1` or `apis/<group>/<version>`: a document's path under `/openapi/v3/`.
pub fn gv_path(group: &str, version: &str) -> String {
    if group.is_empty() {
        format!("api/{version}")
    } else {
        format!("apis/{group}/{version}")
    }
}

/// Every group-version's document by its path, built on first use (they depend on nothing but
/// the binary).
pub fn documents() -> &'static BTreeMap<String, Document> {
    static DOCS: OnceLock<BTreeMap<String, Document>> = OnceLock::new();
    DOCS.get_or_init(|| {
        let mut gvs: Vec<(&str, &str)> = Vec::new();
        for r in RESOURCES {
            if !gvs.contains(&(r.group, r.version)) {
                gvs.push((r.group, r.version));
            }
        }
        gvs.into_iter()
            .map(|(g, v)| {
                let json = document(g, v).to_string();
                // Only needs to tell this binary's documents apart: the std hasher will do.
                let mut h = std::hash::DefaultHasher::new();
                json.hash(&mut h);
                let hash = format!("{:016X}", h.finish());
                (gv_path(g, v), Document { hash, json })
            })
            .collect()
    })
}

/// `GET /openapi/v2` in JSON: every group-version's v3 document merged into one Swagger 2.0
/// document, rendered once. The schemas are the same (references point into `definitions`;
/// v3's `nullable` has no v2 form and is left out); operations take their body as an `in: body`
/// parameter and name their media types in `consumes` and `produces`.
pub fn swagger() -> &'static str {
    static DOC: OnceLock<String> = OnceLock::new();
    DOC.get_or_init(|| {
        let mut paths = Map::new();
        let mut definitions = Map::new();
        // The v3 documents as already rendered: their schemas are not generated again.
        for text in documents().values() {
            let Ok(mut doc) = serde_json::from_str::<Value>(&text.json) else {
                continue;
            };
            if let Some(p) = doc["paths"].as_object_mut() {
                for (path, item) in std::mem::take(p) {
                    paths.insert(path, v2_path_item(item));
                }
            }
            if let Some(s) = doc["components"]["schemas"].as_object_mut() {
                definitions.append(s);
            }
        }
        let mut out = json!({
            "swagger": "2.0",
            "info": {"title": "Kubernetes", "version": discovery::version()["gitVersion"]},
            "paths": paths,
            "definitions": definitions,
        });
        to_v2_schemas(&mut out);
        out.to_string()
    })
}

/// A v3 parameter as v2 writes it: the schema's type (and format, items) on the parameter.
fn v2_parameter(mut p: Value) -> Value {
    if let Some(obj) = p.as_object_mut()
        && let Some(Value::Object(schema)) = obj.remove("schema")
    {
        obj.extend(schema);
    }
    p
}

/// A v3 path item as v2 writes it (see [`swagger`]).
fn v2_path_item(mut item: Value) -> Value {
    let Some(methods) = item.as_object_mut() else {
        return item;
    };
    for (key, op) in methods.iter_mut() {
        if key == "parameters" {
            if let Some(ps) = op.as_array_mut() {
                for p in ps {
                    *p = v2_parameter(p.take());
                }
            }
            continue;
        }
        let Some(op) = op.as_object_mut() else {
            continue;
        };
        let mut params: Vec<Value> = match op.remove("parameters") {
            Some(Value::Array(ps)) => ps.into_iter().map(v2_parameter).collect(),
            _ => Vec::new(),
        };
        if let Some(body) = op.remove("requestBody") {
            let content = body["content"].as_object().cloned().unwrap_or_default();
            let schema = content
                .values()
                .next()
                .map_or(json!({"type": "object"}), |c| c["schema"].clone());
            op.insert("consumes".into(), json!(content.keys().collect::<Vec<_>>()));
            params.push(json!({"name": "body", "in": "body", "required": true, "schema": schema}));
        }
        op.insert("parameters".into(), Value::Array(params));
        let mut produces: Vec<String> = Vec::new();
        if let Some(Value::Object(responses)) = op.get_mut("responses") {
            for r in responses.values_mut() {
                let Some(r) = r.as_object_mut() else { continue };
                if let Some(Value::Object(content)) = r.remove("content") {
                    for (media, c) in content {
                        if !r.contains_key("schema") {
                            r.insert("schema".into(), c["schema"].clone());
                        }
                        if !produces.contains(&media) {
                            produces.push(media);
                        }
                    }
                }
            }
        }
        op.insert("produces".into(), json!(produces));
    }
    item
}

/// Points references into `definitions` and drops what v2 has no word for.
fn to_v2_schemas(v: &mut Value) {
    match v {
        Value::Object(m) => {
            if let Some(Value::String(r)) = m.get_mut("$ref")
                && let Some(name) = r.strip_prefix(SCHEMAS)
            {
                *r = format!("#/definitions/{name}");
            }
            // A keyword, not a property of that name (whose value is a schema).
            if matches!(m.get("nullable"), Some(Value::Bool(_))) {
                m.remove("nullable");
            }
            m.values_mut().for_each(to_v2_schemas);
        }
        Value::Array(a) => a.iter_mut().for_each(to_v2_schemas),
        _ => {}
    }
}

/// `GET /openapi/v3`: where each group-version's document is.
pub fn discovery() -> Value {
    let paths: Map<String, Value> = documents()
        .iter()
        .map(|(path, doc)| {
            let url = format!("/openapi/v3/{path}?hash={}", doc.hash);
            (path.clone(), json!({"serverRelativeURL": url}))
        })
        .collect();
    json!({"paths": paths})
}

const SCHEMAS: &str = "#/components/schemas/";

fn reference(name: &str) -> Value {
    json!({"$ref": format!("{SCHEMAS}{name}")})
}

/// Registers `T`'s schema (and those it refers to) and returns its name.
fn register<T: JsonSchema>(generator: &mut SchemaGenerator) -> String {
    generator.subschema_for::<T>();
    T::schema_name().into_owned()
}

fn gvk(group: &str, version: &str, kind: &str) -> Value {
    json!({"group": group, "version": version, "kind": kind})
}

/// A query parameter: name, type, what it does.
type Param = (&'static str, &'static str, &'static str);

const WRITE: &[Param] = &[
    (
        "dryRun",
        "string",
        "\"All\": run every stage of the request but persist nothing.",
    ),
    (
        "fieldManager",
        "string",
        "The name of the actor making the change, recorded in managedFields; required for apply patches.",
    ),
    (
        "fieldValidation",
        "string",
        "What to do with fields the schema does not know: \"Ignore\" drops them, \"Warn\" (the default) drops them with a warning, \"Strict\" fails the request.",
    ),
];
const FORCE: &[Param] = &[(
    "force",
    "boolean",
    "Apply patches only: take over fields other managers own instead of failing with a conflict.",
)];
const DELETE: &[Param] = &[
    (
        "dryRun",
        "string",
        "\"All\": run every stage of the request but persist nothing.",
    ),
    (
        "gracePeriodSeconds",
        "integer",
        "Seconds before the object is deleted; 0 deletes at once.",
    ),
    (
        "propagationPolicy",
        "string",
        "Whether and how dependents are garbage collected: \"Orphan\", \"Background\" or \"Foreground\".",
    ),
    (
        "orphanDependents",
        "boolean",
        "Deprecated: use propagationPolicy \"Orphan\".",
    ),
];
const LIST: &[Param] = &[
    (
        "labelSelector",
        "string",
        "Only objects whose labels match this selector.",
    ),
    (
        "fieldSelector",
        "string",
        "Only objects whose fields match this selector.",
    ),
    (
        "limit",
        "integer",
        "The most objects to return in one page.",
    ),
    (
        "continue",
        "string",
        "The token of the previous page, to get the next one.",
    ),
    (
        "resourceVersion",
        "string",
        "For lists, how recent the state must be; for watches, where to start.",
    ),
    (
        "resourceVersionMatch",
        "string",
        "How resourceVersion applies to a list: \"NotOlderThan\" or \"Exact\".",
    ),
    (
        "watch",
        "boolean",
        "Stream changes instead of returning a list.",
    ),
    (
        "allowWatchBookmarks",
        "boolean",
        "Let a watch send BOOKMARK events.",
    ),
    (
        "sendInitialEvents",
        "boolean",
        "Start a watch with the current state as ADDED events, ended by an annotated bookmark.",
    ),
    (
        "timeoutSeconds",
        "integer",
        "End a list or watch after this many seconds.",
    ),
];

fn path_param(name: &str, what: &str) -> Value {
    json!({"name": name, "in": "path", "required": true, "description": what, "schema": {"type": "string"}})
}

fn json_content(schema: Value) -> Value {
    json!({"application/json": {"schema": schema}})
}

/// One operation. Every operation names the kind it serves in
/// `x-kubernetes-group-version-kind`: `kubectl explain` finds a resource's kind that way, and
/// `kubectl apply` looks for its PATCH operation.
fn operation(
    id: String,
    action: &str,
    gvk: &Value,
    params: &[&[Param]],
    body: Option<Value>,
    code: &str,
    response: Value,
) -> Value {
    let params: Vec<Value> = params
        .iter()
        .flat_map(|set| set.iter())
        .map(|(name, ty, what)| {
            json!({"name": name, "in": "query", "description": what, "schema": {"type": ty}})
        })
        .collect();
    let mut op = json!({
        "operationId": id,
        "x-kubernetes-action": action,
        "x-kubernetes-group-version-kind": gvk,
        "parameters": params,
        "responses": {code: {"description": "OK", "content": response}},
    });
    if let Some(content) = body {
        op["requestBody"] = json!({"required": true, "content": content});
    }
    op
}

/// `patch` with every patch type skiff takes.
fn patch_operation(id: String, gvk: &Value, schema: &str) -> Value {
    let patch = json!({"schema": {"type": "object"}});
    let body = json!({
        "application/apply-patch+yaml": patch,
        "application/json-patch+json": patch,
        "application/merge-patch+json": patch,
        "application/strategic-merge-patch+json": patch,
    });
    operation(
        id,
        "patch",
        gvk,
        &[WRITE, FORCE],
        Some(body),
        "200",
        json_content(reference(schema)),
    )
}

/// `get`, `put` and `patch` of an object or its status or scale.
fn read_write(id: &str, gvk: &Value, schema: &str) -> Value {
    let r = reference(schema);
    json!({
        "get": operation(format!("read{id}"), "get", gvk, &[], None, "200", json_content(r.clone())),
        "put": operation(format!("replace{id}"), "put", gvk, &[WRITE], Some(json!({"*/*": {"schema": r.clone()}})), "200", json_content(r)),
        "patch": patch_operation(format!("patch{id}"), gvk, schema),
    })
}

fn camel(s: &str) -> String {
    let mut c = s.chars();
    c.next()
        .map(|f| f.to_ascii_uppercase().to_string() + c.as_str())
        .unwrap_or_default()
}

/// The schema names a group-version's paths refer to besides its kinds.
struct Shared {
    status: String,
    delete_options: String,
    list_meta: String,
    scale: String,
    binding: String,
    eviction: String,
}

/// The paths of one resource and its subresources, as the Kubernetes API server lays them out.
fn resource_paths(paths: &mut Map<String, Value>, r: &'static Resource, kind: &str, s: &Shared) {
    let prefix = format!("/{}", gv_path(r.group, r.version));
    let label = r.group.split('.').next().filter(|g| !g.is_empty());
    // `CoreV1`, `AppsV1`, `CoordinationV1`: how Kubernetes' operation ids name a group-version.
    let gv = format!("{}{}", camel(label.unwrap_or("core")), camel(r.version));
    let (ns, kind_name) = (if r.namespaced { "Namespaced" } else { "" }, r.kind);
    let id = format!("{gv}{ns}{kind_name}");
    let own = gvk(r.group, r.version, r.kind);
    let list_schema = reference(&format!("{kind}List"));
    let (collection, mut common) = if r.namespaced {
        (
            format!("{prefix}/namespaces/{{namespace}}/{}", r.plural),
            vec![path_param("namespace", "The object's namespace.")],
        )
    } else {
        (format!("{prefix}/{}", r.plural), Vec::new())
    };
    let kind_ref = reference(kind);
    paths.insert(
        collection.clone(),
        json!({
            "parameters": common,
            "get": operation(format!("list{id}"), "list", &own, &[LIST], None, "200", json_content(list_schema.clone())),
            "post": operation(format!("create{id}"), "post", &own, &[WRITE], Some(json!({"*/*": {"schema": kind_ref}})), "201", json_content(kind_ref.clone())),
            "delete": operation(
                format!("delete{gv}Collection{ns}{kind_name}"),
                "deletecollection", &own, &[LIST, DELETE],
                Some(json!({"*/*": {"schema": reference(&s.delete_options)}})),
                "200", json_content(reference(&s.status)),
            ),
        }),
    );
    if r.namespaced {
        let all = format!("list{gv}{kind_name}ForAllNamespaces");
        paths.insert(
            format!("{prefix}/{}", r.plural),
            json!({"get": operation(all, "list", &own, &[LIST], None, "200", json_content(list_schema))}),
        );
    }
    common.push(path_param("name", "The object's name."));
    let mut item = read_write(&id, &own, kind);
    item["parameters"] = json!(common);
    item["delete"] = operation(
        format!("delete{id}"),
        "delete",
        &own,
        &[DELETE],
        Some(json!({"*/*": {"schema": reference(&s.delete_options)}})),
        "200",
        json_content(kind_ref),
    );
    if r.strategy.computed().is_some() {
        // Read-only: the collection lists, an item is read.
        if let Some(c) = paths.get_mut(&collection).and_then(Value::as_object_mut) {
            c.remove("post");
            c.remove("delete");
        }
        if let Some(i) = item.as_object_mut() {
            i.retain(|k, _| k == "get" || k == "parameters");
        }
    }
    paths.insert(format!("{collection}/{{name}}"), item);

    for sub in r.subresources {
        let (sub_kind, _, other_gv) = discovery::subresource(r, sub);
        let (sg, sv) = other_gv.unwrap_or((r.group, r.version));
        let sub_gvk = gvk(sg, sv, sub_kind);
        let sub_id = format!("{id}{}", camel(sub));
        let mut item = match *sub {
            "status" => read_write(&sub_id, &sub_gvk, kind),
            "scale" => read_write(&sub_id, &sub_gvk, &s.scale),
            "log" => json!({"get": operation(
                format!("read{sub_id}"), "get", &sub_gvk, &[], None, "200",
                json!({"text/plain": {"schema": {"type": "string"}}}),
            )}),
            "binding" | "eviction" => {
                let schema = if *sub == "binding" {
                    &s.binding
                } else {
                    &s.eviction
                };
                json!({"post": operation(
                    format!("create{sub_id}"), "post", &sub_gvk, &[WRITE],
                    Some(json!({"*/*": {"schema": reference(schema)}})),
                    "201", json_content(reference(schema)),
                )})
            }
            _ => continue,
        };
        item["parameters"] = json!(common);
        paths.insert(format!("{collection}/{{name}}/{sub}"), item);
    }
}

/// The list kind of `kind` (`PodList`), which k8s-openapi has no schema for.
fn list_schema(kind_schema: &str, kind: &str, list_meta: &str, gvk: Value) -> Value {
    json!({
        "description": format!("{kind}List is a list of {kind} objects."),
        "type": "object",
        "required": ["items"],
        "properties": {
            "apiVersion": {"type": "string", "description": "The versioned schema of this representation of an object."},
            "kind": {"type": "string", "description": "The REST resource this object represents."},
            "metadata": {"allOf": [reference(list_meta)], "description": "Standard list metadata."},
            "items": {"type": "array", "items": reference(kind_schema), "description": format!("The {kind} objects.")},
        },
        "x-kubernetes-group-version-kind": [gvk],
    })
}

/// Declares the merge keys of the lists kubectl's strategic merge patches merge by key.
fn declare_merge_keys(schemas: &mut Map<String, Value>) {
    for (name, schema) in schemas.iter_mut() {
        let Some(props) = schema.get_mut("properties").and_then(Value::as_object_mut) else {
            continue;
        };
        for (field, prop) in props.iter_mut() {
            let of_objects = prop["type"] == "array" && prop["items"].get("$ref").is_some();
            if let Some(key) = patch::declared_merge_key(name, field).filter(|_| of_objects) {
                prop["x-kubernetes-patch-merge-key"] = json!(key);
                prop["x-kubernetes-patch-strategy"] = json!("merge");
            }
        }
    }
}

/// The OpenAPI 3.0 document of one group-version.
fn document(group: &str, version: &str) -> Value {
    use k8s_openapi::api::{autoscaling, core, policy};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1 as meta;
    let mut generator = SchemaSettings::openapi3().into_generator();
    let shared = Shared {
        status: register::<meta::Status>(&mut generator),
        delete_options: register::<meta::DeleteOptions>(&mut generator),
        list_meta: register::<meta::ListMeta>(&mut generator),
        scale: register::<autoscaling::v1::Scale>(&mut generator),
        binding: register::<core::v1::Binding>(&mut generator),
        eviction: register::<policy::v1::Eviction>(&mut generator),
    };
    let mut paths = Map::new();
    let mut kinds = Vec::new();
    for r in RESOURCES
        .iter()
        .filter(|r| r.group == group && r.version == version)
    {
        let name = r.strategy.types().register(&mut generator);
        resource_paths(&mut paths, r, &name, &shared);
        kinds.push((name, r));
    }
    let mut schemas = generator.take_definitions(true);
    for (name, r) in kinds {
        let list = list_schema(
            &name,
            r.kind,
            &shared.list_meta,
            gvk(r.group, r.version, &format!("{}List", r.kind)),
        );
        schemas.insert(format!("{name}List"), list);
        if let Some(s) = schemas.get_mut(&name) {
            s["x-kubernetes-group-version-kind"] = json!([gvk(r.group, r.version, r.kind)]);
            // k8s-openapi requires metadata to make it non-optional in Rust; the API does not.
            if let Some(req) = s.get_mut("required").and_then(Value::as_array_mut) {
                req.retain(|f| f != "metadata");
                // OpenAPI allows no empty `required`.
                if req.is_empty()
                    && let Some(o) = s.as_object_mut()
                {
                    o.remove("required");
                }
            }
        }
    }
    for (name, g, v, k) in [
        (&shared.scale, "autoscaling", "v1", "Scale"),
        (&shared.binding, "", "v1", "Binding"),
        (&shared.eviction, "policy", "v1", "Eviction"),
    ] {
        if let Some(s) = schemas.get_mut(name.as_str()) {
            s["x-kubernetes-group-version-kind"] = json!([gvk(g, v, k)]);
        }
    }
    declare_merge_keys(&mut schemas);
    json!({
        "openapi": "3.0.0",
        "info": {"title": "Kubernetes", "version": discovery::version()["gitVersion"]},
        "paths": paths,
        "components": {"schemas": schemas},
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn doc(path: &str) -> Value {
        serde_json::from_str(&documents()[path].json).unwrap()
    }

    #[test]
    fn discovery_lists_every_group_version() {
        let d = discovery();
        let paths = d["paths"].as_object().unwrap();
        for p in [
            "api/v1",
            "apis/apps/v1",
            "apis/batch/v1",
            "apis/coordination.k8s.io/v1",
            "apis/discovery.k8s.io/v1",
            "apis/storage.k8s.io/v1",
            "apis/policy/v1",
            "apis/rbac.authorization.k8s.io/v1",
            "apis/apiregistration.k8s.io/v1",
            "apis/scheduling.k8s.io/v1",
        ] {
            let url = paths[p]["serverRelativeURL"].as_str().unwrap();
            assert!(url.starts_with(&format!("/openapi/v3/{p}?hash=")), "{url}");
        }
        assert_eq!(paths.len(), 10);
    }

    /// What kubectl's queryParamVerifierV3 checks before it sends `fieldValidation`: a PATCH
    /// operation for the kind that declares the parameter.
    #[test]
    fn every_kind_patch_declares_field_validation() {
        // Read-only kinds (ComponentStatus) have no PATCH at all.
        for r in RESOURCES.iter().filter(|r| r.strategy.computed().is_none()) {
            let d = doc(&gv_path(r.group, r.version));
            let want = gvk(r.group, r.version, r.kind);
            let patch = d["paths"]
                .as_object()
                .unwrap()
                .values()
                .find(|p| p["patch"]["x-kubernetes-group-version-kind"] == want)
                .unwrap_or_else(|| panic!("no PATCH for {}", r.kind));
            let params = patch["patch"]["parameters"].as_array().unwrap();
            for name in ["fieldValidation", "fieldManager", "dryRun", "force"] {
                assert!(
                    params
                        .iter()
                        .any(|p| p["name"] == name && p["in"] == "query"),
                    "{} PATCH lacks {name}",
                    r.kind
                );
            }
            let content = patch["patch"]["requestBody"]["content"]
                .as_object()
                .unwrap();
            assert!(content.contains_key("application/strategic-merge-patch+json"));
        }
    }

    #[test]
    fn kinds_carry_their_group_version_kind_and_nested_schemas() {
        let d = doc("apis/apps/v1");
        let schemas = &d["components"]["schemas"];
        let deploy = &schemas["io.k8s.api.apps.v1.Deployment"];
        assert_eq!(
            deploy["x-kubernetes-group-version-kind"],
            json!([{"group": "apps", "version": "v1", "kind": "Deployment"}])
        );
        assert!(
            deploy["description"]
                .as_str()
                .unwrap()
                .contains("Deployment")
        );
        assert!(
            !deploy["required"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|f| f == "metadata")
        );
        // References resolve inside the document, so explain can walk deployment.spec.
        let spec = &deploy["properties"]["spec"];
        let target = spec["allOf"][0]["$ref"]
            .as_str()
            .or(spec["$ref"].as_str())
            .unwrap();
        let name = target.strip_prefix(SCHEMAS).unwrap();
        assert!(schemas[name]["properties"]["replicas"].is_object());
        let list = &schemas["io.k8s.api.apps.v1.DeploymentList"];
        assert_eq!(
            list["x-kubernetes-group-version-kind"][0]["kind"],
            "DeploymentList"
        );
        let ops = &d["paths"]["/apis/apps/v1/namespaces/{namespace}/deployments/{name}/scale"];
        assert_eq!(
            ops["put"]["x-kubernetes-group-version-kind"]["kind"],
            "Scale"
        );
        for schema in schemas.as_object().unwrap().values() {
            for r in schema.to_string().split("\"$ref\":\"").skip(1) {
                let name = r.split('"').next().unwrap();
                let name = name.strip_prefix(SCHEMAS).unwrap();
                assert!(schemas.get(name).is_some(), "dangling $ref {name}");
            }
        }
    }

    #[test]
    fn lists_declare_their_merge_keys() {
        let d = doc("api/v1");
        let s = &d["components"]["schemas"];
        let key = |ty: &str, field: &str| {
            s[ty]["properties"][field]["x-kubernetes-patch-merge-key"].clone()
        };
        assert_eq!(key("io.k8s.api.core.v1.PodSpec", "containers"), "name");
        assert_eq!(
            key("io.k8s.api.core.v1.Container", "ports"),
            "containerPort"
        );
        assert_eq!(key("io.k8s.api.core.v1.ServiceSpec", "ports"), "port");
        assert_eq!(key("io.k8s.api.core.v1.Container", "env"), "name");
        assert_eq!(
            key("io.k8s.api.core.v1.PodSpec", "nodeSelector"),
            Value::Null
        );
        assert_eq!(
            s["io.k8s.api.core.v1.PodSpec"]["properties"]["containers"]["x-kubernetes-patch-strategy"],
            "merge"
        );
    }

    #[test]
    fn swagger_merges_every_document_with_v2_references_and_bodies() {
        let d: Value = serde_json::from_str(swagger()).unwrap();
        assert_eq!(d["swagger"], "2.0");
        let defs = d["definitions"].as_object().unwrap();
        for name in [
            "io.k8s.api.core.v1.Pod",
            "io.k8s.api.apps.v1.Deployment",
            "io.k8s.api.batch.v1.Job",
            "io.k8s.api.coordination.v1.Lease",
            "io.k8s.api.discovery.v1.EndpointSlice",
        ] {
            assert!(
                defs[name]["x-kubernetes-group-version-kind"].is_array(),
                "{name}"
            );
        }
        let text = swagger();
        assert!(!text.contains("#/components/"));
        assert!(!text.contains("\"requestBody\""));
        for r in text.split("\"$ref\":\"").skip(1) {
            let name = r.split('"').next().unwrap();
            let name = name.strip_prefix("#/definitions/").unwrap();
            assert!(defs.contains_key(name), "dangling $ref {name}");
        }
        let pods = &d["paths"]["/api/v1/namespaces/{namespace}/pods"];
        let create = &pods["post"];
        let body = create["parameters"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["in"] == "body")
            .unwrap();
        assert_eq!(
            body["schema"]["$ref"],
            "#/definitions/io.k8s.api.core.v1.Pod"
        );
        assert_eq!(
            create["responses"]["201"]["schema"]["$ref"],
            "#/definitions/io.k8s.api.core.v1.Pod"
        );
        assert_eq!(create["produces"], json!(["application/json"]));
        let list = &pods["get"]["parameters"];
        let selector = list
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["name"] == "labelSelector")
            .unwrap();
        assert_eq!(selector["type"], "string");
        assert!(selector.get("schema").is_none());
        assert_eq!(pods["parameters"][0]["type"], "string");
        let patch = &d["paths"]["/apis/apps/v1/namespaces/{namespace}/deployments/{name}"]["patch"];
        assert!(
            patch["consumes"]
                .as_array()
                .unwrap()
                .contains(&json!("application/strategic-merge-patch+json"))
        );
    }
}
