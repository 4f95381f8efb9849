//! Rows as both databases return them, and their conversion to the store's types.

use super::{DeadLetter, IngestTarget, Integration, LastError, RegionHealth, StoreError, WorkspaceLease};
use crate::segment::Region;
use crate::selection::EventSelection;

/// The columns `Workspace` reads.
pub(super) const WORKSPACE_COLUMNS: &str = "id, name, ingest_key, created_at, allowed_origins";

#[derive(sqlx::FromRow)]
pub(super) struct IntegrationRow {
    workspace_id: String,
    sealed_write_key: String,
    write_key_hint: String,
    region: String,
    enabled: bool,
    forwarded_events: Option<String>,
    omitted_properties: Option<String>,
    consecutive_failures: i32,
    next_attempt_at: i64,
    last_delivery_at: Option<i64>,
    last_error_at: Option<i64>,
    last_error_status: Option<i32>,
    last_error_message: Option<String>,
}

/// The columns `IntegrationRow` reads, for `SELECT` and `RETURNING`.
pub(super) const INTEGRATION_COLUMNS: &str = "workspace_id, sealed_write_key, write_key_hint, region, enabled, \
     forwarded_events, omitted_properties, consecutive_failures, next_attempt_at, last_delivery_at, last_error_at, last_error_status, last_error_message";

impl TryFrom<IntegrationRow> for Integration {
    type Error = StoreError;
    fn try_from(row: IntegrationRow) -> Result<Integration, StoreError> {
        let last_error = match (row.last_error_at, row.last_error_message) {
            (Some(at), Some(message)) => Some(LastError { at, status: status(row.last_error_status), message }),
            _ => None,
        };
        Ok(Integration {
            region: region(&row.region)?,
            workspace_id: row.workspace_id,
            sealed_write_key: row.sealed_write_key,
            write_key_hint: row.write_key_hint,
            enabled: row.enabled,
            selection: selection(row.forwarded_events, row.omitted_properties)?,
            consecutive_failures: u32::try_from(row.consecutive_failures).unwrap_or(0),
            next_attempt_at: row.next_attempt_at,
            last_delivery_at: row.last_delivery_at,
            last_error,
        })
    }
}

#[derive(sqlx::FromRow)]
pub(super) struct LeaseRow {
    workspace_id: String,
    lease_id: String,
    sealed_write_key: String,
    region: String,
    consecutive_failures: i32,
}

impl TryFrom<LeaseRow> for WorkspaceLease {
    type Error = StoreError;
    fn try_from(row: LeaseRow) -> Result<WorkspaceLease, StoreError> {
        Ok(WorkspaceLease {
            region: region(&row.region)?,
            workspace_id: row.workspace_id,
            lease_id: row.lease_id,
            sealed_write_key: row.sealed_write_key,
            consecutive_failures: u32::try_from(row.consecutive_failures).unwrap_or(0),
        })
    }
}

#[derive(sqlx::FromRow)]
pub(super) struct RegionRow {
    region: String,
    failures: i32,
    down_since: Option<i64>,
    next_probe_at: i64,
}

/// The condition that an integration's Segment region is not down (the
/// same SQL on both backends).
pub(super) const REGION_UP: &str = "region NOT IN (SELECT region FROM segment_regions WHERE down_since IS NOT NULL)";

/// The columns `RegionRow` reads, for `SELECT` and `RETURNING`.
pub(super) const REGION_COLUMNS: &str = "region, failures, down_since, next_probe_at";

impl TryFrom<RegionRow> for RegionHealth {
    type Error = StoreError;
    fn try_from(row: RegionRow) -> Result<RegionHealth, StoreError> {
        Ok(RegionHealth {
            region: region(&row.region)?,
            failures: u32::try_from(row.failures).unwrap_or(0),
            down_since: row.down_since,
            next_probe_at: row.next_probe_at,
        })
    }
}

#[derive(sqlx::FromRow)]
pub(super) struct DeadLetterRow {
    message_id: String,
    user_id: Option<String>,
    anonymous_id: Option<String>,
    payload: String,
    reason: String,
    status: Option<i32>,
    detail: String,
    received_at: i64,
    failed_at: i64,
}

pub(super) const DEAD_LETTER_COLUMNS: &str =
    "message_id, user_id, anonymous_id, payload, reason, status, detail, received_at, failed_at";

impl From<DeadLetterRow> for DeadLetter {
    fn from(row: DeadLetterRow) -> DeadLetter {
        DeadLetter {
            message_id: row.message_id,
            user_id: row.user_id,
            anonymous_id: row.anonymous_id,
            payload: row.payload,
            reason: row.reason,
            status: status(row.status),
            detail: row.detail,
            received_at: row.received_at,
            failed_at: row.failed_at,
        }
    }
}

/// Converts each row, failing on the first that does not convert.
pub(super) fn convert<R, T: TryFrom<R, Error = StoreError>>(rows: Vec<R>) -> Result<Vec<T>, StoreError> {
    rows.into_iter().map(T::try_from).collect()
}

/// The ingest target of a key: the workspace and what its integration forwards.
#[derive(sqlx::FromRow)]
pub(super) struct IngestTargetRow {
    workspace_id: String,
    segment_enabled: bool,
    allowed_origins: Option<String>,
    forwarded_events: Option<String>,
    omitted_properties: Option<String>,
}

impl TryFrom<IngestTargetRow> for IngestTarget {
    type Error = StoreError;
    fn try_from(row: IngestTargetRow) -> Result<IngestTarget, StoreError> {
        Ok(IngestTarget {
            workspace_id: row.workspace_id,
            segment_enabled: row.segment_enabled,
            allowed_origins: row.allowed_origins,
            selection: selection(row.forwarded_events, row.omitted_properties)?,
        })
    }
}

/// A list as stored: a JSON array, or NULL.
pub(super) fn stored_list(list: &Option<Vec<String>>) -> Option<String> {
    list.as_ref().map(|items| serde_json::to_string(items).expect("strings always serialize"))
}

fn selection(events: Option<String>, omitted: Option<String>) -> Result<EventSelection, StoreError> {
    let list = |stored: Option<String>| {
        stored
            .map(|text| serde_json::from_str(&text))
            .transpose()
            .map_err(|e| StoreError::Corrupt(format!("a stored event selection is not a JSON list: {e}")))
    };
    Ok(EventSelection { events: list(events)?, omit_properties: list(omitted)? })
}

fn region(text: &str) -> Result<Region, StoreError> {
    text.parse().map_err(|()| StoreError::Corrupt(format!("unknown region {text:?}")))
}

fn status(stored: Option<i32>) -> Option<u16> {
    stored.and_then(|s| u16::try_from(s).ok())
}
