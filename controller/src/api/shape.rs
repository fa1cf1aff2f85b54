//! What a kind's objects may look like, read from its OpenAPI schema: the types a body is held
//! to when it is decoded, and which of its fields the kind knows. Kubernetes gets both from
//! decoding into its Go types; skiff walks the JSON against the same schemas it serves at
//! `/openapi/v3` (k8s-openapi's), compiled once per kind. A wrong type is a 400 in the Go
//! decoder's words (`json: cannot unmarshal string into Go struct field ContainerPort.spec.
//! containers.ports.containerPort of type int32`); unknown fields are reported with their
//! paths and pruned before anything is stored.

use std::collections::HashMap;
use std::sync::OnceLock;

use base64::Engine as _;
use k8s_openapi::schemars::generate::SchemaSettings;
use serde_json::{Map, Value};

use super::resources::{RESOURCES, Resource};

/// One node of a compiled schema; references are indices into [`Shape::nodes`].
#[derive(Debug, Clone, PartialEq)]
enum Node {
    /// Anything goes, and it is kept whole (raw extensions, `FieldsV1`, untyped objects).
    Any,
    String,
    /// A base64 string (`[]byte` in Go).
    Bytes,
    /// An RFC 3339 time.
    Time,
    Int32,
    Int64,
    Number,
    Boolean,
    /// `intstr.IntOrString`: a 32-bit integer or a string.
    IntOrString,
    /// `resource.Quantity`: a string or a number.
    Quantity,
    Array(usize),
    /// An object whose keys are free and whose values have one type.
    Map(usize),
    /// An object with named fields; `name` is its Go type (`v1.Container`).
    Struct {
        name: String,
        fields: HashMap<String, usize>,
    },
}

/// A kind's schema, compiled.
#[derive(Debug)]
pub struct Shape {
    nodes: Vec<Node>,
    root: usize,
}

/// A value of the wrong type, as Go's JSON decoder reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TypeError(String);

impl std::fmt::Display for TypeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

const REF_PREFIX: &str = "#/components/schemas/";
const INT_OR_STRING: &str = "io.k8s.apimachinery.pkg.util.intstr.IntOrString";
const QUANTITY: &str = "io.k8s.apimachinery.pkg.api.resource.Quantity";

/// The Go name of a schema: `io.k8s.api.core.v1.Container` is `v1.Container`.
fn go_name(schema: &str) -> String {
    let mut parts = schema.rsplit('.');
    match (parts.next(), parts.next()) {
        (Some(ty), Some(pkg)) => format!("{pkg}.{ty}"),
        _ => schema.to_string(),
    }
}

struct Compiler<'a> {
    defs: &'a Map<String, Value>,
    nodes: Vec<Node>,
    named: HashMap<String, usize>,
}

