//! Kubernetes protobuf request bodies (`application/vnd.kubernetes.protobuf`), as kubectl 1.32
//! and later send them for `kubectl create`: decoded into the JSON value a JSON client would have
//! sent for the same Go object, which then takes the JSON path unchanged.
//!
//! The wire format is the magic `k8s\0` and a `runtime.Unknown` whose `typeMeta` names the kind
//! and whose `raw` holds the object as Kubernetes' `generated.proto` defines it. The definitions
//! are vendored in `proto/k8s` and compiled into descriptors at build time (`build.rs`); objects
//! are decoded dynamically with prost-reflect against them. Kubernetes' special types
//! (Time, MicroTime, IntOrString, Quantity, RawExtension, FieldsV1) become their JSON forms, and
//! `proto/k8s/go-fields.txt` supplies what the `.proto` files cannot say: which zero scalars Go's
//! JSON keeps and which fields it inlines.

use std::collections::HashSet;
use std::sync::LazyLock;

use base64::Engine as _;
use prost::Message as _;
use prost_reflect::{DescriptorPool, DynamicMessage, Kind, MapKey, MessageDescriptor};
use serde_json::{Map, Value};

use super::resources::Resource;

/// The content type of Kubernetes protobuf bodies.
pub const CONTENT_TYPE: &str = "application/vnd.kubernetes.protobuf";

/// The four bytes every Kubernetes protobuf body starts with.
pub const MAGIC: &[u8; 4] = b"k8s\0";

const TIME: &str = "k8s.io.apimachinery.pkg.apis.meta.v1.Time";
const MICRO_TIME: &str = "k8s.io.apimachinery.pkg.apis.meta.v1.MicroTime";
const FIELDS_V1: &str = "k8s.io.apimachinery.pkg.apis.meta.v1.FieldsV1";
const DELETE_OPTIONS: &str = "k8s.io.apimachinery.pkg.apis.meta.v1.DeleteOptions";
const INT_OR_STRING: &str = "k8s.io.apimachinery.pkg.util.intstr.IntOrString";
const QUANTITY: &str = "k8s.io.apimachinery.pkg.api.resource.Quantity";
const QUANTITY_VALUE: &str = "k8s.io.apimachinery.pkg.api.resource.QuantityValue";
const RAW_EXTENSION: &str = "k8s.io.apimachinery.pkg.runtime.RawExtension";

/// Why a protobuf body was refused.
#[derive(Debug, thiserror::Error)]
pub enum ProtobufError {
    #[error("the protobuf body does not start with the magic bytes \"k8s\\x00\"")]
    BadMagic,
    #[error("the protobuf envelope (runtime.Unknown) cannot be decoded: {0}")]
    Envelope(prost::DecodeError),
    #[error("content encoding {0:?} of the protobuf body is not supported")]
    ContentEncoding(String),
    #[error("content type {0:?} inside the protobuf envelope is not supported")]
    ContentType(String),
    #[error(
        "the protobuf body holds a {kind} of {api_version:?}, but this request takes {expected}"
    )]
    WrongKind {
        api_version: String,
        kind: String,
        expected: String,
    },
    #[error("the protobuf {kind} cannot be decoded: {source}")]
    Decode {
        kind: String,
        source: prost::DecodeError,
    },
    #[error("the protobuf {kind} is invalid at {field}: {problem}")]
    Field {
        kind: String,
        field: String,
        problem: String,
    },
    #[error("the protobuf descriptors built into skiff are unusable: {0}")]
    Descriptors(String),
}

impl ProtobufError {
    /// Whether the client sent a format (rather than content) the server does not take: 415.
    pub fn unsupported_media(&self) -> bool {
        matches!(
            self,
            ProtobufError::ContentEncoding(_) | ProtobufError::ContentType(_)
        )
    }
}

