use serde_json::json;

use super::*;
use crate::api::resources::{self, RESOURCES};

/// Encodes `obj` (Kubernetes JSON) as the message `name` the way Go's encoder would: with
/// `go_zeros`, every absent scalar that Go's JSON would omit when zero is written as zero.
pub(crate) fn encode_object(name: &str, obj: &Value, go_zeros: bool) -> Vec<u8> {
    let schema = schema().expect("descriptors load");
    let desc = schema.pool.get_message_by_name(name).expect("message");
    to_message(schema, &desc, obj, go_zeros).encode_to_vec()
}

/// A whole body: magic, envelope, object.
pub(crate) fn body(api_version: &str, kind: &str, raw: Vec<u8>) -> Vec<u8> {
    let unknown = Unknown {
        type_meta: Some(TypeMeta {
            api_version: Some(api_version.into()),
            kind: Some(kind.into()),
        }),
        raw: Some(raw),
        content_encoding: Some(String::new()),
        content_type: Some(String::new()),
    };
    let mut out = MAGIC.to_vec();
    out.extend(unknown.encode_to_vec());
    out
}

/// The body of a served object, encoded from its JSON.
pub(crate) fn object_body(res: &Resource, obj: &Value, go_zeros: bool) -> Vec<u8> {
    let name = format!("{}.{}", package(res.group), res.kind);
    body(
        &res.api_version(),
        res.kind,
        encode_object(&name, obj, go_zeros),
    )
}

fn to_message(
    schema: &Schema,
    desc: &MessageDescriptor,
    v: &Value,
    go_zeros: bool,
) -> DynamicMessage {
    use prost_reflect::Value as P;
    let mut m = DynamicMessage::new(desc.clone());
    let full = desc.full_name();
    match full {
        TIME | MICRO_TIME => {
            if let Some(s) = v.as_str() {
                let t: jiff::Timestamp = s.parse().expect("RFC 3339");
                m.set_field_by_number(1, P::I64(t.as_second()));
                m.set_field_by_number(2, P::I32(t.subsec_nanosecond()));
            }
            return m;
        }
        INT_OR_STRING => {
            match v {
                Value::String(s) => {
                    m.set_field_by_number(1, P::I64(1));
                    m.set_field_by_number(3, P::String(s.clone()));
                }
                n => {
                    m.set_field_by_number(1, P::I64(0));
                    m.set_field_by_number(2, P::I32(n.as_i64().unwrap_or(0) as i32));
                }
            }
            return m;
        }
        QUANTITY | QUANTITY_VALUE => {
            m.set_field_by_number(1, P::String(v.as_str().unwrap_or("").into()));
            return m;
        }
        RAW_EXTENSION | FIELDS_V1 => {
            m.set_field_by_number(1, P::Bytes(v.to_string().into_bytes().into()));
            return m;
        }
        _ => {}
    }
    let empty = Map::new();
    let obj = v.as_object().unwrap_or(&empty);
    for field in desc.fields() {
        let key = (full, field.number());
        if let Kind::Message(inner) = field.kind()
            && schema.inline.contains(&key)
        {
            m.set_field(&field, P::Message(to_message(schema, &inner, v, go_zeros)));
            continue;
        }
        let Some(val) = obj.get(field.name()) else {
            if go_zeros
                && !field.is_list()
                && !field.is_map()
                && is_scalar(&field.kind())
                && !schema.keep_zero.contains(&key)
            {
                m.set_field(&field, P::default_value_for_field(&field));
            }
            continue;
        };
        if val.is_null() {
            continue;
        }
        let value = if field.is_map() {
            let Kind::Message(entry) = field.kind() else {
                unreachable!("map fields are entry messages")
            };
            let vdesc = entry.map_entry_value_field();
            let map = val
                .as_object()
                .expect("map")
                .iter()
                .map(|(k, v)| {
                    (
                        MapKey::String(k.clone()),
                        scalar_or_message(schema, &vdesc.kind(), v, go_zeros),
                    )
                })
                .collect();
            P::Map(map)
        } else if field.is_list() {
            P::List(
                val.as_array()
                    .expect("list")
                    .iter()
                    .map(|v| scalar_or_message(schema, &field.kind(), v, go_zeros))
                    .collect(),
            )
        } else {
            scalar_or_message(schema, &field.kind(), val, go_zeros)
        };
        m.set_field(&field, value);
    }
    m
}

