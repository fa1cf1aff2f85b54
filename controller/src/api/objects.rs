//! The object layer between HTTP and the store: create, read, update, patch and delete of
//! Kubernetes objects as JSON, with the API's metadata rules (uid, resourceVersion, generation,
//! graceful deletion, finalizers) and admission. The handlers and the in-process controllers
//! both go through here, so they obey the same rules.

use serde_json::{Value, json};

use super::admission;
use super::error::ApiError;
use super::patch::{self, PatchType};
use super::resources::{self, Resource};
use super::strategy::Deletion;
use crate::store::{Precondition, Record, Store, StoreError};

/// Kubernetes stores objects up to 1.5 MiB (etcd's default request limit).
pub const MAX_OBJECT_BYTES: usize = 3 * 1024 * 1024 / 2;

pub const SYSTEM_NAMESPACES: &[&str] =
    &["default", "kube-system", "kube-public", "kube-node-lease"];

/// Which part of an object an update may change.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Part {
    /// The main resource: everything but status.
    Main,
    /// The `/status` subresource: status only.
    Status,
    /// `pods/binding`: the main resource, where `spec.nodeName` may be set once.
    Binding,
}

/// Options of a DELETE (DeleteOptions and query parameters).
#[derive(Debug, Clone, Default)]
pub struct DeleteOptions {
    pub grace_period_seconds: Option<i64>,
    pub uid: Option<String>,
    pub resource_version: Option<String>,
    pub dry_run: bool,
    /// `None`: the resource's default (Orphan for batch/v1 jobs, Background otherwise).
    pub propagation: Option<Propagation>,
}

/// `propagationPolicy`: what happens to an object's dependents when it is deleted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Propagation {
    /// Dependents lose their ownerReference to the object and stay.
    Orphan,
    /// The object goes at once; the garbage collector deletes its dependents afterwards.
    Background,
    /// The object gets the `foregroundDeletion` finalizer and stays (with a
    /// deletionTimestamp) until the garbage collector has deleted its dependents.
    Foreground,
}

impl Propagation {
    pub fn parse(s: &str) -> Result<Self, ApiError> {
        match s {
            "Orphan" => Ok(Self::Orphan),
            "Background" => Ok(Self::Background),
            "Foreground" => Ok(Self::Foreground),
            other => Err(ApiError::BadRequest(format!(
                "propagationPolicy: unsupported value {other:?}: supported values: \"Background\", \"Foreground\", \"Orphan\""
            ))),
        }
    }
}

/// The finalizer of a foreground deletion.
pub const FOREGROUND_FINALIZER: &str = "foregroundDeletion";

/// Whether `obj` has an ownerReference to `uid`.
pub fn owned_by(obj: &Value, uid: &str) -> bool {
    obj.pointer("/metadata/ownerReferences")
        .and_then(Value::as_array)
        .is_some_and(|refs| refs.iter().any(|r| r["uid"] == uid))
}

/// Now, as Kubernetes writes timestamps (RFC 3339, seconds).
pub fn now() -> String {
    jiff::Timestamp::now()
        .strftime("%Y-%m-%dT%H:%M:%SZ")
        .to_string()
}

/// `seconds` from now, as Kubernetes writes timestamps.
pub fn after(seconds: i64) -> String {
    let t = jiff::Timestamp::now()
        .checked_add(jiff::SignedDuration::from_secs(seconds))
        .unwrap_or_else(|_| jiff::Timestamp::now());
    t.strftime("%Y-%m-%dT%H:%M:%SZ").to_string()
}

/// Decodes a stored record into the object clients see, with its resourceVersion.
pub fn decode(rec: &Record) -> Result<Value, ApiError> {
    let v: Value = serde_json::from_slice(&rec.value)
        .map_err(|e| ApiError::Internal(format!("stored object is not JSON: {e}")))?;
    Ok(with_resource_version(v, rec))
}

/// The object stored as `rec`, with the record's revision as its resourceVersion.
fn with_resource_version(mut v: Value, rec: &Record) -> Value {
    if let Some(m) = v.get_mut("metadata").and_then(Value::as_object_mut) {
        m.insert(
            "resourceVersion".into(),
            json!(rec.mod_revision.to_string()),
        );
    }
    v
}

