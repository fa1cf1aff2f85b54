//! JSON as the kube-apiserver writes it: fields in the order of the Go structs (`kind`,
//! `apiVersion`, `metadata`, `spec`, `status`, and so on down), map keys sorted as Go's encoder
//! sorts them, and a newline after the document. Objects are kept as `serde_json` values with
//! sorted keys everywhere else (hashes and comparisons stay independent of the order a client
//! wrote); only what goes out is ordered. The order comes from Kubernetes' vendored
//! `generated.proto` files, whose messages list their fields in the Go structs' order, and the
//! fields Go inlines (`go-fields.txt`); keys no message names (unknown kinds, `Table`) follow in
//! sorted order.

use prost_reflect::{FieldDescriptor, Kind, MessageDescriptor};
use serde_json::{Map, Value};

use super::protobuf;

/// A document (object, list, `Status`) as the kube-apiserver writes it, newline included.
pub fn to_vec(v: &Value) -> Vec<u8> {
    let mut out = Vec::with_capacity(256);
    write_value(&mut out, v, &Hint::Object);
    out.push(b'\n');
    out
}

/// A watch event line: `{"type":...,"object":...}` and a newline.
pub fn watch_event(kind: &str, object: &Value) -> Vec<u8> {
    let mut out = Vec::with_capacity(256);
    out.extend_from_slice(b"{\"type\":");
    write_plain(&mut out, &Value::String(kind.to_owned()));
    out.extend_from_slice(b",\"object\":");
    write_value(&mut out, object, &Hint::Object);
    out.extend_from_slice(b"}\n");
    out
}

/// What is known about a value's type.
enum Hint {
    /// Nothing: keys sorted.
    Plain,
    /// An object that names its own kind (a document, an embedded `RawExtension`).
    Object,
    Message(MessageDescriptor),
}

fn hint_of(field: &FieldDescriptor) -> Hint {
    let kind = if field.is_map() {
        match field.kind() {
            Kind::Message(entry) => entry.map_entry_value_field().kind(),
            _ => return Hint::Plain,
        }
    } else {
        field.kind()
    };
    match kind {
        Kind::Message(m) if protobuf::is_embedded_object(&m) => Hint::Object,
        Kind::Message(m) if protobuf::is_opaque(&m) => Hint::Plain,
        Kind::Message(m) => Hint::Message(m),
        _ => Hint::Plain,
    }
}

fn write_value(out: &mut Vec<u8>, v: &Value, hint: &Hint) {
    match (v, hint) {
        (Value::Array(items), _) => {
            out.push(b'[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_value(out, item, hint);
            }
            out.push(b']');
        }
        (Value::Object(obj), Hint::Message(m)) => write_message(out, obj, m),
        (Value::Object(obj), Hint::Object) => {
            let message = match (obj.get("apiVersion"), obj.get("kind")) {
                (Some(Value::String(v)), Some(Value::String(k))) => protobuf::object_message(v, k),
                _ => None,
            };
            match message {
                Some(m) => write_message(out, obj, &m),
                None => write_plain(out, v),
            }
        }
        _ => write_plain(out, v),
    }
}

fn write_plain(out: &mut Vec<u8>, v: &Value) {
    // Writing a `Value` into a Vec cannot fail.
    let _ = serde_json::to_writer(&mut *out, v);
}

fn write_key(out: &mut Vec<u8>, first: &mut bool, key: &str) {
    if !*first {
        out.push(b',');
    }
    *first = false;
    let _ = serde_json::to_writer(&mut *out, key);
    out.push(b':');
}

/// An object of a known message: `kind` and `apiVersion` first (Go's embedded `TypeMeta`), the
/// message's fields in order (inlined ones in place), then whatever else it holds.
fn write_message(out: &mut Vec<u8>, obj: &Map<String, Value>, message: &MessageDescriptor) {
    out.push(b'{');
    let mut first = true;
    let mut written = 0;
    // Messages with fields of these names (OwnerReference, StatusDetails) place them
    // themselves; objects have them from `TypeMeta`, which the messages leave out.
    let type_meta = !names(message, "kind");
    if type_meta {
        for key in ["kind", "apiVersion"] {
            if let Some(v) = obj.get(key) {
                write_key(out, &mut first, key);
                write_plain(out, v);
                written += 1;
            }
        }
    }
    write_fields(out, obj, message, &mut first, &mut written);
    if written < obj.len() {
        for (k, v) in obj {
            let meta = type_meta && (k == "kind" || k == "apiVersion");
            if !meta && !names(message, k) {
                write_key(out, &mut first, k);
                write_value(out, v, &Hint::Plain);
            }
        }
    }
    out.push(b'}');
}

fn write_fields(
    out: &mut Vec<u8>,
    obj: &Map<String, Value>,
    message: &MessageDescriptor,
    first: &mut bool,
    written: &mut usize,
) {
    for field in declared(message) {
        if protobuf::inlined(message, field.number()) {
            if let Kind::Message(inner) = field.kind() {
                write_fields(out, obj, &inner, first, written);
            }
            continue;
        }
        let name = field.name();
        if let Some(v) = obj.get(name) {
            write_key(out, first, name);
            write_value(out, v, &hint_of(&field));
            *written += 1;
        }
    }
}

/// The fields of `message` in the order the `.proto` declares them, which is the Go struct's
/// (`fields()` goes by number, and later fields were often declared in the middle).
fn declared(message: &MessageDescriptor) -> impl Iterator<Item = FieldDescriptor> + '_ {
    message
        .descriptor_proto()
        .field
        .iter()
        .filter_map(|f| message.get_field(u32::try_from(f.number?).ok()?))
}