fn scalar_or_message(
    schema: &Schema,
    kind: &Kind,
    v: &Value,
    go_zeros: bool,
) -> prost_reflect::Value {
    use prost_reflect::Value as P;
    match kind {
        Kind::Message(d) => P::Message(to_message(schema, d, v, go_zeros)),
        Kind::String => P::String(v.as_str().expect("string").into()),
        Kind::Bytes => P::Bytes(
            base64::engine::general_purpose::STANDARD
                .decode(v.as_str().expect("base64"))
                .expect("base64")
                .into(),
        ),
        Kind::Bool => P::Bool(v.as_bool().expect("bool")),
        Kind::Int32 | Kind::Sint32 | Kind::Sfixed32 => P::I32(v.as_i64().expect("int") as i32),
        Kind::Int64 | Kind::Sint64 | Kind::Sfixed64 => P::I64(v.as_i64().expect("int")),
        Kind::Uint32 | Kind::Fixed32 => P::U32(v.as_u64().expect("uint") as u32),
        Kind::Uint64 | Kind::Fixed64 => P::U64(v.as_u64().expect("uint")),
        Kind::Double => P::F64(v.as_f64().expect("number")),
        Kind::Float => P::F32(v.as_f64().expect("number") as f32),
        Kind::Enum(_) => P::EnumNumber(v.as_i64().expect("enum") as i32),
    }
}

fn resource(kind: &str) -> &'static Resource {
    RESOURCES.iter().find(|r| r.kind == kind).expect("served")
}

#[test]
fn kubectl_create_bodies_decode_to_the_json_older_kubectl_sends() {
    // Each pair is one `kubectl create` (or `run`) as kubectl 1.33 sent it (protobuf) and as
    // kubectl 1.31 sent it (JSON), captured from real requests.
    let cases = [
        ("configmap", "ConfigMap"),
        ("deployment", "Deployment"),
        ("job", "Job"),
        ("namespace", "Namespace"),
        ("secret", "Secret"),
        ("service", "Service"),
        ("service-nodeport", "Service"),
        ("serviceaccount", "ServiceAccount"),
    ];
    let dir =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src/api/testdata/kubectl-create");
    for (file, kind) in cases {
        let pb = std::fs::read(dir.join(format!("{file}.pb"))).expect("fixture");
        let js: Value = serde_json::from_slice(
            &std::fs::read(dir.join(format!("{file}.json"))).expect("fixture"),
        )
        .expect("json");
        let got = decode(&pb, Expected::Object(resource(kind))).expect(file);
        assert_eq!(got, js, "{file}");
    }
}

#[test]
fn every_served_kind_and_subresource_body_has_a_message() {
    for r in RESOURCES {
        let name = Expected::Object(r)
            .message(&r.api_version(), r.kind)
            .expect("served");
        assert!(descriptor(&name).is_some(), "{name}");
        let del = Expected::DeleteOptions(r)
            .message("meta.k8s.io/v1", "DeleteOptions")
            .expect("delete options");
        assert!(descriptor(&del).is_some());
    }
    for (e, av, kind) in [
        (Expected::Binding, "v1", "Binding"),
        (Expected::Eviction, "policy/v1", "Eviction"),
        (Expected::Scale, "autoscaling/v1", "Scale"),
    ] {
        let name = e.message(av, kind).expect("taken");
        assert!(descriptor(&name).is_some(), "{name}");
    }
}

#[test]
fn go_fields_name_real_fields() {
    let schema = schema().expect("descriptors load");
    for (msg, num) in schema.keep_zero.iter().chain(&schema.inline) {
        let d = schema
            .pool
            .get_message_by_name(msg)
            .unwrap_or_else(|| panic!("{msg}"));
        let f = d.get_field(*num).unwrap_or_else(|| panic!("{msg} {num}"));
        let inline = schema.inline.contains(&(*msg, *num));
        assert_eq!(!is_scalar(&f.kind()), inline, "{msg} {num}");
    }
    assert!(
        schema
            .keep_zero
            .contains(&("k8s.io.api.apps.v1.DeploymentSpec", 1))
    );
}

