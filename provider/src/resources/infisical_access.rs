//! What every resource that writes to Infisical shares: getting the provider's client, the
//! plan-time credential check, and the warning for a write Infisical queued as a change
//! request.

use std::sync::Arc;
use std::time::Duration;

use tf_provider::Diagnostics;

use crate::infisical::{self, Credentials, SecretRef};
use crate::provider::{ProviderData, Unavailable};
use crate::resources::diag::unable;

/// How long the plan-time credential check may take before the endpoint counts as not
/// answering.
const CREDENTIALS_CHECK_BUDGET: Duration = Duration::from_secs(5);

/// The provider's Infisical client, or an error saying what to configure.
pub fn client(
    data: &ProviderData,
    diags: &mut Diagnostics,
    action: &str,
) -> Option<Arc<infisical::Client>> {
    match data.infisical() {
        Ok(client) => Some(client),
        Err(why) => {
            unable(diags, action, why);
            None
        }
    }
}

/// Whether the provider's Infisical settings come from resources not created yet (reads then
/// keep what state has).
pub fn not_yet_known(data: &ProviderData) -> bool {
    matches!(data.infisical(), Err(Unavailable::NotYetKnown))
}

/// Plan-time check of the provider's Infisical credentials (once per provider process):
/// refused credentials are an error naming the setting, an endpoint that does not answer a
/// warning (apply would fail, but a plan made offline is still useful). Skipped while the
/// settings are not known yet.
pub async fn check_credentials(data: &ProviderData, diags: &mut Diagnostics) {
    let Ok(client) = data.infisical() else {
        return;
    };
    match client.check_credentials(CREDENTIALS_CHECK_BUDGET).await {
        Ok(()) => {}
        Err(Credentials::Refused(detail)) => diags.root_error(
            "Invalid Infisical credentials",
            format!(
                "Infisical at {host} refused the provider's machine identity: check \
                 client_id and client_secret in the provider's infisical block (or \
                 INFISICAL_UNIVERSAL_AUTH_CLIENT_ID / INFISICAL_UNIVERSAL_AUTH_CLIENT_SECRET). \
                 Infisical locks the identity out after 3 failed logins in a row. {detail}",
                host = client.host(),
            ),
        ),
        Err(Credentials::Unreachable(detail)) => data.warn_once(
            diags,
            "Infisical did not answer",
            format!(
                "Could not reach Infisical at {host} (the provider's infisical.host, or \
                 INFISICAL_HOST) to check the credentials; apply will fail unless it \
                 answers by then. {detail}",
                host = client.host(),
            ),
        ),
        Err(Credentials::Untrusted(detail)) => {
            diags.root_error("Infisical's TLS certificate is not trusted", detail)
        }
        Err(Credentials::Other(detail)) => {
            data.warn_once(diags, "Could not check the Infisical credentials", detail)
        }
    }
}

/// The warning for a creation Infisical queued as change request `slug` (id `id`) because
/// `environment` has a change policy for machine identities.
pub fn warn_creation_queued(
    diags: &mut Diagnostics,
    at: &SecretRef,
    slug: &str,
    id: &str,
    environment: &str,
) {
    diags.root_warning(
        format!("Secret {} waits for approval in Infisical", at.key),
        format!(
            "Infisical did not create secret {key} but queued it as change request {slug:?} \
             (id {id}), because environment {environment:?} has a change policy that \
             applies to machine identities. Approve and merge that request in Infisical; \
             castle remembers it, queues no second one, and shows the secret's version once \
             it is merged. If the request is rejected, change the value or comment to \
             queue a new one.",
            key = at.key,
        ),
    );
}
