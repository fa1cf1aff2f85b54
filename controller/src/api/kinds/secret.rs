//! Secrets (core/v1): `type` is selectable; the columns of `kubectl get secrets`.

use serde_json::{Value, json};

use super::configmap::data_count;
use base64::Engine as _;

use crate::api::strategy::{AGE, Column, NAME, Strategy, TypeOps, age_cell, obj_mut, str_at};

#[derive(Debug)]
pub struct SecretStrategy;

impl Strategy for SecretStrategy {
    fn types(&self) -> TypeOps {
        TypeOps::of::<k8s_openapi::api::core::v1::Secret>()
    }

    /// `stringData` is a convenience for writing: it is merged into `data` (base64, winning
    /// over a `data` key of the same name) and never stored, as the API server does.
    fn default(&self, obj: &mut Value) {
        let Some(Value::Object(strings)) = obj.as_object_mut().and_then(|o| o.remove("stringData"))
        else {
            return;
        };
        let data = obj_mut(obj, "data");
        for (k, v) in strings {
            let text = v.as_str().unwrap_or("").to_owned();
            data.insert(
                k,
                json!(base64::engine::general_purpose::STANDARD.encode(text)),
            );
        }
    }

    fn selectable_field(&self, field: &str) -> Option<&'static str> {
        (field == "type").then_some("/type")
    }

    fn columns(&self) -> &'static [Column] {
        const C: &[Column] = &[
            NAME,
            Column::new("Type", "string", 0, "The type of the secret."),
            Column::new("Data", "string", 0, "Number of data items."),
            AGE,
        ];
        C
    }

    fn cells(&self, obj: &Value) -> Vec<Value> {
        vec![
            json!(str_at(obj, "/metadata/name")),
            json!(str_at(obj, "/type")),
            json!(data_count(obj)),
            age_cell(obj),
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn string_data_is_merged_into_data() {
        let mut s =
            json!({"data": {"a": "eA==", "b": "eQ=="}, "stringData": {"b": "new", "c": "z"}});
        SecretStrategy.default(&mut s);
        assert_eq!(s, json!({"data": {"a": "eA==", "b": "bmV3", "c": "eg=="}}));
    }
}