/// `obj` as a stored record's value: without its resourceVersion, which is the record's.
fn encode(obj: &Value) -> Result<Vec<u8>, ApiError> {
    let bytes = if obj.pointer("/metadata/resourceVersion").is_some() {
        let mut o = obj.clone();
        if let Some(m) = o.get_mut("metadata").and_then(Value::as_object_mut) {
            m.remove("resourceVersion");
        }
        serde_json::to_vec(&o)
    } else {
        serde_json::to_vec(obj)
    }
    .map_err(|e| ApiError::Internal(format!("encode object: {e}")))?;
    if bytes.len() > MAX_OBJECT_BYTES {
        return Err(ApiError::TooLarge(format!(
            "Request entity too large: the object is {} bytes; the limit is {MAX_OBJECT_BYTES}",
            bytes.len()
        )));
    }
    Ok(bytes)
}

fn parse_rv(rv: &str) -> Result<u64, ApiError> {
    rv.parse().map_err(|_| {
        ApiError::BadRequest(format!(
            "invalid resourceVersion {rv:?}: must be a decimal integer"
        ))
    })
}

fn random_suffix() -> String {
    const CHARS: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    let id = uuid::Uuid::new_v4();
    id.as_bytes()[..5]
        .iter()
        .map(|b| CHARS[*b as usize % CHARS.len()] as char)
        .collect()
}

fn name_of(obj: &Value) -> &str {
    obj.pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or("")
}

fn has_status_subresource(res: &Resource) -> bool {
    res.subresources.contains(&"status")
}

/// Checks an object that `admission::prune_unknown` (which checks its types) has already seen.
fn validate(res: &Resource, obj: &Value, old: Option<&Value>, part: Part) -> Result<(), ApiError> {
    let mut errs = admission::validate_metadata(res, obj);
    errs.extend(res.strategy.validate(obj, old, part));
    if errs.is_empty() {
        Ok(())
    } else {
        Err(ApiError::Invalid {
            kind: res.group_kind(),
            name: name_of(obj).to_string(),
            causes: errs,
        })
    }
}

/// The object service.
#[derive(Debug, Clone)]
pub struct Objects {
    pub store: Store,
}

/// How one attempt at a DELETE failed: a compare-and-swap lost to another write (tried again),
/// or anything else (answered).
enum DeleteError {
    Raced,
    Api(ApiError),
}

impl DeleteError {
    fn from_store(res: &Resource, name: &str, e: StoreError) -> Self {
        match e {
            StoreError::PreconditionFailed {
                actual: Some(_), ..
            } => DeleteError::Raced,
            e => DeleteError::Api(map_store_err(res, name, e)),
        }
    }
}

impl From<ApiError> for DeleteError {
    fn from(e: ApiError) -> Self {
        DeleteError::Api(e)
    }
}

fn map_store_err(res: &Resource, name: &str, e: StoreError) -> ApiError {
    match e {
        StoreError::PreconditionFailed { actual: None, .. } => {
            ApiError::not_found(&res.qualified(), name)
        }
        StoreError::PreconditionFailed { .. } => ApiError::modified(&res.qualified(), name),
        other => other.into(),
    }
}

impl Objects {
    pub fn new(store: Store) -> Self {
        Self { store }
    }

    pub fn get(&self, res: &Resource, ns: Option<&str>, name: &str) -> Result<Value, ApiError> {
        self.current(res, ns, name).map(|(_, obj)| obj)
    }

    /// The stored record of an object and the object decoded from it.
    fn current(
        &self,
        res: &Resource,
        ns: Option<&str>,
        name: &str,
    ) -> Result<(Record, Value), ApiError> {
        let rec = self
            .store
            .get(&res.key(ns, name))
            .ok_or_else(|| ApiError::not_found(&res.qualified(), name))?;
        let obj = decode(&rec)?;
        Ok((rec, obj))
    }

    /// Every object of `res` (in `ns`, or everywhere) and the revision of the listing.
    pub fn list(&self, res: &Resource, ns: Option<&str>) -> Result<(Vec<Value>, u64), ApiError> {
        let (items, rev) = self.store.list(&res.list_prefix(ns));
        let items = items
            .iter()
            .map(|(_, r)| decode(r))
            .collect::<Result<Vec<_>, _>>()?;
        Ok((items, rev))
    }

