//! `produktly-segment reseal`: re-seals every stored write key with the
//! current sealing key, the step that completes a rotation of it.

use crate::secrets::Sealer;
use crate::store::{Store, StoreError};

/// What a reseal did.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Resealed {
    pub resealed: usize,
    pub current: usize,
    /// Workspaces whose key no configured sealing key opens.
    pub failed: Vec<String>,
}

pub async fn reseal_write_keys(store: &Store, sealer: &Sealer) -> Result<Resealed, StoreError> {
    let mut report = Resealed::default();
    for (workspace_id, sealed) in store.sealed_write_keys().await? {
        if !sealer.is_stale(&sealed) {
            report.current += 1;
            continue;
        }
        match sealer.unseal(&workspace_id, &sealed) {
            Ok(key) => {
                // Compare-and-set: a key pasted meanwhile is already current.
                let new = sealer.seal(&workspace_id, &key);
                if store.replace_sealed_write_key(&workspace_id, &sealed, &new).await? {
                    report.resealed += 1;
                } else {
                    report.current += 1;
                }
            }
            Err(e) => {
                tracing::error!(workspace = %workspace_id, error = %e, "cannot open this write key to reseal it");
                report.failed.push(workspace_id);
            }
        }
    }
    Ok(report)
}