impl Compiler<'_> {
    fn reference(&mut self, name: &str) -> usize {
        if let Some(&i) = self.named.get(name) {
            return i;
        }
        let node = match name {
            INT_OR_STRING => Node::IntOrString,
            QUANTITY => Node::Quantity,
            _ => Node::Any,
        };
        let i = self.push(node);
        self.named.insert(name.to_string(), i);
        if matches!(self.nodes[i], Node::Any)
            && let Some(schema) = self.defs.get(name)
        {
            // Filled in after the index is known, so a type that contains itself ends.
            self.nodes[i] = self.node(schema, Some(name));
        }
        i
    }

    fn push(&mut self, node: Node) -> usize {
        self.nodes.push(node);
        self.nodes.len() - 1
    }

    fn compile(&mut self, schema: &Value) -> usize {
        if let Some(r) = schema.get("$ref").and_then(Value::as_str) {
            return self.reference(r.strip_prefix(REF_PREFIX).unwrap_or(r));
        }
        // A reference with a description of its own is written `allOf: [{$ref}]`.
        if let Some([one]) = schema
            .get("allOf")
            .and_then(Value::as_array)
            .map(Vec::as_slice)
        {
            return self.compile(one);
        }
        let node = self.node(schema, None);
        self.push(node)
    }

    fn node(&mut self, schema: &Value, name: Option<&str>) -> Node {
        let format = schema.get("format").and_then(Value::as_str);
        if schema.get("x-kubernetes-int-or-string") == Some(&Value::Bool(true)) {
            return Node::IntOrString;
        }
        match schema.get("type").and_then(Value::as_str) {
            Some("string") => match format {
                Some("byte") => Node::Bytes,
                Some("date-time") => Node::Time,
                _ => Node::String,
            },
            Some("integer") => match format {
                Some("int32") => Node::Int32,
                _ => Node::Int64,
            },
            Some("number") => Node::Number,
            Some("boolean") => Node::Boolean,
            Some("array") => match schema.get("items") {
                Some(items) => Node::Array(self.compile(items)),
                None => Node::Any,
            },
            Some("object") | None
                if schema.get("properties").is_some() || schema.get("type").is_some() =>
            {
                if let Some(props) = schema.get("properties").and_then(Value::as_object) {
                    let fields = props
                        .iter()
                        .map(|(k, v)| (k.clone(), self.compile(v)))
                        .collect();
                    Node::Struct {
                        name: name.map(go_name).unwrap_or_else(|| "struct".into()),
                        fields,
                    }
                } else if let Some(values) =
                    schema.get("additionalProperties").filter(|v| v.is_object())
                {
                    Node::Map(self.compile(values))
                } else {
                    Node::Any
                }
            }
            _ => Node::Any,
        }
    }
}

impl Shape {
    /// Compiles the schema named `root` from `defs` (OpenAPI `components/schemas`).
    pub fn compile(defs: &Map<String, Value>, root: &str) -> Shape {
        let mut c = Compiler {
            defs,
            nodes: Vec::new(),
            named: HashMap::new(),
        };
        let root = c.reference(root);
        Shape {
            nodes: c.nodes,
            root,
        }
    }