    /// The objects of `res` whose stored form contains `needle` (a field name, a value), decoded;
    /// the others are skipped undecoded, so a pass that wants a few of many objects does not
    /// pay for parsing them all.
    pub fn list_containing(
        &self,
        res: &Resource,
        ns: Option<&str>,
        needle: &[u8],
    ) -> Result<Vec<Value>, ApiError> {
        let finder = memchr::memmem::Finder::new(needle);
        self.store
            .list_where(&res.list_prefix(ns), |r| finder.find(&r.value).is_some())
            .iter()
            .map(|(_, r)| decode(r))
            .collect()
    }

    fn check_namespace(&self, ns: &str) -> Result<(), ApiError> {
        let nsres = resources::namespaces();
        let Some(rec) = self.store.get(&nsres.key(None, ns)) else {
            return Err(ApiError::not_found("namespaces", ns));
        };
        // Most writes land in a namespace that is not being deleted: no need to parse it then.
        if memchr::memmem::find(&rec.value, b"\"deletionTimestamp\"").is_some()
            && decode(&rec)?
                .pointer("/metadata/deletionTimestamp")
                .is_some()
        {
            return Err(ApiError::Forbidden(format!(
                "unable to create new content in namespace {ns} because it is being terminated"
            )));
        }
        Ok(())
    }

    /// Creates an object (POST).
    pub async fn create(
        &self,
        res: &Resource,
        ns: Option<&str>,
        mut obj: Value,
        dry_run: bool,
    ) -> Result<Value, ApiError> {
        if !obj.is_object() {
            return Err(ApiError::BadRequest(format!(
                "the body of a {} must be a JSON object",
                res.kind
            )));
        }
        check_gvk(res, &obj)?;
        obj["apiVersion"] = json!(res.api_version());
        obj["kind"] = json!(res.kind);
        if !obj.get("metadata").is_some_and(Value::is_object) {
            obj["metadata"] = json!({});
        }
        let meta = obj["metadata"]
            .as_object_mut()
            .ok_or_else(|| ApiError::BadRequest("metadata must be an object".into()))?;
        if meta
            .get("name")
            .and_then(Value::as_str)
            .unwrap_or("")
            .is_empty()
            && let Some(g) = meta.get("generateName").and_then(Value::as_str)
        {
            let n = format!("{g}{}", random_suffix());
            meta.insert("name".into(), json!(n));
        }
        if res.namespaced {
            let ns = ns.ok_or_else(|| {
                ApiError::BadRequest(format!("{} must be created in a namespace", res.plural))
            })?;
            match meta.get("namespace").and_then(Value::as_str) {
                Some(b) if !b.is_empty() && b != ns => {
                    return Err(ApiError::BadRequest(format!(
                        "the namespace of the provided object ({b}) does not match the namespace sent on the request ({ns})"
                    )));
                }
                _ => {
                    meta.insert("namespace".into(), json!(ns));
                }
            }
        } else {
            meta.remove("namespace");
        }
        for k in [
            "resourceVersion",
            "deletionTimestamp",
            "deletionGracePeriodSeconds",
            "selfLink",
        ] {
            meta.remove(k);
        }
        meta.insert("uid".into(), json!(uuid::Uuid::new_v4().to_string()));
        meta.insert("creationTimestamp".into(), json!(now()));
        meta.insert("generation".into(), json!(1));
        // Types are checked (and unknown fields dropped) before defaulting, which expects them
        // right; what defaulting adds is known to the type.
        admission::prune_unknown(res, &mut obj)?;
        res.strategy.default(&mut obj);
        res.strategy.prepare_create(&mut obj);
        validate(res, &obj, None, Part::Main)?;
        let name = name_of(&obj).to_string();
        if let Some(ns) = ns.filter(|_| res.namespaced) {
            self.check_namespace(ns)?;
        }
        let key = res.key(ns, &name);
        if dry_run {
            encode(&obj)?;
            if self.store.get(&key).is_some() {
                return Err(ApiError::AlreadyExists {
                    resource: res.qualified(),
                    name,
                });
            }
            return Ok(obj);
        }
        let allocation = res.strategy.admit(self, &mut obj, None, &key).await?;
        let stored = match encode(&obj) {
            Ok(bytes) => match self.store.put(&key, bytes, Precondition::Absent).await {
                // What was stored is `obj` as encoded: it only lacks its resourceVersion.
                Ok((rec, _)) => Ok(rec),
                Err(StoreError::PreconditionFailed { .. }) => Err(ApiError::AlreadyExists {
                    resource: res.qualified(),
                    name,
                }),
                Err(e) => Err(e.into()),
            },
            Err(e) => Err(e),
        };
        match stored {
            Ok(rec) => {
                let obj = with_resource_version(obj, &rec);
                self.report_unsupported(res, &obj);
                Ok(obj)
            }
            Err(e) => {
                self.release(&allocation).await;
                Err(e)
            }
        }
    }