/// Whether `key` is a field of `message` or of a message it inlines.
fn names(message: &MessageDescriptor, key: &str) -> bool {
    message.fields().any(|f| {
        if protobuf::inlined(message, f.number()) {
            matches!(f.kind(), Kind::Message(inner) if names(&inner, key))
        } else {
            f.name() == key
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn text(v: &Value) -> String {
        String::from_utf8(to_vec(v)).unwrap()
    }

    #[test]
    fn status_in_go_order_with_a_newline() {
        let status = json!({
            "code": 409, "details": {"kind": "services", "name": "mock-2", "group": "g"},
            "kind": "Status", "apiVersion": "v1", "message": "m", "metadata": {},
            "reason": "AlreadyExists", "status": "Failure",
        });
        assert_eq!(
            text(&status),
            "{\"kind\":\"Status\",\"apiVersion\":\"v1\",\"metadata\":{},\"status\":\"Failure\",\"message\":\"m\",\"reason\":\"AlreadyExists\",\"details\":{\"name\":\"mock-2\",\"group\":\"g\",\"kind\":\"services\"},\"code\":409}\n"
        );
    }

    #[test]
    fn objects_follow_the_go_structs() {
        let pod = json!({
            "apiVersion": "v1", "kind": "Pod",
            "status": {"phase": "Running"},
            "spec": {
                "restartPolicy": "Always",
                "containers": [{"name": "c", "image": "busybox", "resources": {"limits": {"memory": "1Gi", "cpu": "1"}}}],
                "volumes": [{"name": "v", "emptyDir": {}}],
                "initContainers": [{"name": "i", "image": "busybox"}],
                "nodeSelector": {"z": "1", "a": "2"},
            },
            "metadata": {"uid": "u", "name": "p", "namespace": "default", "labels": {"b": "1", "a": "2"}},
            "zzUnknown": 1,
        });
        assert_eq!(
            text(&pod),
            concat!(
                "{\"kind\":\"Pod\",\"apiVersion\":\"v1\",",
                "\"metadata\":{\"name\":\"p\",\"namespace\":\"default\",\"uid\":\"u\",\"labels\":{\"a\":\"2\",\"b\":\"1\"}},",
                "\"spec\":{\"volumes\":[{\"name\":\"v\",\"emptyDir\":{}}],",
                "\"initContainers\":[{\"name\":\"i\",\"image\":\"busybox\"}],",
                "\"containers\":[{\"name\":\"c\",\"image\":\"busybox\",\"resources\":{\"limits\":{\"cpu\":\"1\",\"memory\":\"1Gi\"}}}],",
                "\"restartPolicy\":\"Always\",\"nodeSelector\":{\"a\":\"2\",\"z\":\"1\"}},",
                "\"status\":{\"phase\":\"Running\"},\"zzUnknown\":1}\n"
            )
        );
    }

    #[test]
    fn inlined_fields_take_their_place() {
        // Probe inlines ProbeHandler (exec, httpGet, ...) before its own fields.
        let probe =
            json!({"periodSeconds": 1, "exec": {"command": ["true"]}, "initialDelaySeconds": 2});
        let field = protobuf::object_message("v1", "Container")
            .unwrap()
            .get_field_by_name("readinessProbe")
            .unwrap();
        let mut out = Vec::new();
        write_value(&mut out, &probe, &hint_of(&field));
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "{\"exec\":{\"command\":[\"true\"]},\"initialDelaySeconds\":2,\"periodSeconds\":1}"
        );
    }

    #[test]
    fn lists_watch_events_and_unknown_kinds() {
        let list = json!({"items": [{"metadata": {"name": "a"}, "data": {"k": "v"}}], "metadata": {"resourceVersion": "5"}, "kind": "ConfigMapList", "apiVersion": "v1"});
        assert_eq!(
            text(&list),
            "{\"kind\":\"ConfigMapList\",\"apiVersion\":\"v1\",\"metadata\":{\"resourceVersion\":\"5\"},\"items\":[{\"metadata\":{\"name\":\"a\"},\"data\":{\"k\":\"v\"}}]}\n"
        );
        let ev = watch_event(
            "ADDED",
            &json!({"spec": {}, "kind": "Nope", "apiVersion": "x/v9"}),
        );
        assert_eq!(
            String::from_utf8(ev).unwrap(),
            "{\"type\":\"ADDED\",\"object\":{\"apiVersion\":\"x/v9\",\"kind\":\"Nope\",\"spec\":{}}}\n"
        );
        let owner = json!({"metadata": {"ownerReferences": [{"uid": "u", "name": "n", "kind": "ReplicaSet", "apiVersion": "apps/v1", "controller": true}]}, "kind": "Pod", "apiVersion": "v1"});
        assert!(text(&owner).contains("[{\"apiVersion\":\"apps/v1\",\"kind\":\"ReplicaSet\",\"name\":\"n\",\"uid\":\"u\",\"controller\":true}]"), "{}", text(&owner));
        // Times, quantities and int-or-strings stay what they are.
        let dep = json!({"kind": "Deployment", "apiVersion": "apps/v1", "spec": {"strategy": {"rollingUpdate": {"maxSurge": "25%", "maxUnavailable": 1}}}, "metadata": {"creationTimestamp": "2026-01-01T00:00:00Z"}});
        assert!(
            text(&dep).contains("\"rollingUpdate\":{\"maxUnavailable\":1,\"maxSurge\":\"25%\"}")
        );
    }
}