    /// The shape of `res`'s kind, compiled on first use.
    pub fn of(res: &Resource) -> &'static Shape {
        static SHAPES: OnceLock<HashMap<String, Shape>> = OnceLock::new();
        let shapes = SHAPES.get_or_init(|| {
            let mut generator = SchemaSettings::openapi3().into_generator();
            let names: Vec<String> = RESOURCES
                .iter()
                .map(|r| r.strategy.types().register(&mut generator))
                .collect();
            let defs = generator.take_definitions(true);
            names
                .into_iter()
                .map(|n| {
                    let shape = Shape::compile(&defs, &n);
                    (n, shape)
                })
                .collect()
        });
        let name = res.strategy.types().schema_name();
        match shapes.get(name.as_ref()) {
            Some(s) => s,
            None => {
                static ANY: Shape = Shape {
                    nodes: Vec::new(),
                    root: usize::MAX,
                };
                &ANY
            }
        }
    }

    fn node(&self, i: usize) -> &Node {
        self.nodes.get(i).unwrap_or(&Node::Any)
    }

    /// Checks every value's type; the first wrong one is the error.
    pub fn check(&self, obj: &Value) -> Result<(), TypeError> {
        let owner = match self.node(self.root) {
            Node::Struct { name, .. } => short(name),
            _ => "",
        };
        let mut at = At {
            owner,
            path: String::new(),
        };
        self.check_at(self.root, obj, &mut at)
    }

    fn check_at<'s>(&'s self, i: usize, v: &Value, at: &mut At<'s>) -> Result<(), TypeError> {
        if v.is_null() {
            // Go leaves the zero value; so does k8s-openapi.
            return Ok(());
        }
        let node = self.node(i);
        match (node, v) {
            (Node::Any, _) => Ok(()),
            (Node::String, Value::String(_)) => Ok(()),
            (Node::Bytes, Value::String(s)) => {
                base64::engine::general_purpose::STANDARD
                    .decode(s)
                    .map(|_| ())
                    .map_err(|e| {
                        let byte = match e {
                            base64::DecodeError::InvalidByte(at, _)
                            | base64::DecodeError::InvalidLastSymbol(at, _) => at,
                            base64::DecodeError::InvalidLength(_)
                            | base64::DecodeError::InvalidPadding => s.len(),
                        };
                        TypeError(format!(
                            "illegal base64 data at input byte {byte} (in {})",
                            at.path
                        ))
                    })
            }
            (Node::Time, Value::String(s)) => {
                s.parse::<jiff::Timestamp>().map(|_| ()).map_err(|e| {
                    TypeError(format!(
                        "parsing time {s:?} in {}: {e} (times are RFC 3339, as 2006-01-02T15:04:05Z)",
                        at.path
                    ))
                })
            }
            (Node::Int32, Value::Number(n)) => match n.as_i64() {
                Some(x) if i32::try_from(x).is_ok() => Ok(()),
                _ => Err(at.wrong(&format!("number {n}"), self.go_type(i))),
            },
            (Node::Int64, Value::Number(n)) if n.is_i64() => Ok(()),
            (Node::Int64, Value::Number(n)) => Err(at.wrong(&format!("number {n}"), self.go_type(i))),
            (Node::Number | Node::Quantity, Value::Number(_)) => Ok(()),
            (Node::Quantity | Node::IntOrString, Value::String(_)) => Ok(()),
            (Node::IntOrString, Value::Number(n)) => match n.as_i64() {
                Some(x) if i32::try_from(x).is_ok() => Ok(()),
                _ => Err(at.wrong(&format!("number {n}"), self.go_type(i))),
            },
            (Node::Boolean, Value::Bool(_)) => Ok(()),
            (Node::Array(item), Value::Array(a)) => {
                for x in a {
                    self.check_at(*item, x, at)?;
                }
                Ok(())
            }
            (Node::Map(value), Value::Object(m)) => {
                for x in m.values() {
                    self.check_at(*value, x, at)?;
                }
                Ok(())
            }
            (Node::Struct { name, fields }, Value::Object(m)) => {
                let (outer, len) = (std::mem::replace(&mut at.owner, short(name)), at.path.len());
                for (k, x) in m {
                    let Some(&f) = fields.get(k) else { continue };
                    push_field(&mut at.path, k);
                    self.check_at(f, x, at)?;
                    at.path.truncate(len);
                }
                at.owner = outer;
                Ok(())
            }
            (_, v) => Err(at.wrong(json_type(v), self.go_type(i))),
        }
    }

    /// The fields of `obj` the kind does not know, with their paths (`spec.containers[0].foo`),
    /// as strict field validation reports them.
    pub fn unknown_fields(&self, obj: &Value) -> Vec<String> {
        let mut out = Vec::new();
        self.unknown_at(self.root, obj, &mut String::new(), &mut out);
        out
    }

    fn unknown_at(&self, i: usize, v: &Value, path: &mut String, out: &mut Vec<String>) {
        let len = path.len();
        match (self.node(i), v) {
            (Node::Array(item), Value::Array(a)) => {
                for (n, x) in a.iter().enumerate() {
                    path.push_str(&format!("[{n}]"));
                    self.unknown_at(*item, x, path, out);
                    path.truncate(len);
                }
            }
            (Node::Map(value), Value::Object(m)) => {
                for (k, x) in m {
                    push_field(path, k);
                    self.unknown_at(*value, x, path, out);
                    path.truncate(len);
                }
            }
            (Node::Struct { fields, .. }, Value::Object(m)) => {
                for (k, x) in m {
                    push_field(path, k);
                    match fields.get(k) {
                        Some(&f) => self.unknown_at(f, x, path, out),
                        None => out.push(path.clone()),
                    }
                    path.truncate(len);
                }
            }
            _ => {}
        }
    }

    /// Removes the fields `unknown_fields` reports: Kubernetes drops them when it decodes a
    /// body, so they are never stored.
    pub fn prune(&self, obj: &mut Value) {
        self.prune_at(self.root, obj);
    }

    fn prune_at(&self, i: usize, v: &mut Value) {
        match (self.node(i), v) {
            (Node::Array(item), Value::Array(a)) => {
                for x in a {
                    self.prune_at(*item, x);
                }
            }
            (Node::Map(value), Value::Object(m)) => {
                for x in m.values_mut() {
                    self.prune_at(*value, x);
                }
            }
            (Node::Struct { fields, .. }, Value::Object(m)) => {
                m.retain(|k, _| fields.contains_key(k));
                for (k, x) in m.iter_mut() {
                    if let Some(&f) = fields.get(k) {
                        self.prune_at(f, x);
                    }
                }
            }
            _ => {}
        }
    }

    /// The Go type of a node, as the decoder names it in errors.
    fn go_type(&self, i: usize) -> String {
        match self.node(i) {
            Node::Any => "interface {}".into(),
            Node::String => "string".into(),
            Node::Bytes => "[]uint8".into(),
            Node::Time => "v1.Time".into(),
            Node::Int32 => "int32".into(),
            Node::Int64 => "int64".into(),
            Node::Number => "float64".into(),
            Node::Boolean => "bool".into(),
            Node::IntOrString => "intstr.IntOrString".into(),
            Node::Quantity => "resource.Quantity".into(),
            Node::Array(item) => format!("[]{}", self.go_type(*item)),
            Node::Map(value) => format!("map[string]{}", self.go_type(*value)),
            Node::Struct { name, .. } => name.clone(),
        }
    }
}