    /// Records an Event on a new object that asks for what skiff does not do, so the warning
    /// reaches whoever looks at it (`kubectl describe`), not only the client that sent it.
    fn report_unsupported(&self, res: &Resource, obj: &Value) {
        let warnings = res.strategy.warnings(obj);
        if warnings.is_empty() {
            return;
        }
        let objects = self.clone();
        let obj = obj.clone();
        // A task of its own: the Event is itself a create.
        tokio::spawn(async move {
            crate::reconcile::events::record(
                &objects,
                &obj,
                crate::reconcile::events::EventType::Warning,
                "UnsupportedField",
                &format!("skiff does not implement: {}", warnings.join("; ")),
                "skiff-apiserver",
            )
            .await;
        });
    }

    /// Replaces an object (PUT), on the main resource or its status.
    pub async fn update(
        &self,
        res: &Resource,
        ns: Option<&str>,
        name: &str,
        obj: Value,
        part: Part,
        dry_run: bool,
    ) -> Result<Value, ApiError> {
        if !obj.is_object() {
            return Err(ApiError::BadRequest(format!(
                "the body of a {} must be a JSON object",
                res.kind
            )));
        }
        check_gvk(res, &obj)?;
        let body_name = name_of(&obj);
        if !body_name.is_empty() && body_name != name {
            return Err(ApiError::BadRequest(format!(
                "the name of the object ({body_name}) does not match the name on the URL ({name})"
            )));
        }
        let current = self.current(res, ns, name)?;
        self.update_from(res, ns, name, obj, part, dry_run, current)
            .await
    }

    /// [`Objects::update`] against `current`, the record at the key and it decoded (which
    /// [`Objects::modify`] has read already).
    #[allow(clippy::too_many_arguments)]
    async fn update_from(
        &self,
        res: &Resource,
        ns: Option<&str>,
        name: &str,
        mut obj: Value,
        part: Part,
        dry_run: bool,
        current: (Record, Value),
    ) -> Result<Value, ApiError> {
        let key = res.key(ns, name);
        let (cur_rec, cur) = current;
        let expect = match obj
            .pointer("/metadata/resourceVersion")
            .and_then(Value::as_str)
        {
            Some(rv) if !rv.is_empty() => parse_rv(rv)?,
            _ => cur_rec.mod_revision,
        };
        if expect != cur_rec.mod_revision {
            return Err(ApiError::modified(&res.qualified(), name));
        }
        obj["apiVersion"] = json!(res.api_version());
        obj["kind"] = json!(res.kind);
        let next = match part {
            Part::Status => {
                let mut n = cur.clone();
                n["status"] = obj.get("status").cloned().unwrap_or(json!({}));
                admission::prune_unknown(res, &mut n)?;
                n
            }
            Part::Main | Part::Binding => {
                // A binding writes the pod's PodScheduled condition with its nodeName.
                if has_status_subresource(res) && part == Part::Main {
                    match cur.get("status") {
                        Some(s) => obj["status"] = s.clone(),
                        None => {
                            if let Some(m) = obj.as_object_mut() {
                                m.remove("status");
                            }
                        }
                    }
                }
                preserve_metadata(&cur, &mut obj);
                res.strategy.prepare_update(&cur, &mut obj);
                // Defaulting before comparing specs: a replacement that leaves defaults out
                // does not change the spec, so it does not bump the generation. Types are
                // checked first, as defaulting expects them right. A binding is the stored
                // pod with its node set: nothing in it to check.
                if part != Part::Binding {
                    admission::prune_unknown(res, &mut obj)?;
                }
                res.strategy.default(&mut obj);
                let generation = cur
                    .pointer("/metadata/generation")
                    .and_then(Value::as_i64)
                    .unwrap_or(1);
                let spec_changed = cur.get("spec") != obj.get("spec");
                obj["metadata"]["generation"] = json!(if spec_changed {
                    generation + 1
                } else {
                    generation
                });
                obj
            }
        };
        validate(res, &next, Some(&cur), part)?;
        // An object that is being deleted goes once its last finalizer is removed.
        let finalizers_done = next
            .pointer("/metadata/finalizers")
            .and_then(Value::as_array)
            .is_none_or(|f| f.is_empty());
        if next.pointer("/metadata/deletionTimestamp").is_some()
            && finalizers_done
            && !res.strategy.owns_deletion()
        {
            if dry_run {
                return Ok(next);
            }
            self.store
                .delete(&key, Precondition::ModRevision(expect))
                .await
                .map_err(|e| map_store_err(res, name, e))?;
            self.release(&res.strategy.reservations(&cur)).await;
            return Ok(next);
        }
        let mut next = next;
        if dry_run {
            encode(&next)?;
            return Ok(next);
        }
        let allocation = match part {
            Part::Main => {
                res.strategy
                    .admit(self, &mut next, Some(&cur), &key)
                    .await?
            }
            _ => Vec::new(),
        };
        let stored = match encode(&next) {
            Ok(bytes) => self
                .store
                .put(&key, bytes, Precondition::ModRevision(expect))
                .await
                .map_err(|e| map_store_err(res, name, e)),
            Err(e) => Err(e),
        };
        match stored {
            Ok((rec, _)) => {
                let kept = res.strategy.reservations(&next);
                let dropped: Vec<String> = res
                    .strategy
                    .reservations(&cur)
                    .into_iter()
                    .filter(|k| !kept.contains(k))
                    .collect();
                self.release(&dropped).await;
                Ok(with_resource_version(next, &rec))
            }
            Err(e) => {
                self.release(&allocation).await;
                Err(e)
            }
        }
    }