/// What a request's URL says its body is.
#[derive(Debug, Clone, Copy)]
pub enum Expected<'a> {
    /// An object of the resource (create, update, status update).
    Object(&'a Resource),
    /// A `v1` Binding (`pods/binding`).
    Binding,
    /// A `policy/v1` Eviction (`pods/eviction`).
    Eviction,
    /// An `autoscaling/v1` Scale (`*/scale`).
    Scale,
    /// DeleteOptions, in `meta.k8s.io/v1` or the resource's own group version.
    DeleteOptions(&'a Resource),
    /// A patch: JSON or YAML only, as Kubernetes takes them.
    Patch,
}

impl Expected<'_> {
    /// The protobuf message of (`apiVersion`, `kind`) if this request takes that kind.
    fn message(&self, api_version: &str, kind: &str) -> Option<String> {
        let ok = match self {
            Expected::Object(res) => api_version == res.api_version() && kind == res.kind,
            Expected::Binding => api_version == "v1" && kind == "Binding",
            // policy/v1beta1's Eviction has the same fields and numbers.
            Expected::Eviction => {
                matches!(api_version, "policy/v1" | "policy/v1beta1") && kind == "Eviction"
            }
            Expected::Scale => api_version == "autoscaling/v1" && kind == "Scale",
            Expected::DeleteOptions(res) => {
                kind == "DeleteOptions"
                    && (api_version == "meta.k8s.io/v1" || api_version == res.api_version())
            }
            Expected::Patch => false,
        };
        if !ok {
            return None;
        }
        Some(match self {
            Expected::DeleteOptions(_) | Expected::Patch => DELETE_OPTIONS.to_string(),
            Expected::Object(res) => format!("{}.{kind}", package(res.group)),
            Expected::Binding => format!("k8s.io.api.core.v1.{kind}"),
            Expected::Eviction => format!("k8s.io.api.policy.v1.{kind}"),
            Expected::Scale => format!("k8s.io.api.autoscaling.v1.{kind}"),
        })
    }

    fn describe(&self) -> String {
        match self {
            Expected::Object(res) => format!("a {} of {:?}", res.kind, res.api_version()),
            Expected::Binding => "a Binding of \"v1\"".into(),
            Expected::Eviction => "an Eviction of \"policy/v1\"".into(),
            Expected::Scale => "a Scale of \"autoscaling/v1\"".into(),
            Expected::DeleteOptions(res) => format!(
                "DeleteOptions of \"meta.k8s.io/v1\" or {:?}",
                res.api_version()
            ),
            Expected::Patch => "a JSON or YAML patch".into(),
        }
    }
}

/// The protobuf package of an API group's `v1`: `core` for `""`, the group's first label else
/// (`coordination.k8s.io` is `k8s.io.api.coordination.v1`).
fn package(group: &str) -> String {
    package_of(group, "v1")
}

/// The protobuf package of an API group-version: `k8s.io.api.<first label>.<version>`, or the
/// aggregator's own for `apiregistration.k8s.io`.
fn package_of(group: &str, version: &str) -> String {
    if group == "apiregistration.k8s.io" {
        return format!("k8s.io.kube_aggregator.pkg.apis.apiregistration.{version}");
    }
    let short = group.split('.').next().filter(|g| !g.is_empty());
    format!("k8s.io.api.{}.{version}", short.unwrap_or("core"))
}

/// `runtime.Unknown`, the envelope around every object.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Unknown {
    #[prost(message, optional, tag = "1")]
    pub type_meta: Option<TypeMeta>,
    #[prost(bytes = "vec", optional, tag = "2")]
    pub raw: Option<Vec<u8>>,
    #[prost(string, optional, tag = "3")]
    pub content_encoding: Option<String>,
    #[prost(string, optional, tag = "4")]
    pub content_type: Option<String>,
}

/// `runtime.TypeMeta`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct TypeMeta {
    #[prost(string, optional, tag = "1")]
    pub api_version: Option<String>,
    #[prost(string, optional, tag = "2")]
    pub kind: Option<String>,
}

