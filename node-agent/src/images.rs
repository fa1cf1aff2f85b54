//! Making sure a container's image is on the node before it is created, as the kubelet's
//! `EnsureImageExists` does: `imagePullPolicy`, the pod's pull-secret credentials, the back-off
//! between failed pulls (`ErrImagePull`, then `ImagePullBackOff`), and the KEP-2535 check that
//! an image pulled with credentials is only given to pods holding them.

use crate::AgentError;
use crate::backoff::Backoff;
use crate::cri::{Cri, v1};
use crate::recorder::EventType;
use crate::spec::{self, PullPolicy};
use crate::worker::NodeContext;
use k8s_openapi::api::core::v1::{Container, Pod};
use std::time::Duration;
use tokio::time::Instant;

/// How long a failed pull shows as `ErrImagePull` before `ImagePullBackOff`.
const ERR_IMAGE_PULL_SHOWN: Duration = Duration::from_secs(3);

/// The pull back-off of one container's image.
#[derive(Debug, Default)]
pub struct PullState {
    pub backoff: Backoff,
    /// When the last pull failed and why: the kubelet keeps showing `ErrImagePull` until a
    /// later pass, and only then `ImagePullBackOff`.
    pub error: Option<(Instant, String)>,
}

/// The credentials the pod's `imagePullSecrets` hold for `image`, most specific first.
async fn pod_credentials(node: &NodeContext, pod: &Pod, image: &str) -> Vec<v1::AuthConfig> {
    let names: Vec<String> = pod
        .spec
        .as_ref()
        .and_then(|s| s.image_pull_secrets.as_ref())
        .into_iter()
        .flatten()
        .map(|r| r.name.clone())
        .filter(|n| !n.is_empty())
        .collect();
    if names.is_empty() {
        return Vec::new();
    }
    let namespace = pod.metadata.namespace.as_deref().unwrap_or("default");
    let keys = node.pulls.secrets.keys(namespace, &names).await;
    crate::pull::credentials_for(image, &keys)
}

/// How an event about the image is told (type, reason, message).
pub type Emit<'a> = &'a (dyn Fn(EventType, &'static str, String) + Send + Sync);

/// Makes sure the image is on the node as `imagePullPolicy` says (kubelet
/// `EnsureImageExists`), pulling with the pod's credentials, and keeps an image that was pulled
/// with credentials from pods without them (KEP-2535). Errors are `(waiting reason, message)`.
/// The kubelet's events (Pulling, Pulled, Failed, BackOff, ErrImageNeverPull) go to `emit`.
#[allow(clippy::too_many_arguments)]
pub async fn ensure_image<C: Cri>(
    cri: &C,
    node: &NodeContext,
    pod: &Pod,
    state: &mut PullState,
    c: &Container,
    sandbox_config: &v1::PodSandboxConfig,
    now: Instant,
    emit: Emit<'_>,
) -> Result<String, (&'static str, String)> {
    let image = c.image.clone().unwrap_or_default();
    let out = ensure(cri, node, pod, state, c, sandbox_config, now, emit).await;
    match &out {
        Ok(_) => {}
        Err(("ErrImageNeverPull", message)) => {
            emit(EventType::Warning, "ErrImageNeverPull", message.clone());
            emit(
                EventType::Warning,
                "Failed",
                "Error: ErrImageNeverPull".to_owned(),
            );
        }
        Err(("ImagePullBackOff", _)) => {
            emit(
                EventType::Normal,
                "BackOff",
                format!("Back-off pulling image {image:?}"),
            );
            emit(
                EventType::Warning,
                "Failed",
                "Error: ImagePullBackOff".to_owned(),
            );
        }
        Err(_) => {}
    }
    out
}

#[allow(clippy::too_many_arguments)]
async fn ensure<C: Cri>(
    cri: &C,
    node: &NodeContext,
    pod: &Pod,
    state: &mut PullState,
    c: &Container,
    sandbox_config: &v1::PodSandboxConfig,
    now: Instant,
    emit: Emit<'_>,
) -> Result<String, (&'static str, String)> {
    let image = c.image.clone().unwrap_or_default();
    let policy = spec::pull_policy(c);
    let records = &node.pulls.records;
    let mut creds = None;
    if policy != PullPolicy::Always {
        match cri.image_status(&image).await {
            Ok(Some(img)) => {
                let present = || {
                    emit(
                        EventType::Normal,
                        "Pulled",
                        format!("Container image {image:?} already present on machine"),
                    )
                };
                // Secrets are read only for an image some pods may not use.
                if !records.is_private(&img.id) {
                    present();
                    return Ok(img.id);
                }
                let pod_creds = pod_credentials(node, pod, &image).await;
                if records.may_use(&img.id, &pod_creds) {
                    present();
                    return Ok(img.id);
                }
                if policy == PullPolicy::Never {
                    return Err((
                        "ErrImageNeverPull",
                        format!(
                            "image {image:?} on the node was pulled with credentials this pod does \
                             not hold, and pull policy Never forbids pulling it to check them"
                        ),
                    ));
                }
                creds = Some(pod_creds);
            }
            Ok(None) if policy == PullPolicy::Never => {
                return Err((
                    "ErrImageNeverPull",
                    AgentError::ImageNeverPull { image }.to_string(),
                ));
            }
            Ok(None) => {}
            Err(e) => return Err(("ErrImagePull", e.to_string())),
        }
    }
    if state.backoff.remaining(now).is_some() {
        if let Some((at, msg)) = &state.error
            && now.duration_since(*at) < ERR_IMAGE_PULL_SHOWN
        {
            return Err(("ErrImagePull", msg.clone()));
        }
        return Err((
            "ImagePullBackOff",
            format!("Back-off pulling image {image:?}"),
        ));
    }
    let creds = match creds {
        Some(c) => c,
        None => pod_credentials(node, pod, &image).await,
    };
    // With credentials, each is tried in turn (no anonymous fallback), as the kubelet does.
    let attempts: Vec<Option<v1::AuthConfig>> = if creds.is_empty() {
        vec![None]
    } else {
        creds.into_iter().map(Some).collect()
    };
    emit(
        EventType::Normal,
        "Pulling",
        format!("Pulling image {image:?}"),
    );
    let started = std::time::Instant::now();
    let mut errors = Vec::new();
    for auth in attempts {
        match cri
            .pull_image(&image, Some(sandbox_config.clone()), auth.clone())
            .await
        {
            Ok(image_ref) => {
                records.record(&image_ref, auth.as_ref());
                state.error = None;
                let took = started.elapsed();
                emit(
                    EventType::Normal,
                    "Pulled",
                    format!(
                        "Successfully pulled image {image:?} in {took:.3?} ({took:.3?} including waiting)"
                    ),
                );
                return Ok(image_ref);
            }
            Err(e) => errors.push(e.to_string()),
        }
    }
    let message = errors.join("; ");
    state.backoff.next(now);
    state.error = Some((now, message.clone()));
    emit(
        EventType::Warning,
        "Failed",
        format!("Failed to pull image {image:?}: {message}"),
    );
    emit(
        EventType::Warning,
        "Failed",
        "Error: ErrImagePull".to_owned(),
    );
    Err(("ErrImagePull", message))
}