fn push_field(path: &mut String, k: &str) {
    if !path.is_empty() {
        path.push('.');
    }
    path.push_str(k);
}

/// `v1.Container` is `Container` where Go names a struct field.
fn short(go_name: &str) -> &str {
    go_name.rsplit('.').next().unwrap_or(go_name)
}

/// Where the check is: the Go struct that holds the field, and the field's path from the root
/// without list indices, as Go's decoder names them.
struct At<'s> {
    owner: &'s str,
    path: String,
}

impl At<'_> {
    fn wrong(&self, value: &str, ty: String) -> TypeError {
        if self.path.is_empty() {
            TypeError(format!(
                "json: cannot unmarshal {value} into Go value of type {ty}"
            ))
        } else {
            TypeError(format!(
                "json: cannot unmarshal {value} into Go struct field {}.{} of type {ty}",
                self.owner, self.path
            ))
        }
    }
}

/// A JSON value's kind, in the Go decoder's words.
fn json_type(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "bool",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::resources;
    use serde_json::json;

    fn pod() -> &'static Shape {
        Shape::of(resources::pods())
    }

    #[test]
    fn wrong_types_are_named_as_the_go_decoder_names_them() {
        let cases = [
            (
                json!({"spec": {"containers": "nope"}}),
                "json: cannot unmarshal string into Go struct field PodSpec.spec.containers of type []v1.Container",
            ),
            (
                json!({"spec": {"containers": [{"name": "a", "ports": [{"containerPort": "80"}]}]}}),
                "json: cannot unmarshal string into Go struct field ContainerPort.spec.containers.ports.containerPort of type int32",
            ),
            (
                json!({"spec": {"containers": [{"name": "a", "ports": [{"containerPort": 1.5}]}]}}),
                "json: cannot unmarshal number 1.5 into Go struct field ContainerPort.spec.containers.ports.containerPort of type int32",
            ),
            (
                json!({"metadata": {"labels": {"a": 1}}}),
                "json: cannot unmarshal number into Go struct field ObjectMeta.metadata.labels of type string",
            ),
            (
                json!({"spec": 3}),
                "json: cannot unmarshal number into Go struct field Pod.spec of type v1.PodSpec",
            ),
            (
                json!({"spec": {"containers": [{"name": "a", "livenessProbe": {"httpGet": {"port": true}}}]}}),
                "json: cannot unmarshal bool into Go struct field HTTPGetAction.spec.containers.livenessProbe.httpGet.port of type intstr.IntOrString",
            ),
            (
                json!({"spec": {"activeDeadlineSeconds": 9_223_372_036_854_775_808_u64}}),
                "json: cannot unmarshal number 9223372036854775808 into Go struct field PodSpec.spec.activeDeadlineSeconds of type int64",
            ),
            (
                json!({"spec": {"hostNetwork": "yes"}}),
                "json: cannot unmarshal string into Go struct field PodSpec.spec.hostNetwork of type bool",
            ),
            (
                json!([]),
                "json: cannot unmarshal array into Go value of type v1.Pod",
            ),
        ];
        for (obj, want) in cases {
            assert_eq!(pod().check(&obj).unwrap_err().to_string(), want, "{obj}");
        }
    }

    #[test]
    fn what_the_decoder_takes_passes() {
        let p = json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "p", "creationTimestamp": null, "labels": {"a": "b"},
                "managedFields": [{"fieldsV1": {"f:spec": {}}, "time": "2024-01-02T03:04:05Z"}]},
            "spec": {"containers": [{"name": "a", "image": "x", "ports": [{"containerPort": 80}],
                "resources": {"limits": {"cpu": 0.5, "memory": "64Mi"}, "requests": {"cpu": 1}},
                "readinessProbe": {"tcpSocket": {"port": "http"}, "periodSeconds": 3}}],
                "terminationGracePeriodSeconds": 30, "hostNetwork": null},
        });
        pod().check(&p).unwrap();
        let secrets = RESOURCES.iter().find(|r| r.kind == "Secret").unwrap();
        let s = Shape::of(secrets);
        s.check(&json!({"data": {"k": "aGVsbG8="}})).unwrap();
        let e = s.check(&json!({"data": {"k": "a!"}})).unwrap_err();
        assert_eq!(
            e.to_string(),
            "illegal base64 data at input byte 1 (in data)"
        );
        let e = pod()
            .check(&json!({"metadata": {"creationTimestamp": "yesterday"}}))
            .unwrap_err();
        assert!(
            e.to_string()
                .starts_with("parsing time \"yesterday\" in metadata.creationTimestamp: "),
            "{e}"
        );
    }

    #[test]
    fn unknown_fields_are_found_by_path_and_pruned() {
        let mut p = json!({
            "metadata": {"name": "p", "labels": {"free": "x"}, "bogus": 1},
            "spec": {"containers": [{"name": "a", "imagee": "x", "env": [{"name": "E", "vaule": "1"}]}],
                "nodeSelector": {"any": "key"}, "extra": null},
            "status": {},
            "top": {},
        });
        let mut unknown = pod().unknown_fields(&p);
        unknown.sort();
        assert_eq!(
            unknown,
            vec![
                "metadata.bogus",
                "spec.containers[0].env[0].vaule",
                "spec.containers[0].imagee",
                "spec.extra",
                "top",
            ]
        );
        pod().prune(&mut p);
        assert_eq!(
            p,
            json!({
                "metadata": {"name": "p", "labels": {"free": "x"}},
                "spec": {"containers": [{"name": "a", "env": [{"name": "E"}]}],
                    "nodeSelector": {"any": "key"}},
                "status": {},
            })
        );
        assert!(pod().unknown_fields(&p).is_empty());
    }

    #[test]
    fn opaque_fields_keep_what_they_hold() {
        let mut rev = json!({"data": {"anything": [1, {"x": 2}]}, "revision": 1});
        let shape = Shape::of(resources::controller_revisions());
        assert!(shape.unknown_fields(&rev).is_empty());
        let before = rev.clone();
        shape.prune(&mut rev);
        assert_eq!(rev, before);
    }

    #[test]
    fn every_kind_compiles_to_a_struct() {
        for r in RESOURCES {
            let shape = Shape::of(r);
            assert!(
                matches!(shape.node(shape.root), Node::Struct { fields, .. } if fields.contains_key("metadata")),
                "{}",
                r.kind
            );
        }
    }
}