/// The descriptors and the Go facts, loaded once.
struct Schema {
    pool: DescriptorPool,
    /// (message, field number) of scalars whose zero Go's JSON keeps.
    keep_zero: HashSet<(&'static str, u32)>,
    /// (message, field number) of fields Go's JSON flattens into their parent.
    inline: HashSet<(&'static str, u32)>,
}

static SCHEMA: LazyLock<Result<Schema, String>> = LazyLock::new(load);

fn load() -> Result<Schema, String> {
    let bytes = include_bytes!(concat!(env!("OUT_DIR"), "/k8s-descriptors.bin"));
    let pool = DescriptorPool::decode(&bytes[..]).map_err(|e| e.to_string())?;
    let (mut keep_zero, mut inline) = (HashSet::new(), HashSet::new());
    for line in include_str!("../../proto/k8s/go-fields.txt").lines() {
        if line.starts_with('#') || line.trim().is_empty() {
            continue;
        }
        let mut parts = line.split_whitespace();
        let (Some(fact), Some(msg), Some(num)) = (parts.next(), parts.next(), parts.next()) else {
            return Err(format!("go-fields.txt: malformed line {line:?}"));
        };
        let num: u32 = num
            .parse()
            .map_err(|_| format!("go-fields.txt: bad field number in {line:?}"))?;
        match fact {
            "keep-zero" => keep_zero.insert((msg, num)),
            "inline" => inline.insert((msg, num)),
            _ => return Err(format!("go-fields.txt: unknown fact in {line:?}")),
        };
    }
    Ok(Schema {
        pool,
        keep_zero,
        inline,
    })
}

fn schema() -> Result<&'static Schema, ProtobufError> {
    SCHEMA
        .as_ref()
        .map_err(|e| ProtobufError::Descriptors(e.clone()))
}

/// The message of an object of `api_version` and `kind` (`apps/v1` `Deployment`), else of the
/// meta group's kinds (`Status`, `APIResourceList`, `WatchEvent`), if compiled in.
pub(super) fn object_message(api_version: &str, kind: &str) -> Option<MessageDescriptor> {
    let pool = &schema().ok()?.pool;
    let (group, version) = api_version.rsplit_once('/').unwrap_or(("", api_version));
    pool.get_message_by_name(&format!("{}.{kind}", package_of(group, version)))
        .or_else(|| {
            pool.get_message_by_name(&format!("k8s.io.apimachinery.pkg.apis.meta.v1.{kind}"))
        })
}

/// Whether Go's JSON flattens field `number` of `message` into its parent.
pub(super) fn inlined(message: &MessageDescriptor, number: u32) -> bool {
    schema().is_ok_and(|s| s.inline.contains(&(message.full_name(), number)))
}

/// Messages whose JSON is not an object of their fields (a string, a number, raw JSON).
pub(super) fn is_opaque(message: &MessageDescriptor) -> bool {
    matches!(
        message.full_name(),
        TIME | MICRO_TIME | INT_OR_STRING | QUANTITY | QUANTITY_VALUE | FIELDS_V1
    )
}

/// `runtime.RawExtension`: an embedded object with its own kind.
pub(super) fn is_embedded_object(message: &MessageDescriptor) -> bool {
    message.full_name() == RAW_EXTENSION
}

/// The message descriptor of a full protobuf name, for tests and the fuzzer.
pub fn descriptor(name: &str) -> Option<MessageDescriptor> {
    schema().ok()?.pool.get_message_by_name(name)
}

/// Decodes a protobuf body into the JSON object a JSON client would have sent, with its
/// `apiVersion` and `kind` from the envelope.
pub fn decode(body: &[u8], expected: Expected<'_>) -> Result<Value, ProtobufError> {
    let rest = body.strip_prefix(MAGIC).ok_or(ProtobufError::BadMagic)?;
    let unknown = Unknown::decode(rest).map_err(ProtobufError::Envelope)?;
    let encoding = unknown.content_encoding.unwrap_or_default();
    if !encoding.is_empty() {
        return Err(ProtobufError::ContentEncoding(encoding));
    }
    let ct = unknown.content_type.unwrap_or_default();
    if !ct.is_empty() && ct != CONTENT_TYPE {
        return Err(ProtobufError::ContentType(ct));
    }
    let tm = unknown.type_meta.unwrap_or_default();
    let api_version = tm.api_version.unwrap_or_default();
    let kind = tm.kind.unwrap_or_default();
    let wrong = || ProtobufError::WrongKind {
        api_version: api_version.clone(),
        kind: if kind.is_empty() {
            "(no kind)".into()
        } else {
            kind.clone()
        },
        expected: expected.describe(),
    };
    let name = expected.message(&api_version, &kind).ok_or_else(wrong)?;
    let schema = schema()?;
    let desc = schema.pool.get_message_by_name(&name).ok_or_else(wrong)?;
    let msg = DynamicMessage::decode(desc, unknown.raw.as_deref().unwrap_or_default()).map_err(
        |source| ProtobufError::Decode {
            kind: kind.clone(),
            source,
        },
    )?;
    let mut out = Map::new();
    out.insert("kind".into(), Value::String(kind.clone()));
    out.insert("apiVersion".into(), Value::String(api_version.clone()));
    match schema.message(&msg) {
        Ok(Value::Object(fields)) => out.extend(fields),
        Ok(_) => {}
        Err((field, problem)) => {
            return Err(ProtobufError::Field {
                kind,
                field,
                problem,
            });
        }
    }
    Ok(Value::Object(out))
}

/// A conversion failure: the field path (built on the way up) and what is wrong there.
type FieldFailure = (String, String);

fn at(name: &str, (path, problem): FieldFailure) -> FieldFailure {
    let path = if path.is_empty() {
        name.to_string()
    } else if path.starts_with('[') {
        format!("{name}{path}")
    } else {
        format!("{name}.{path}")
    };
    (path, problem)
}

fn fail(problem: impl Into<String>) -> FieldFailure {
    (String::new(), problem.into())
}

impl Schema {
    /// A message as its Kubernetes JSON form.
    fn message(&self, msg: &DynamicMessage) -> Result<Value, FieldFailure> {
        use prost_reflect::ReflectMessage as _;
        let desc = msg.descriptor();
        let full = desc.full_name();
        match full {
            TIME => return time(msg, false),
            MICRO_TIME => return time(msg, true),
            INT_OR_STRING => return int_or_string(msg),
            QUANTITY | QUANTITY_VALUE => {
                return Ok(Value::String(str_field(msg, 1).unwrap_or_default()));
            }
            RAW_EXTENSION | FIELDS_V1 => return raw_json(msg),
            _ => {}
        }
        let mut out = Map::new();
        let mut inlined = Vec::new();
        for (field, value) in msg.fields() {
            let name = field.name();
            let v = if field.is_map() {
                let prost_reflect::Value::Map(m) = value else {
                    continue;
                };
                let mut obj = Map::new();
                for (k, v) in m {
                    let key = match k {
                        MapKey::String(s) => s.clone(),
                        MapKey::Bool(b) => b.to_string(),
                        MapKey::I32(n) => n.to_string(),
                        MapKey::I64(n) => n.to_string(),
                        MapKey::U32(n) => n.to_string(),
                        MapKey::U64(n) => n.to_string(),
                    };
                    let v = self
                        .value(v)
                        .map_err(|e| at(&format!("{name}[{key}]"), e))?;
                    obj.insert(key, v);
                }
                Value::Object(obj)
            } else if let prost_reflect::Value::List(items) = value {
                let mut arr = Vec::with_capacity(items.len());
                for (i, item) in items.iter().enumerate() {
                    arr.push(
                        self.value(item)
                            .map_err(|e| at(&format!("{name}[{i}]"), e))?,
                    );
                }
                Value::Array(arr)
            } else {
                let v = self.value(value).map_err(|e| at(name, e))?;
                // Go's encoder writes every non-pointer scalar; its JSON omits the zero ones
                // tagged omitempty, and only Go's types know which those are.
                if is_scalar(&field.kind())
                    && is_zero(&v)
                    && !self.keep_zero.contains(&(full, field.number()))
                {
                    continue;
                }
                v
            };
            if self.inline.contains(&(full, field.number())) {
                inlined.push(v);
            } else {
                out.insert(name.to_string(), v);
            }
        }
        for v in inlined {
            if let Value::Object(fields) = v {
                for (k, v) in fields {
                    out.entry(k).or_insert(v);
                }
            }
        }
        Ok(Value::Object(out))
    }

