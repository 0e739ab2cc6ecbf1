//! Change policies: an environment whose writes become change requests instead of changes.
//!
//! Facts (Infisical/infisical backend):
//! - `server/routes/v3/secret-router.ts` and `routes/v4/secret-router.ts`: a create, update or
//!   delete answers 200 with `{secret}`, or with `{approval}` (a `SecretApprovalRequestsSchema`
//!   row: `id`, `policyId`, `hasMerged`, `status` "open", `slug`, `folderId`, ...) when the
//!   environment's change policy applies: nothing is written until someone merges the request.
//! - `ee/services/secret-approval-policy/secret-approval-policy-fns.ts` `shouldApplyPolicy`: a
//!   policy applies to a machine identity unless the policy's `bypassForMachineIdentities` is on
//!   (the migration that added it defaults it to true for every policy). Before that change
//!   (`services/secret/secret-service.ts`, `actor === ActorType.USER`) machine identities
//!   always bypassed policies.
//! - Each write queues its own request: a second identical write queues a second request.

use serde::Serialize;
use serde_json::{json, Value as Json};

use super::{new_id, now_rfc3339, Failure, Lab, Target};

/// A write held back by a change policy.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "op", rename_all = "lowercase")]
pub enum Write {
    /// A new secret.
    Create {
        /// Where.
        #[serde(skip)]
        target: Target,
        /// Name.
        key: String,
        /// Value as sent.
        #[serde(skip)]
        value: String,
        /// Comment.
        comment: String,
        /// Newlines sent as is.
        #[serde(skip)]
        skip_multiline_encoding: bool,
    },
    /// A changed value or comment.
    Update {
        /// Where.
        #[serde(skip)]
        target: Target,
        /// Name.
        key: String,
        /// New value, if any.
        #[serde(skip)]
        value: Option<String>,
        /// New comment, if any.
        comment: Option<String>,
    },
    /// A deletion.
    Delete {
        /// Where.
        #[serde(skip)]
        target: Target,
        /// Name.
        key: String,
    },
}

impl Write {
    fn target(&self) -> &Target {
        match self {
            Write::Create { target, .. }
            | Write::Update { target, .. }
            | Write::Delete { target, .. } => target,
        }
    }

    fn key(&self) -> &str {
        match self {
            Write::Create { key, .. } | Write::Update { key, .. } | Write::Delete { key, .. } => {
                key
            }
        }
    }
}

/// One change request, as the lab keeps it.
#[derive(Debug, Clone, Serialize)]
pub struct ChangeRequest {
    /// Request id.
    pub id: String,
    /// Short name shown in Infisical's UI.
    pub slug: String,
    /// `open` or `closed`.
    pub status: String,
    /// Whether it was merged (applied).
    pub merged: bool,
    /// Environment slug.
    pub environment: String,
    /// Folder path.
    pub path: String,
    /// The held-back write.
    pub write: Write,
}

fn slug() -> String {
    let id = new_id().replace('-', "");
    id[..12].to_string()
}

impl Lab {
    /// Lab control: puts a change policy on `environment`. With `bypass_for_machine_identities`
    /// off, the lab identity's writes there become change requests.
    pub fn set_change_policy(&self, environment: &str, bypass_for_machine_identities: bool) {
        self.lock()
            .policies
            .insert(environment.to_string(), bypass_for_machine_identities);
    }

    /// Lab control: removes the change policy of `environment`.
    pub fn clear_change_policy(&self, environment: &str) {
        self.lock().policies.remove(environment);
    }

    /// Lab control: every change request so far.
    pub fn change_requests(&self) -> Vec<ChangeRequest> {
        self.lock().requests_queued.clone()
    }

    /// If a change policy applies to the lab identity in the write's environment, queues the
    /// write as a change request and answers `{approval}`; otherwise `None` (write directly).
    /// The checks a direct write would make (folder exists, name taken or not) come first.
    pub fn hold_back(&self, write: Write) -> Result<Option<Json>, Failure> {
        let mut inner = self.lock();
        let target = write.target().clone();
        match inner.policies.get(&target.environment) {
            Some(false) => {}
            _ => return Ok(None),
        }
        Self::require_folder(&inner, &target)?;
        let exists = Self::find(&inner, &target, write.key()).is_some();
        match &write {
            Write::Create { .. } if exists => {
                return Err(Failure::new(400, "BadRequest", "Secret already exist"));
            }
            Write::Update { key, .. } | Write::Delete { key, .. } if !exists => {
                return Err(Self::not_found(key))
            }
            _ => {}
        }
        let request = ChangeRequest {
            id: new_id(),
            slug: slug(),
            status: "open".into(),
            merged: false,
            environment: target.environment.clone(),
            path: target.path.clone(),
            write,
        };
        let now = now_rfc3339();
        let answer = json!({ "approval": {
            "id": request.id,
            "policyId": format!("policy-{}", request.environment),
            "hasMerged": false,
            "status": "open",
            "conflicts": [],
            "slug": request.slug,
            "folderId": format!("folder-{}", request.path),
            "bypassReason": null,
            "createdAt": now,
            "updatedAt": now,
            "isReplicated": false,
            "committerUserId": null,
            "committerIdentityId": self.settings.identity.client_id,
            "statusChangedByUserId": null,
        }});
        inner.requests_queued.push(request);
        inner.event("change-requested");
        Ok(Some(answer))
    }

    /// Lab control: merges change request `id` (as an approver would in Infisical's UI),
    /// applying its write.
    pub fn merge_change_request(&self, id: &str) -> Result<Json, Failure> {
        let write = {
            let mut inner = self.lock();
            let Some(request) = inner
                .requests_queued
                .iter_mut()
                .find(|r| r.id == id && r.status == "open")
            else {
                return Err(Failure::new(
                    404,
                    "NotFound",
                    format!("Secret approval request with ID '{id}' not found"),
                ));
            };
            request.status = "closed".into();
            request.merged = true;
            request.write.clone()
        };
        match write {
            Write::Create {
                target,
                key,
                value,
                comment,
                skip_multiline_encoding,
            } => self.create_secret(&target, &key, &value, &comment, skip_multiline_encoding),
            Write::Update {
                target,
                key,
                value,
                comment,
            } => self.update_secret(
                &target,
                &key,
                value.as_deref(),
                comment.as_deref(),
                None,
                None,
            ),
            Write::Delete { target, key } => self.delete_secret(&target, &key),
        }
    }
}
