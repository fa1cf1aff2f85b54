//! What each kind does differently, in one place per kind (Kubernetes' registry calls it the
//! kind's "strategy"): defaulting, validation, what create, update and delete add for it, its
//! table columns and cells, and its selectable fields. Each row of the resource table names its
//! strategy, so `Objects`, routing and tables stay kind-agnostic; the strategies themselves live
//! in `kinds/`, one file per kind.

use std::borrow::Cow;
use std::future::Future;
use std::pin::Pin;

use k8s_openapi::schemars::{JsonSchema, SchemaGenerator};
use serde_json::{Map, Value, json};

use super::error::{ApiError, FieldError};
use super::objects::{DeleteOptions, Objects, Part, Propagation};

/// The future of an asynchronous hook (one that writes to the store).
pub type Hook<'a, T> = Pin<Box<dyn Future<Output = Result<T, ApiError>> + Send + 'a>>;

/// The k8s-openapi type of a kind, as plain functions made once per type, so a strategy can
/// name its type without making the trait generic. Only its schema is used: it is served as
/// OpenAPI and holds bodies to their types (`shape`).
#[derive(Clone, Copy)]
pub struct TypeOps {
    register: fn(&mut SchemaGenerator) -> String,
    schema_name: fn() -> Cow<'static, str>,
}

impl std::fmt::Debug for TypeOps {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("TypeOps")
            .field(&(self.schema_name)())
            .finish()
    }
}

fn register<T: JsonSchema>(generator: &mut SchemaGenerator) -> String {
    // Registers the type and everything it references under their schema names.
    generator.subschema_for::<T>();
    T::schema_name().into_owned()
}

impl TypeOps {
    pub const fn of<T: JsonSchema>() -> Self {
        TypeOps {
            register: register::<T>,
            schema_name: T::schema_name,
        }
    }

    /// Adds the type's schema (and those it references) to `generator`; returns its name.
    pub fn register(&self, generator: &mut SchemaGenerator) -> String {
        (self.register)(generator)
    }

    /// The schema's name, `io.k8s.api.core.v1.Pod`.
    pub fn schema_name(&self) -> Cow<'static, str> {
        (self.schema_name)()
    }
}

/// One column of a kind's Table.
#[derive(Debug, Clone, Copy)]
pub struct Column {
    pub name: &'static str,
    pub ty: &'static str,
    /// 0: always shown; 1: only with `-o wide`.
    pub priority: i32,
    pub description: &'static str,
}

impl Column {
    pub const fn new(
        name: &'static str,
        ty: &'static str,
        priority: i32,
        description: &'static str,
    ) -> Self {
        Column {
            name,
            ty,
            priority,
            description,
        }
    }

    pub fn definition(&self) -> Value {
        let format = if self.name == "Name" { "name" } else { "" };
        json!({"name": self.name, "type": self.ty, "format": format,
            "description": self.description, "priority": self.priority})
    }
}

/// The column every kind's table starts with.
pub const NAME: Column = Column::new(
    "Name",
    "string",
    0,
    "Name must be unique within a namespace.",
);
/// The column most kinds' tables end with.
pub const AGE: Column = Column::new("Age", "string", 0, "Time since the object was created.");
/// The column kinds without a status print instead of Age (Roles, LimitRanges).
pub const CREATED_AT: Column = Column::new("Created At", "date", 0, "Time the object was created.");

/// What a DELETE does to an object that exists, as its kind decides.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Deletion {
    /// Remove it from the store now.
    Remove,
    /// Store it as changed (with a deletionTimestamp): someone finishes the deletion later.
    Mark,
    /// It is already being deleted as asked: answer it unchanged.
    Unchanged,
}

/// The store keys of cluster-wide reservations an admission made before storing (a service's
/// cluster IP and node ports): deleted again if the write is not stored.
pub type Allocation = Vec<String>;

