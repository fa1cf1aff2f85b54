//! The APIService availability controller: a local APIService is always Available; one that
//! names a Service is Available once the Service, a ready endpoint of its port and a 200 to
//! `GET /apis/<group>/<version>` through the aggregator say so, with the kube-aggregator's
//! reasons otherwise (ServiceNotFound, ServicePortError, MissingEndpoints,
//! FailedDiscoveryCheck). Discovery lists only available aggregated groups. A Local APIService
//! deleted by hand is made again.

use std::time::Duration;

use serde_json::{Value, json};

use super::{condition, write_status};
use crate::api::kinds::apiservice::local_api_services;
use crate::api::{ApiError, Objects, aggregator, resources};

/// A discovery check that takes longer fails: the controllers' loop waits for it.
const CHECK_TIMEOUT: Duration = Duration::from_secs(3);

/// One pass over every APIService. A Local one that was deleted is made again, as the
/// kube-apiserver's autoregistration does: the server still serves its group-version.
pub async fn reconcile(objects: &Objects) -> Result<(), ApiError> {
    let (mut services, _) = objects.list(resources::api_services(), None)?;
    for local in local_api_services() {
        if !services
            .iter()
            .any(|s| s["metadata"]["name"] == local["metadata"]["name"])
        {
            match objects
                .create(resources::api_services(), None, local, false)
                .await
            {
                Ok(created) => services.push(created),
                Err(ApiError::AlreadyExists { .. }) => {}
                Err(e) => return Err(e),
            }
        }
    }
    for svc in services {
        let (ok, reason, message) = if svc.pointer("/spec/service").is_none_or(Value::is_null) {
            (
                true,
                "Local",
                "Local APIServices are always available".to_owned(),
            )
        } else {
            match tokio::time::timeout(CHECK_TIMEOUT, aggregator::check(objects, &svc)).await {
                Ok(Ok(())) => (true, "Passed", "all checks passed".to_owned()),
                Ok(Err((reason, message))) => (false, reason, message),
                Err(_) => (
                    false,
                    "FailedDiscoveryCheck",
                    format!("no answer to the discovery check within {CHECK_TIMEOUT:?}"),
                ),
            }
        };
        let cond = condition(&svc, "Available", ok, reason, &message, false);
        write_status(
            objects,
            resources::api_services(),
            &svc,
            json!({"conditions": [cond]}),
        )
        .await?;
    }
    Ok(())
}
