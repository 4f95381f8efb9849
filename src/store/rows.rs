//! The store's types as rows: the columns each reads, in order, and how.

use super::{
    DeadLetter, IngestTarget, Integration, IntegrationConfig, LastError, QueuedEvent, RegionHealth, Workspace,
    WorkspaceLease,
};
use crate::domain::selection::EventSelection;
use crate::domain::{AllowedOrigins, IpPolicy, Region, WorkspaceId};
use crate::store::db::{DbError, FromRow, Row};

/// The columns `Workspace` reads.
pub const WORKSPACE_COLUMNS: &str = "id, name, ingest_key, created_at, allowed_origins";

impl FromRow for Workspace {
    fn from_row(row: &dyn Row) -> Result<Self, DbError> {
        Ok(Workspace {
            id: WorkspaceId::stored(row.text(0)?),
            name: row.text(1)?,
            ingest_key: row.text(2)?,
            created_at: row.int(3)?,
            allowed_origins: origins(row.opt_text(4)?),
        })
    }
}

/// The columns `Integration` reads, for `SELECT` and `RETURNING`.
pub const INTEGRATION_COLUMNS: &str = "workspace_id, sealed_write_key, write_key_hint, region, enabled, \
     forwarded_events, omitted_properties, consecutive_failures, next_attempt_at, last_delivery_at, last_error_at, \
     last_error_status, last_error_message, ip";

impl FromRow for Integration {
    fn from_row(row: &dyn Row) -> Result<Self, DbError> {
        let last_error = match (row.opt_int(10)?, row.opt_text(12)?) {
            (Some(at), Some(message)) => Some(LastError { at, status: status(row.opt_int(11)?), message }),
            _ => None,
        };
        let config = IntegrationConfig {
            sealed_write_key: row.text(1)?,
            write_key_hint: row.text(2)?,
            region: region(&row.text(3)?)?,
            enabled: row.bool(4)?,
            selection: selection(row.opt_text(5)?, row.opt_text(6)?)?,
            ip: ip_policy(&row.text(13)?)?,
        };
        Ok(Integration {
            workspace_id: WorkspaceId::stored(row.text(0)?),
            config,
            consecutive_failures: count(row.int(7)?),
            next_attempt_at: row.int(8)?,
            last_delivery_at: row.opt_int(9)?,
            last_error,
        })
    }
}

/// The columns `WorkspaceLease` reads, from `RETURNING`.
pub const LEASE_COLUMNS: &str = "workspace_id, lease_id, sealed_write_key, region, consecutive_failures";

impl FromRow for WorkspaceLease {
    fn from_row(row: &dyn Row) -> Result<Self, DbError> {
        Ok(WorkspaceLease {
            workspace_id: WorkspaceId::stored(row.text(0)?),
            lease_id: row.text(1)?,
            sealed_write_key: row.text(2)?,
            region: region(&row.text(3)?)?,
            consecutive_failures: count(row.int(4)?),
        })
    }
}

/// The columns `RegionHealth` reads, for `SELECT` and `RETURNING`.
pub const REGION_COLUMNS: &str = "region, failures, down_since, next_probe_at";

impl FromRow for RegionHealth {
    fn from_row(row: &dyn Row) -> Result<Self, DbError> {
        Ok(RegionHealth {
            region: region(&row.text(0)?)?,
            failures: count(row.int(1)?),
            down_since: row.opt_int(2)?,
            next_probe_at: row.int(3)?,
        })
    }
}

pub const DEAD_LETTER_COLUMNS: &str =
    "message_id, user_id, anonymous_id, payload, reason, status, detail, received_at, failed_at";

impl FromRow for DeadLetter {
    fn from_row(row: &dyn Row) -> Result<Self, DbError> {
        Ok(DeadLetter {
            message_id: row.text(0)?,
            user_id: row.opt_text(1)?,
            anonymous_id: row.opt_text(2)?,
            payload: row.text(3)?,
            reason: row.text(4)?.parse().map_err(|()| DbError::Corrupt("an unknown dead-letter reason".into()))?,
            status: status(row.opt_int(5)?),
            detail: row.text(6)?,
            received_at: row.int(7)?,
            failed_at: row.int(8)?,
        })
    }
}

/// The columns of an ingest target: the workspace, and what its integration forwards.
pub const INGEST_TARGET_COLUMNS: &str = "w.id, COALESCE(i.enabled, FALSE), w.allowed_origins, \
     i.forwarded_events, i.omitted_properties, COALESCE(i.ip, 'full')";

impl FromRow for IngestTarget {
    fn from_row(row: &dyn Row) -> Result<Self, DbError> {
        Ok(IngestTarget {
            workspace_id: WorkspaceId::stored(row.text(0)?),
            segment_enabled: row.bool(1)?,
            allowed_origins: origins(row.opt_text(2)?),
            selection: selection(row.opt_text(3)?, row.opt_text(4)?)?,
            ip: ip_policy(&row.text(5)?)?,
        })
    }
}

/// The columns of a queued event read for delivery (`e`: events, `i`: identities).
pub const QUEUED_EVENT_COLUMNS: &str =
    "e.id, e.message_id, COALESCE(e.user_id, i.user_id), e.anonymous_id, e.payload, e.received_at";

impl FromRow for QueuedEvent {
    fn from_row(row: &dyn Row) -> Result<Self, DbError> {
        Ok(QueuedEvent {
            id: row.int(0)?,
            message_id: row.text(1)?,
            user_id: row.opt_text(2)?,
            anonymous_id: row.opt_text(3)?,
            payload: row.text(4)?,
            received_at: row.int(5)?,
        })
    }
}

/// A list as stored: a JSON array, or NULL.
pub fn stored_list(list: &Option<Vec<String>>) -> Option<String> {
    list.as_ref().map(|items| serde_json::to_string(items).expect("strings always serialize"))
}

fn selection(events: Option<String>, omitted: Option<String>) -> Result<EventSelection, DbError> {
    let list = |stored: Option<String>| {
        stored
            .map(|text| serde_json::from_str(&text))
            .transpose()
            .map_err(|e| DbError::Corrupt(format!("a stored event selection is not a JSON list: {e}")))
    };
    Ok(EventSelection { events: list(events)?, omit_properties: list(omitted)? })
}

impl FromRow for WorkspaceId {
    fn from_row(row: &dyn Row) -> Result<Self, DbError> {
        Ok(WorkspaceId::stored(row.text(0)?))
    }
}

fn origins(stored: Option<String>) -> Option<AllowedOrigins> {
    stored.as_deref().map(AllowedOrigins::from_stored)
}

fn region(text: &str) -> Result<Region, DbError> {
    text.parse().map_err(|()| DbError::Corrupt(format!("unknown region {text:?}")))
}

fn ip_policy(text: &str) -> Result<IpPolicy, DbError> {
    text.parse().map_err(|()| DbError::Corrupt(format!("unknown IP policy {text:?}")))
}

fn status(stored: Option<i64>) -> Option<u16> {
    stored.and_then(|s| u16::try_from(s).ok())
}

fn count(stored: i64) -> u32 {
    u32::try_from(stored).unwrap_or(0)
}