    /// Deletes reservations (store keys an admission made); one already gone is no error.
    pub(crate) async fn release(&self, keys: &[String]) {
        for key in keys {
            if let Err(e) = self.store.delete(key, Precondition::None).await {
                tracing::debug!(key, error = %e, "reservation was already released");
            }
        }
    }

    /// Applies a PATCH to the current object and stores the result, retrying on a concurrent
    /// change unless the patch itself named a resourceVersion.
    pub async fn patch(
        &self,
        res: &Resource,
        ns: Option<&str>,
        name: &str,
        kind: PatchType,
        body: &Value,
        part: Part,
        dry_run: bool,
    ) -> Result<Value, ApiError> {
        let pinned = body
            .pointer("/metadata/resourceVersion")
            .is_some_and(|v| !v.is_null());
        let mut attempts = 0;
        loop {
            attempts += 1;
            let cur = self.get(res, ns, name)?;
            let mut next = cur.clone();
            patch::apply_patch(kind, &mut next, body)?;
            if !pinned {
                next["metadata"]["resourceVersion"] = cur["metadata"]["resourceVersion"].clone();
            }
            match self.update(res, ns, name, next, part, dry_run).await {
                Err(ApiError::Conflict { .. }) if !pinned && attempts < 8 => continue,
                other => return other,
            }
        }
    }

    /// Reads, changes and writes an object with compare-and-swap, retrying on conflicts: the way
    /// controllers change objects.
    pub async fn modify(
        &self,
        res: &Resource,
        ns: Option<&str>,
        name: &str,
        part: Part,
        f: impl Fn(&mut Value) -> Result<(), ApiError>,
    ) -> Result<Value, ApiError> {
        for _ in 0..16 {
            let current = self.current(res, ns, name)?;
            let mut obj = current.1.clone();
            f(&mut obj)?;
            match self
                .update_from(res, ns, name, obj, part, false, current)
                .await
            {
                Err(ApiError::Conflict { .. }) => continue,
                other => return other,
            }
        }
        Err(ApiError::modified(&res.qualified(), name))
    }

    /// Deletes an object (DELETE): graceful for scheduled pods, deferred while finalizers remain.
    /// A write that raced with another (a node agent's status update, say) is tried again on
    /// the new object, as the kube-apiserver's `GuaranteedUpdate` does, unless the client
    /// pinned a resourceVersion.
    pub async fn delete(
        &self,
        res: &Resource,
        ns: Option<&str>,
        name: &str,
        opts: &DeleteOptions,
    ) -> Result<Value, ApiError> {
        let mut attempts = 0;
        loop {
            attempts += 1;
            match self.delete_once(res, ns, name, opts).await {
                Err(DeleteError::Raced) if opts.resource_version.is_none() && attempts < 16 => {}
                Err(DeleteError::Raced) => return Err(ApiError::modified(&res.qualified(), name)),
                Err(DeleteError::Api(e)) => return Err(e),
                Ok(v) => return Ok(v),
            }
        }
    }