/// How one kind is created, updated, validated, deleted and printed. Every method has the
/// behaviour most kinds want, so a simple kind's strategy only names its type.
pub trait Strategy: Send + Sync + 'static {
    /// The k8s-openapi type bodies of this kind are checked against.
    fn types(&self) -> TypeOps;

    /// Kubernetes' defaulting, on create and on every replacement of the main resource (so a
    /// replacement that leaves defaults out changes nothing). `obj` has passed the type check.
    fn default(&self, _obj: &mut Value) {}

    /// What only a create adds, after `default` (a pod's initial status, a namespace's
    /// finalizer).
    fn prepare_create(&self, _obj: &mut Value) {}

    /// Carries over from the stored object what a replacement of the main resource may leave
    /// out (a service's allocated cluster IP), before the type check and `default`.
    fn prepare_update(&self, _old: &Value, _obj: &mut Value) {}

    /// What the object asks for that skiff accepts but does not do, one sentence each: sent as
    /// `Warning` headers and recorded as an Event on the object.
    fn warnings(&self, _obj: &Value) -> Vec<String> {
        Vec::new()
    }

    /// Whether `name` is a valid name of this kind: `None`, or the problem.
    fn name_problem(&self, name: &str) -> Option<String> {
        super::admission::dns_subdomain_problem(name)
    }

    /// The kind's own validation (metadata is checked for every kind before this). `old` is the
    /// stored object on an update; `part` says which part the write may change.
    fn validate(&self, _obj: &Value, _old: Option<&Value>, _part: Part) -> Vec<FieldError> {
        Vec::new()
    }

    /// Admission that needs the cluster's state, before an object is stored: reserving what it
    /// needs from a shared pool (a service's cluster IP and node ports), or filling in from
    /// other objects (a claim's default StorageClass). `old` is the stored object on an update
    /// of the main resource (`None` on create). Returns the store keys it reserved, which are
    /// deleted if the write is not stored; `key` is the object's store key.
    fn admit<'a>(
        &'a self,
        _objects: &'a Objects,
        _obj: &'a mut Value,
        _old: Option<&'a Value>,
        _key: &'a str,
    ) -> Hook<'a, Allocation> {
        Box::pin(async { Ok(Vec::new()) })
    }

    /// The store keys of the reservations `obj` holds (what `admit` reserved for it): released
    /// when the object goes, or when an update leaves one of them out.
    fn reservations(&self, _obj: &Value) -> Vec<String> {
        Vec::new()
    }

    /// Whether this kind's deletions are its own two-step process (pods finished by their node,
    /// namespaces by the namespace controller): foreground propagation is not applied to it, and
    /// an update that removes its last finalizer does not remove it.
    fn owns_deletion(&self) -> bool {
        false
    }

    /// What a DELETE does to `obj` (which the method may mark for deletion). The default is
    /// Kubernetes' for most kinds: remove it, or mark it while finalizers remain.
    fn delete(
        &self,
        _name: &str,
        obj: &mut Value,
        _opts: &DeleteOptions,
    ) -> Result<Deletion, ApiError> {
        if !has_finalizers(obj) {
            return Ok(Deletion::Remove);
        }
        if being_deleted(obj) {
            return Ok(Deletion::Unchanged);
        }
        mark_deleted(obj, &super::objects::now(), 0);
        Ok(Deletion::Mark)
    }

    /// `propagationPolicy` when the request names none (Kubernetes' per-kind default).
    fn default_propagation(&self) -> Propagation {
        Propagation::Background
    }

    /// A warning a DELETE without `propagationPolicy` gets.
    fn delete_warning(&self) -> Option<&'static str> {
        None
    }

    /// Whether a DELETE of the whole collection is allowed.
    fn delete_collection(&self) -> bool {
        true
    }

    /// The JSON pointer of a field selectors may name beyond `metadata.name` and
    /// `metadata.namespace`.
    fn selectable_field(&self, _field: &str) -> Option<&'static str> {
        None
    }

    /// The selector of the pods a workload of this kind runs, as a `LabelSelector` (the scale
    /// subresource's `status.selector` and the wide `Selector` column print it).
    fn label_selector(&self, obj: &Value) -> Value {
        obj.pointer("/spec/selector")
            .cloned()
            .unwrap_or(Value::Null)
    }

    /// For a kind whose objects are computed when read instead of stored (ComponentStatus):
    /// how to compute them. GET and LIST answer from them; nothing else is served.
    fn computed(&self) -> Option<fn(&Objects) -> Vec<Value>> {
        None
    }

    /// A warning every read of this kind carries (a deprecated kind's).
    fn read_warning(&self) -> Option<&'static str> {
        None
    }

    /// The columns of this kind's Table, in order.
    fn columns(&self) -> &'static [Column] {
        &[NAME, AGE]
    }

    /// One object's cells, matching `columns`.
    fn cells(&self, obj: &Value) -> Vec<Value> {
        vec![json!(str_at(obj, "/metadata/name")), age_cell(obj)]
    }
}

/// The cells of `[NAME, CREATED_AT]`.
pub fn created_at_cells(obj: &Value) -> Vec<Value> {
    vec![
        json!(str_at(obj, "/metadata/name")),
        json!(str_at(obj, "/metadata/creationTimestamp")),
    ]
}

/// A string field, or `""`.
pub fn str_at<'a>(v: &'a Value, ptr: &str) -> &'a str {
    v.pointer(ptr).and_then(Value::as_str).unwrap_or("")
}

/// The object's annotation `key`, or "".
pub fn annotation_at<'a>(v: &'a Value, key: &str) -> &'a str {
    v.pointer("/metadata/annotations")
        .and_then(|a| a.get(key))
        .and_then(Value::as_str)
        .unwrap_or("")
}

/// The Age cell of an object.
pub fn age_cell(obj: &Value) -> Value {
    json!(super::table::age(str_at(
        obj,
        "/metadata/creationTimestamp"
    )))
}

pub fn has_finalizers(obj: &Value) -> bool {
    obj.pointer("/metadata/finalizers")
        .and_then(Value::as_array)
        .is_some_and(|f| !f.is_empty())
}

pub fn being_deleted(obj: &Value) -> bool {
    obj.pointer("/metadata/deletionTimestamp").is_some()
}

/// Sets `deletionTimestamp` to `at` and the grace period.
pub fn mark_deleted(obj: &mut Value, at: &str, grace: i64) {
    obj["metadata"]["deletionTimestamp"] = json!(at);
    obj["metadata"]["deletionGracePeriodSeconds"] = json!(grace);
}

/// The object under `key`, made an object if it is missing or not one.
pub fn obj_mut<'a>(v: &'a mut Value, key: &str) -> &'a mut Map<String, Value> {
    if !v.get(key).is_some_and(Value::is_object) {
        v[key] = json!({});
    }
    match v.get_mut(key) {
        Some(Value::Object(m)) => m,
        _ => unreachable!("just made an object"),
    }
}

/// Sets `key` unless it holds a value.
pub fn set_default(m: &mut Map<String, Value>, key: &str, value: Value) {
    if m.get(key).is_none_or(Value::is_null) {
        m.insert(key.to_string(), value);
    }
}

/// A non-negative integer field, or an error naming it.
pub fn non_negative(errs: &mut Vec<FieldError>, obj: &Value, ptr: &str, field: &str) {
    if let Some(v) = obj.pointer(ptr)
        && !v.is_null()
        && v.as_i64().is_none_or(|n| n < 0)
    {
        errs.push(FieldError::invalid(
            field,
            v,
            "must be greater than or equal to 0",
        ));
    }
}