    fn value(&self, v: &prost_reflect::Value) -> Result<Value, FieldFailure> {
        use prost_reflect::Value as P;
        Ok(match v {
            P::Bool(b) => Value::Bool(*b),
            P::I32(n) => Value::from(*n),
            P::I64(n) => Value::from(*n),
            P::U32(n) => Value::from(*n),
            P::U64(n) => Value::from(*n),
            P::EnumNumber(n) => Value::from(*n),
            P::F32(f) => finite(f64::from(*f))?,
            P::F64(f) => finite(*f)?,
            P::String(s) => Value::String(s.clone()),
            // Go's JSON writes []byte as standard base64 (Secret.data, ConfigMap.binaryData).
            P::Bytes(b) => Value::String(base64::engine::general_purpose::STANDARD.encode(b)),
            P::Message(m) => self.message(m)?,
            P::List(_) | P::Map(_) => return Err(fail("a list or map nested directly in a list")),
        })
    }
}

fn finite(f: f64) -> Result<Value, FieldFailure> {
    serde_json::Number::from_f64(f)
        .map(Value::Number)
        .ok_or_else(|| fail(format!("{f} is not a finite number")))
}

fn is_scalar(kind: &Kind) -> bool {
    !matches!(kind, Kind::Message(_))
}

fn is_zero(v: &Value) -> bool {
    match v {
        Value::Bool(b) => !b,
        Value::Number(n) => n.as_f64() == Some(0.0),
        Value::String(s) => s.is_empty(),
        _ => false,
    }
}

/// A field's value if the message has it (proto2 presence), with Kubernetes' zero otherwise.
fn field(msg: &DynamicMessage, number: u32) -> Option<prost_reflect::Value> {
    msg.has_field_by_number(number)
        .then(|| msg.get_field_by_number(number))
        .flatten()
        .map(std::borrow::Cow::into_owned)
}

fn str_field(msg: &DynamicMessage, number: u32) -> Option<String> {
    field(msg, number).and_then(|v| v.as_str().map(str::to_string))
}

fn int_field(msg: &DynamicMessage, number: u32) -> Option<i64> {
    field(msg, number).and_then(|v| v.as_i64().or_else(|| v.as_i32().map(i64::from)))
}

/// `metav1.Time` is RFC 3339 in seconds, `MicroTime` in microseconds; the zero time (an empty
/// message, as Go writes it) is `null`. Time ignores nanoseconds, as Kubernetes' decoder does.
fn time(msg: &DynamicMessage, micro: bool) -> Result<Value, FieldFailure> {
    let seconds = int_field(msg, 1);
    let nanos = int_field(msg, 2).unwrap_or(0);
    let Some(seconds) = seconds.or((nanos != 0).then_some(0)) else {
        return Ok(Value::Null);
    };
    let nanos = if micro { nanos } else { 0 };
    let nanos = i32::try_from(nanos)
        .ok()
        .filter(|n| (0..1_000_000_000).contains(n))
        .ok_or_else(|| fail(format!("nanos {nanos} out of range")))?;
    let t = jiff::Timestamp::new(seconds, nanos)
        .map_err(|e| fail(format!("time {seconds}s out of range: {e}")))?;
    let text = if micro {
        t.strftime("%Y-%m-%dT%H:%M:%S.%6fZ").to_string()
    } else {
        t.strftime("%Y-%m-%dT%H:%M:%SZ").to_string()
    };
    Ok(Value::String(text))
}

/// IntOrString: `type` 0 is `intVal`, 1 is `strVal`.
fn int_or_string(msg: &DynamicMessage) -> Result<Value, FieldFailure> {
    match int_field(msg, 1).unwrap_or(0) {
        0 => Ok(Value::from(int_field(msg, 2).unwrap_or(0))),
        1 => Ok(Value::String(str_field(msg, 3).unwrap_or_default())),
        t => Err(fail(format!(
            "IntOrString type {t} is neither 0 (int) nor 1 (string)"
        ))),
    }
}

/// RawExtension and FieldsV1 carry JSON bytes; they are embedded as the JSON they hold.
fn raw_json(msg: &DynamicMessage) -> Result<Value, FieldFailure> {
    let raw = match field(msg, 1) {
        Some(prost_reflect::Value::Bytes(b)) => b,
        _ => return Ok(Value::Null),
    };
    if raw.is_empty() {
        return Ok(Value::Null);
    }
    if super::json_depth(&raw) > super::MAX_DEPTH {
        return Err(fail(format!(
            "the embedded JSON is nested more than {} levels deep",
            super::MAX_DEPTH
        )));
    }
    serde_json::from_slice(&raw).map_err(|e| fail(format!("the embedded bytes are not JSON: {e}")))
}

#[cfg(test)]
pub(crate) mod tests;