    async fn delete_once(
        &self,
        res: &Resource,
        ns: Option<&str>,
        name: &str,
        opts: &DeleteOptions,
    ) -> Result<Value, DeleteError> {
        let key = res.key(ns, name);
        let rec = self
            .store
            .get(&key)
            .ok_or_else(|| ApiError::not_found(&res.qualified(), name))?;
        let mut obj = decode(&rec)?;
        if let Some(uid) = &opts.uid {
            let actual = obj
                .pointer("/metadata/uid")
                .and_then(Value::as_str)
                .unwrap_or("");
            if uid != actual {
                return Err(DeleteError::Api(ApiError::Conflict {
                    resource: res.qualified(),
                    name: name.to_string(),
                    detail: format!(
                        "Precondition failed: UID in precondition: {uid}, UID in object meta: {actual}"
                    ),
                }));
            }
        }
        if let Some(rv) = &opts.resource_version
            && parse_rv(rv)? != rec.mod_revision
        {
            return Err(DeleteError::Api(ApiError::Conflict {
                resource: res.qualified(),
                name: name.to_string(),
                detail: format!(
                    "Precondition failed: ResourceVersion in precondition: {rv}, ResourceVersion in object meta: {}",
                    rec.mod_revision
                ),
            }));
        }
        let policy = opts
            .propagation
            .unwrap_or_else(|| res.strategy.default_propagation());
        let uid = obj
            .pointer("/metadata/uid")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string();
        if policy == Propagation::Foreground
            && !res.strategy.owns_deletion()
            && obj.pointer("/metadata/deletionTimestamp").is_none()
        {
            obj["metadata"]["deletionTimestamp"] = json!(now());
            obj["metadata"]["deletionGracePeriodSeconds"] = json!(0);
            let fins = obj["metadata"]
                .as_object_mut()
                .map(|m| m.entry("finalizers").or_insert_with(|| json!([])));
            if let Some(Value::Array(f)) = fins
                && !f.iter().any(|x| x == FOREGROUND_FINALIZER)
            {
                f.push(json!(FOREGROUND_FINALIZER));
            }
            if opts.dry_run {
                return Ok(obj);
            }
            let (rec, _) = self
                .store
                .put(
                    &key,
                    encode(&obj)?,
                    Precondition::ModRevision(rec.mod_revision),
                )
                .await
                .map_err(|e| DeleteError::from_store(res, name, e))?;
            return Ok(decode(&rec)?);
        }
        if policy == Propagation::Orphan && !opts.dry_run {
            self.orphan_dependents(&uid, obj["metadata"]["namespace"].as_str())
                .await?;
        }
        match res.strategy.delete(name, &mut obj, opts)? {
            Deletion::Unchanged => Ok(obj),
            Deletion::Mark => {
                if opts.dry_run {
                    return Ok(obj);
                }
                let bytes = encode(&obj)?;
                let (rec, _) = self
                    .store
                    .put(&key, bytes, Precondition::ModRevision(rec.mod_revision))
                    .await
                    .map_err(|e| DeleteError::from_store(res, name, e))?;
                Ok(decode(&rec)?)
            }
            Deletion::Remove => {
                if opts.dry_run {
                    return Ok(obj);
                }
                let (_, rev) = self
                    .store
                    .delete(&key, Precondition::ModRevision(rec.mod_revision))
                    .await
                    .map_err(|e| DeleteError::from_store(res, name, e))?;
                self.release(&res.strategy.reservations(&obj)).await;
                obj["metadata"]["resourceVersion"] = json!(rev.to_string());
                Ok(obj)
            }
        }
    }

    /// Every object owned by `uid`: in `ns` for a namespaced owner, anywhere for a
    /// cluster-scoped one.
    pub fn dependents(
        &self,
        uid: &str,
        ns: Option<&str>,
    ) -> Result<Vec<(&'static Resource, Value)>, ApiError> {
        let mut out = Vec::new();
        if uid.is_empty() {
            return Ok(out);
        }
        for r in resources::RESOURCES {
            let (items, _) = self.list(r, if r.namespaced { ns } else { None })?;
            out.extend(
                items
                    .into_iter()
                    .filter(|o| owned_by(o, uid))
                    .map(|o| (r, o)),
            );
        }
        Ok(out)
    }

