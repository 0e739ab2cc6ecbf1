//! Folders: making sure a secret path exists before writing into it.

use serde::Deserialize;
use tokio::time::Instant;

use super::error::Error;
use super::{request, Client};

#[derive(Deserialize)]
struct Folder {
    name: String,
}

#[derive(Deserialize)]
struct FolderList {
    folders: Vec<Folder>,
}

impl Client {
    /// Names of the folders directly under `path`.
    pub async fn list_folders(
        &self,
        project_id: &str,
        environment: &str,
        path: &str,
        deadline: Instant,
    ) -> Result<Vec<String>, Error> {
        let action = format!("listing folders under {path} in environment {environment}");
        let json = self
            .execute(
                &action,
                &request::list_folders(project_id, environment, path),
                deadline,
                &[],
            )
            .await?;
        let list: FolderList =
            serde_json::from_value(json).map_err(|e| Error::Decode { action, source: e })?;
        Ok(list.folders.into_iter().map(|f| f.name).collect())
    }

    /// Creates every missing folder of `path`, outermost first.
    ///
    /// Recent Infisical servers answer an existing folder with that folder, older ones with a
    /// 400; both count as "exists". Missing segments are created one by one rather than relying
    /// on servers that create parents themselves.
    pub async fn ensure_folder(
        &self,
        project_id: &str,
        environment: &str,
        path: &str,
        deadline: Instant,
    ) -> Result<(), Error> {
        for (parent, name) in request::folder_segments(path) {
            let existing = self
                .list_folders(project_id, environment, &parent, deadline)
                .await?;
            if existing.iter().any(|n| n == &name) {
                continue;
            }
            let action =
                format!("creating folder {name} under {parent} in environment {environment}");
            let req = request::create_folder(project_id, environment, &parent, &name);
            match self.execute(&action, &req, deadline, &[]).await {
                Ok(_) => tracing::info!(%parent, %name, "created Infisical folder"),
                // Created concurrently by someone else between the listing and now.
                Err(Error::Rejected { status: 400, .. }) | Err(Error::AlreadyExists { .. }) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }
}
