//! Events (core/v1): the selectable fields `kubectl get events --field-selector` and `kubectl
//! describe` use, and the columns of `kubectl get events`.

use serde_json::{Value, json};

use crate::api::strategy::{Column, Strategy, TypeOps, str_at};
use crate::api::table::age;

#[derive(Debug)]
pub struct EventStrategy;

impl Strategy for EventStrategy {
    fn types(&self) -> TypeOps {
        TypeOps::of::<k8s_openapi::api::core::v1::Event>()
    }

    fn selectable_field(&self, field: &str) -> Option<&'static str> {
        Some(match field {
            "involvedObject.name" => "/involvedObject/name",
            "involvedObject.namespace" => "/involvedObject/namespace",
            "involvedObject.kind" => "/involvedObject/kind",
            "involvedObject.uid" => "/involvedObject/uid",
            "involvedObject.fieldPath" => "/involvedObject/fieldPath",
            "reason" => "/reason",
            "type" => "/type",
            _ => return None,
        })
    }

    fn columns(&self) -> &'static [Column] {
        const C: &[Column] = &[
            Column::new(
                "Last Seen",
                "string",
                0,
                "Time since the event was last seen.",
            ),
            Column::new("Type", "string", 0, "Type of the event."),
            Column::new("Reason", "string", 0, "Why the event happened."),
            Column::new("Object", "string", 0, "The object the event is about."),
            Column::new("Subobject", "string", 1, "The part of the object."),
            Column::new("Source", "string", 1, "Who reported the event."),
            Column::new("Message", "string", 0, "What happened."),
            Column::new(
                "First Seen",
                "string",
                1,
                "Time since the event was first seen.",
            ),
            Column::new("Count", "string", 1, "How often it happened."),
            Column::new("Name", "string", 1, "Name of the event."),
        ];
        C
    }

    fn cells(&self, obj: &Value) -> Vec<Value> {
        let last = [
            str_at(obj, "/lastTimestamp"),
            str_at(obj, "/eventTime"),
            str_at(obj, "/metadata/creationTimestamp"),
        ]
        .into_iter()
        .find(|t| !t.is_empty())
        .unwrap_or("");
        let first = match str_at(obj, "/firstTimestamp") {
            "" => last,
            f => f,
        };
        let kind = str_at(obj, "/involvedObject/kind").to_lowercase();
        let source = [
            str_at(obj, "/source/component"),
            str_at(obj, "/reportingComponent"),
        ]
        .into_iter()
        .find(|t| !t.is_empty())
        .unwrap_or("");
        let mut source = source.to_string();
        if !str_at(obj, "/source/host").is_empty() {
            source = format!("{source}, {}", str_at(obj, "/source/host"));
        }
        vec![
            json!(age(last)),
            json!(str_at(obj, "/type")),
            json!(str_at(obj, "/reason")),
            json!(format!("{kind}/{}", str_at(obj, "/involvedObject/name"))),
            json!(str_at(obj, "/involvedObject/fieldPath")),
            json!(source),
            json!(str_at(obj, "/message").trim()),
            json!(age(first)),
            json!(obj.get("count").and_then(Value::as_i64).unwrap_or(1)),
            json!(str_at(obj, "/metadata/name")),
        ]
    }
}