#[test]
fn special_types_take_their_json_forms() {
    let pod = json!({
        "kind": "Pod", "apiVersion": "v1",
        "metadata": {
            "name": "p", "namespace": "default",
            "creationTimestamp": "2024-05-06T07:08:09Z",
            "labels": {"a": "b"},
            "managedFields": [{"manager": "m", "operation": "Update", "fieldsType": "FieldsV1",
                "fieldsV1": {"f:metadata": {"f:labels": {".": {}, "f:a": {}}}},
                "time": "2024-05-06T07:08:09Z"}]
        },
        "spec": {
            "terminationGracePeriodSeconds": 0,
            "containers": [{
                "name": "c", "image": "busybox",
                "ports": [{"containerPort": 80, "protocol": "TCP"}],
                "resources": {"limits": {"cpu": "100m", "memory": "64Mi"}},
                "readinessProbe": {"httpGet": {"path": "/", "port": "http"}, "periodSeconds": 3},
                "livenessProbe": {"tcpSocket": {"port": 8080}},
                "env": [{"name": "E", "valueFrom": {"configMapKeyRef": {"name": "cm", "key": "k"}}}]
            }],
            "volumes": [{"name": "v", "emptyDir": {"sizeLimit": "1Gi"}}]
        },
        "status": {}
    });
    let raw = object_body(resources::pods(), &pod, true);
    assert_eq!(
        decode(&raw, Expected::Object(resources::pods())).expect("decodes"),
        pod
    );
}

#[test]
fn zero_pointers_stay_and_zero_values_go() {
    let d = json!({
        "kind": "Deployment", "apiVersion": "apps/v1",
        "metadata": {"name": "d"},
        "spec": {"replicas": 0, "selector": {"matchLabels": {"a": "b"}},
                 "template": {"metadata": {"labels": {"a": "b"}}, "spec": {"containers": [
                     {"name": "c", "image": "i", "securityContext": {"privileged": false, "runAsUser": 0}}]}}}
    });
    // Go writes hostNetwork, paused, minReadySeconds... as zeros; they must not appear.
    let raw = object_body(resources::deployments(), &d, true);
    assert_eq!(
        decode(&raw, Expected::Object(resources::deployments())).expect("decodes"),
        d
    );
}

#[test]
fn micro_time_keeps_microseconds_and_time_drops_nanos() {
    let mut m = DynamicMessage::new(descriptor(MICRO_TIME).expect("MicroTime"));
    m.set_field_by_number(1, prost_reflect::Value::I64(1_700_000_000));
    m.set_field_by_number(2, prost_reflect::Value::I32(123_456_789));
    assert_eq!(
        time(&m, true).expect("ok"),
        json!("2023-11-14T22:13:20.123456Z")
    );
    assert_eq!(time(&m, false).expect("ok"), json!("2023-11-14T22:13:20Z"));
    let empty = DynamicMessage::new(descriptor(TIME).expect("Time"));
    assert_eq!(time(&empty, false).expect("ok"), Value::Null);
}