    /// Removes the ownerReferences to `uid` from its dependents (Orphan propagation).
    async fn orphan_dependents(&self, uid: &str, ns: Option<&str>) -> Result<(), ApiError> {
        for (r, dep) in self.dependents(uid, ns)? {
            let name = name_of(&dep).to_string();
            let dep_ns = dep.pointer("/metadata/namespace").and_then(Value::as_str);
            let res = self
                .modify(r, dep_ns, &name, Part::Main, |o| {
                    if let Some(Value::Array(refs)) = o.pointer_mut("/metadata/ownerReferences") {
                        refs.retain(|x| x["uid"] != uid);
                    }
                    Ok(())
                })
                .await;
            match res {
                Ok(_) | Err(ApiError::NotFound { .. }) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// Creates the namespaces every cluster has, the system PriorityClasses and the default
    /// StorageClass, if missing.
    pub async fn ensure_system_objects(
        &self,
        cluster_dns: Option<std::net::Ipv4Addr>,
    ) -> Result<(), ApiError> {
        for ns in SYSTEM_NAMESPACES {
            let obj = json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}});
            match self.create(resources::namespaces(), None, obj, false).await {
                Ok(_) | Err(ApiError::AlreadyExists { .. }) => {}
                Err(e) => return Err(e),
            }
        }
        for service in crate::api::kinds::apiservice::local_api_services() {
            match self
                .create(resources::api_services(), None, service, false)
                .await
            {
                Ok(_) | Err(ApiError::AlreadyExists { .. }) => {}
                Err(e) => return Err(e),
            }
        }
        if let Some(ip) = cluster_dns {
            let svc = crate::api::kinds::service::cluster_dns_service(ip);
            let res = resources::services();
            // Looked up first: a second create would fail on its address before its name.
            if self
                .store
                .get(&res.key(Some("kube-system"), "kube-dns"))
                .is_none()
            {
                match self.create(res, Some("kube-system"), svc, false).await {
                    Ok(_) | Err(ApiError::AlreadyExists { .. }) => {}
                    Err(e) => return Err(e),
                }
            }
        }
        for class in crate::api::kinds::priorityclass::system_classes() {
            match self
                .create(resources::priority_classes(), None, class, false)
                .await
            {
                Ok(_) | Err(ApiError::AlreadyExists { .. }) => {}
                Err(e) => return Err(e),
            }
        }
        let class = crate::api::kinds::storageclass::bootstrap_class();
        match self
            .create(resources::storage_classes(), None, class, false)
            .await
        {
            Ok(_) | Err(ApiError::AlreadyExists { .. }) => Ok(()),
            Err(e) => Err(e),
        }
    }
}

/// Fields of metadata that only the server sets, kept from the stored object on update.
fn preserve_metadata(cur: &Value, next: &mut Value) {
    if !next.get("metadata").is_some_and(Value::is_object) {
        next["metadata"] = json!({});
    }
    // An update that leaves managedFields out keeps them (an explicit `[]` clears them).
    if next.pointer("/metadata/managedFields").is_none()
        && let Some(mf) = cur.pointer("/metadata/managedFields")
    {
        next["metadata"]["managedFields"] = mf.clone();
    }
    for k in [
        "name",
        "namespace",
        "uid",
        "creationTimestamp",
        "deletionTimestamp",
        "deletionGracePeriodSeconds",
        "generateName",
    ] {
        match cur.pointer(&format!("/metadata/{k}")) {
            Some(v) => next["metadata"][k] = v.clone(),
            None => {
                if let Some(m) = next["metadata"].as_object_mut() {
                    m.remove(k);
                }
            }
        }
    }
}

/// Rejects a body whose apiVersion or kind is not this resource's.
fn check_gvk(res: &Resource, obj: &Value) -> Result<(), ApiError> {
    if let Some(av) = obj.get("apiVersion").and_then(Value::as_str)
        && !av.is_empty()
        && av != res.api_version()
    {
        return Err(ApiError::BadRequest(format!(
            "the API version in the data ({av}) does not match the expected API version ({})",
            res.api_version()
        )));
    }
    if let Some(k) = obj.get("kind").and_then(Value::as_str)
        && !k.is_empty()
        && k != res.kind
    {
        return Err(ApiError::BadRequest(format!(
            "the kind in the data ({k}) does not match the expected kind ({})",
            res.kind
        )));
    }
    Ok(())
}