#[test]
fn secret_bytes_are_base64_and_subresources_decode() {
    let s = json!({"kind": "Secret", "apiVersion": "v1", "metadata": {"name": "s"},
                   "data": {"k": "AP8=", "e": ""}, "type": "Opaque"});
    let raw = object_body(resource("Secret"), &s, true);
    assert_eq!(
        decode(&raw, Expected::Object(resource("Secret"))).expect("ok"),
        s
    );

    let ev = json!({"kind": "Eviction", "apiVersion": "policy/v1", "metadata": {"name": "p"},
                    "deleteOptions": {"gracePeriodSeconds": 0}});
    let raw = body(
        "policy/v1",
        "Eviction",
        encode_object("k8s.io.api.policy.v1.Eviction", &ev, true),
    );
    assert_eq!(decode(&raw, Expected::Eviction).expect("ok"), ev);

    let scale = json!({"kind": "Scale", "apiVersion": "autoscaling/v1", "metadata": {"name": "d"},
                       "spec": {"replicas": 3}, "status": {"replicas": 1, "selector": "a=b"}});
    let raw = body(
        "autoscaling/v1",
        "Scale",
        encode_object("k8s.io.api.autoscaling.v1.Scale", &scale, true),
    );
    assert_eq!(decode(&raw, Expected::Scale).expect("ok"), scale);

    let del = json!({"kind": "DeleteOptions", "apiVersion": "v1", "propagationPolicy": "Foreground",
                     "preconditions": {"uid": "u"}, "dryRun": ["All"]});
    let raw = body(
        "v1",
        "DeleteOptions",
        encode_object(DELETE_OPTIONS, &del, true),
    );
    assert_eq!(
        decode(&raw, Expected::DeleteOptions(resources::pods())).expect("ok"),
        del
    );

    let b = json!({"kind": "Binding", "apiVersion": "v1", "metadata": {"name": "p"},
                   "target": {"kind": "Node", "name": "n1"}});
    let raw = body(
        "v1",
        "Binding",
        encode_object("k8s.io.api.core.v1.Binding", &b, true),
    );
    assert_eq!(decode(&raw, Expected::Binding).expect("ok"), b);
}

#[test]
fn bad_bodies_name_the_problem() {
    let cm = json!({"metadata": {"name": "c"}, "data": {"a": "b"}});
    let good = object_body(resource("ConfigMap"), &cm, true);
    let want = Expected::Object(resource("ConfigMap"));

    let mut bad_magic = good.clone();
    bad_magic[3] = b'!';
    let e = decode(&bad_magic, want).expect_err("bad magic");
    assert!(matches!(e, ProtobufError::BadMagic), "{e}");

    let e = decode(&good[..good.len() - 3], want).expect_err("truncated");
    assert!(
        matches!(e, ProtobufError::Envelope(_) | ProtobufError::Decode { .. }),
        "{e}"
    );

    let e = decode(&good, Expected::Object(resource("Secret"))).expect_err("wrong kind");
    assert_eq!(
        e.to_string(),
        "the protobuf body holds a ConfigMap of \"v1\", but this request takes a Secret of \"v1\""
    );

    let e = decode(&good, Expected::Patch).expect_err("patch");
    assert!(matches!(e, ProtobufError::WrongKind { .. }), "{e}");

    let mut u = Unknown::decode(&good[4..]).expect("envelope");
    u.content_encoding = Some("gzip".into());
    let mut gz = MAGIC.to_vec();
    gz.extend(u.encode_to_vec());
    let e = decode(&gz, want).expect_err("gzip");
    assert!(e.unsupported_media(), "{e}");

    // An IntOrString of type 2 inside a Service's ports.
    let mut ios = DynamicMessage::new(descriptor(INT_OR_STRING).expect("IntOrString"));
    ios.set_field_by_number(1, prost_reflect::Value::I64(2));
    let mut port = DynamicMessage::new(descriptor("k8s.io.api.core.v1.ServicePort").expect("port"));
    port.set_field_by_name("targetPort", prost_reflect::Value::Message(ios));
    let mut spec = DynamicMessage::new(descriptor("k8s.io.api.core.v1.ServiceSpec").expect("spec"));
    spec.set_field_by_name(
        "ports",
        prost_reflect::Value::List(vec![prost_reflect::Value::Message(port)]),
    );
    let mut svc = DynamicMessage::new(descriptor("k8s.io.api.core.v1.Service").expect("svc"));
    svc.set_field_by_name("spec", prost_reflect::Value::Message(spec));
    let raw = body("v1", "Service", svc.encode_to_vec());
    let e = decode(&raw, Expected::Object(resources::services())).expect_err("type 2");
    assert_eq!(
        e.to_string(),
        "the protobuf Service is invalid at spec.ports[0].targetPort: IntOrString type 2 is neither 0 (int) nor 1 (string)"
    );
}
