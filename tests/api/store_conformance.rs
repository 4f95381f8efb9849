//! One conformance suite for the `Store` trait, run against both backends.

use std::sync::Arc;
use std::time::Duration;

use produktly_segment::delivery::segment::Region;
use produktly_segment::domain::selection::EventSelection;
use produktly_segment::domain::{DeadLetterReason, WorkspaceId};
use produktly_segment::store::{
    self, IdentityLink, IntegrationConfig, LastError, NewEvent, Rejection, RoundEnd, Store, Workspace, WorkspaceLease,
};

use crate::common::{Backend, Env};

const NOW: i64 = 1_800_000_000_000;
const LEASE: i64 = 60_000;

async fn open(backend: Backend) -> Option<(Env, Arc<Store>)> {
    let env = Env::new(backend).await?;
    let store = store::connect(&env.settings(|f| f)).await.expect("the store opens");
    Some((env, store))
}

fn ws(id: &str) -> WorkspaceId {
    WorkspaceId::stored(id.into())
}

fn workspace(id: &str) -> Workspace {
    Workspace {
        id: ws(id),
        name: format!("{id} name"),
        ingest_key: format!("pk_{id}"),
        created_at: NOW,
        allowed_origins: None,
    }
}

fn config(enabled: bool) -> IntegrationConfig {
    IntegrationConfig {
        sealed_write_key: "sealed".into(),
        write_key_hint: "…abcd".into(),
        region: Region::Us,
        enabled,
        selection: EventSelection::default(),
        ip: Default::default(),
    }
}

fn event(workspace: &str, n: u32, user: Option<&str>, anonymous: Option<&str>) -> NewEvent {
    NewEvent {
        workspace_id: ws(workspace),
        message_id: format!("m{n}"),
        user_id: user.map(Into::into),
        anonymous_id: anonymous.map(Into::into),
        payload: format!("{{\"type\":\"track\",\"n\":{n}}}"),
        received_at: NOW + i64::from(n),
    }
}

/// A workspace with an enabled integration and `count` queued events.
/// "Anonymous id `anonymous` of workspace `w` is `user`", as of `at`.
fn link(anonymous: &str, user: &str, at: i64) -> IdentityLink {
    IdentityLink { workspace_id: ws("w"), anonymous_id: anonymous.into(), user_id: user.into(), at }
}

async fn seeded(store: &Store, id: &str, count: u32) {
    assert!(store.insert_workspace(&workspace(id)).await.unwrap());
    store.put_integration(id, &config(true), NOW).await.unwrap();
    let events: Vec<_> = (0..count).map(|n| event(id, n, Some("u"), None)).collect();
    store.enqueue(events.to_vec(), vec![]).await.unwrap();
}

/// Leases among the workspaces the store says have events.
async fn lease_with_events(
    store: &Store,
    now: i64,
    until: i64,
    limit: usize,
) -> Result<Vec<WorkspaceLease>, store::StoreError> {
    let candidates = store.workspaces_with_events().await?;
    store.lease_workspaces(&candidates, now, until, limit).await
}

async fn lease_one(store: &Store, now: i64) -> WorkspaceLease {
    let mut leases = lease_with_events(store, now, now + LEASE, 1).await.unwrap();
    assert_eq!(leases.len(), 1);
    leases.remove(0)
}

async fn workspaces_and_ingest_targets(backend: Backend) {
    let Some((_env, store)) = open(backend).await else {
        return;
    };
    store.check_ready().await.unwrap();
    assert!(store.insert_workspace(&workspace("a")).await.unwrap());
    assert!(!store.insert_workspace(&workspace("a")).await.unwrap(), "the id is taken");
    assert_eq!(store.workspace("a").await.unwrap(), Some(workspace("a")));
    assert_eq!(store.workspace("b").await.unwrap(), None);

    let renamed = Workspace { name: "renamed".into(), ingest_key: "pk_other".into(), ..workspace("a") };
    let (stored, created) = store.upsert_workspace(&renamed).await.unwrap();
    assert!(!created);
    assert_eq!((stored.name.as_str(), stored.ingest_key.as_str()), ("renamed", "pk_a"));
    let (stored, created) = store.upsert_workspace(&workspace("b")).await.unwrap();
    assert!(created);
    assert_eq!(stored, workspace("b"));

    let target = store.ingest_target("pk_a").await.unwrap().unwrap();
    assert_eq!((target.workspace_id.as_str(), target.segment_enabled), ("a", false));
    store.put_integration("a", &config(true), NOW).await.unwrap();
    assert!(store.ingest_target("pk_a").await.unwrap().unwrap().segment_enabled);
    store.put_integration("a", &config(false), NOW).await.unwrap();
    assert!(!store.ingest_target("pk_a").await.unwrap().unwrap().segment_enabled);
    // The event selection is stored with the integration and read with the key.
    let selection =
        EventSelection { events: Some(vec!["tour_start".into()]), omit_properties: Some(vec!["feedback".into()]) };
    let chosen = IntegrationConfig { selection: selection.clone(), ..config(true) };
    assert_eq!(store.put_integration("a", &chosen, NOW).await.unwrap().config.selection, selection);
    assert_eq!(store.ingest_target("pk_a").await.unwrap().unwrap().selection, selection);
    assert_eq!(store.integration("a").await.unwrap().unwrap().config.selection, selection);

    let rotated = store.rotate_ingest_key("a", "pk_new").await.unwrap().unwrap();
    assert_eq!(rotated.ingest_key, "pk_new");
    assert_eq!(store.ingest_target("pk_a").await.unwrap(), None);
    assert!(store.rotate_ingest_key("nobody", "pk_x").await.unwrap().is_none());
}

async fn claims_resolve_user_ids_and_follow_arrival_order(backend: Backend) {
    let Some((_env, store)) = open(backend).await else {
        return;
    };
    seeded(store.as_ref(), "w", 0).await;
    // In one commit the latest link wins; across commits an older link does not overwrite.
    store.enqueue(vec![], vec![link("a1", "early", NOW), link("a1", "late", NOW + 5)]).await.unwrap();
    store.enqueue(vec![], vec![link("a1", "stale", NOW + 1)]).await.unwrap();
    let events =
        [event("w", 0, Some("own"), Some("a1")), event("w", 1, None, Some("a1")), event("w", 2, None, Some("unknown"))];
    store.enqueue(events.to_vec(), vec![]).await.unwrap();

    let lease = lease_one(store.as_ref(), NOW).await;
    let claimed = store.queued_events(&lease, 0, 10).await.unwrap();
    let ids: Vec<_> = claimed.iter().map(|e| e.message_id.as_str()).collect();
    assert_eq!(ids, ["m0", "m1", "m2"]);
    let users: Vec<_> = claimed.iter().map(|e| e.user_id.as_deref()).collect();
    assert_eq!(users, [Some("own"), Some("late"), None]);
    assert_eq!(claimed[1].payload, events[1].payload);
    assert_eq!(claimed[1].received_at, events[1].received_at);
}

/// An event whose messageId is queued in its workspace is acknowledged and
/// not stored again (a retry after a lost answer); another workspace's, or one
/// already delivered, is stored. A replayed dead letter that is queued again
/// meanwhile is queued once.
async fn a_queued_message_id_is_stored_once(backend: Backend) {
    let Some((_env, store)) = open(backend).await else {
        return;
    };
    seeded(store.as_ref(), "w", 0).await;
    assert!(store.insert_workspace(&workspace("v")).await.unwrap());
    let first = [event("w", 1, Some("u"), None), event("w", 2, Some("u"), None)];
    assert_eq!(store.enqueue(first.to_vec(), vec![]).await.unwrap(), 2);
    let retried = [event("w", 2, Some("u"), None), event("w", 3, Some("u"), None), event("w", 3, Some("u"), None)];
    assert_eq!(store.enqueue(retried.to_vec(), vec![]).await.unwrap(), 1, "only m3 is new, once");
    assert_eq!(store.enqueue(vec![event("v", 2, Some("u"), None)], vec![]).await.unwrap(), 1, "another workspace");
    assert_eq!(store.queue_counts("w").await.unwrap().queued, 3);

    let lease = lease_one(store.as_ref(), NOW).await;
    let queued = store.queued_events(&lease, 0, 10).await.unwrap();
    let ids: Vec<_> = queued.iter().map(|e| e.message_id.as_str()).collect();
    assert_eq!(ids, ["m1", "m2", "m3"]);
    let m1 = queued[0].id;
    let rejection = Rejection { reason: DeadLetterReason::Rejected, status: Some(400), detail: "bad".into() };
    assert_eq!(store.dead_letter(&lease, &[m1], &rejection, NOW).await.unwrap(), 1);
    assert_eq!(store.ack(&lease, &[queued[1].id]).await.unwrap(), 1);
    // m1 comes back from the browser while its dead letter waits; m2 was delivered.
    assert_eq!(
        store.enqueue(vec![event("w", 1, Some("u"), None), event("w", 2, Some("u"), None)], vec![]).await.unwrap(),
        2
    );
    assert_eq!(store.replay_dead_letters("w", NOW + 9).await.unwrap(), 0, "m1 is queued already");
    assert_eq!(store.queue_counts("w").await.unwrap(), store::QueueCounts { queued: 3, dead: 0 });
}

/// Acks and dead letters take effect only under the current
/// lease: a worker whose lease ran out cannot undo another's work.
async fn a_stale_lease_changes_nothing(backend: Backend) {
    let Some((_env, store)) = open(backend).await else {
        return;
    };
    seeded(store.as_ref(), "w", 3).await;
    let stale = lease_one(store.as_ref(), NOW).await;
    let first = store.queued_events(&stale, 0, 10).await.unwrap();
    assert_eq!(first.len(), 3);
    assert!(
        lease_with_events(store.as_ref(), NOW + 1, NOW + LEASE, 5).await.unwrap().is_empty(),
        "the workspace is leased"
    );

    // An extended lease keeps the workspace past its first end.
    assert!(store.extend_lease(&stale, NOW + 2 * LEASE).await.unwrap());
    assert!(lease_with_events(store.as_ref(), NOW + LEASE + 1, NOW + 3 * LEASE, 5).await.unwrap().is_empty());

    // The stale worker stalls past its lease; another takes the workspace over.
    let later = NOW + 2 * LEASE + 1;
    let fresh = lease_one(store.as_ref(), later).await;
    assert_ne!(fresh.lease_id, stale.lease_id);
    assert_eq!(store.queued_events(&fresh, 0, 10).await.unwrap(), first, "the new holder sees the same events");

    let ids: Vec<i64> = first.iter().map(|e| e.id).collect();
    assert_eq!(store.ack(&stale, &ids).await.unwrap(), 0);
    let rejection = Rejection { reason: DeadLetterReason::Rejected, status: Some(400), detail: "x".into() };
    assert_eq!(store.dead_letter(&stale, &[ids[0]], &rejection, later).await.unwrap(), 0);
    let delivered = RoundEnd::Delivered { delivered_at: Some(later), next_attempt_at: later };
    store.end_round(&stale, &delivered).await.unwrap();
    store.release_lease(&stale).await.unwrap();
    assert!(!store.extend_lease(&stale, later + 3 * LEASE).await.unwrap(), "a stale lease cannot be extended");
    assert_eq!(store.queue_depth().await.unwrap(), 3);
    assert_eq!(store.oldest_queued_at().await.unwrap(), Some(first[0].received_at));
    assert_eq!(store.integration("w").await.unwrap().unwrap().last_delivery_at, None);
    assert!(
        lease_with_events(store.as_ref(), later + 1, later + LEASE, 5).await.unwrap().is_empty(),
        "still leased by the new holder"
    );

    assert_eq!(store.ack(&fresh, &ids).await.unwrap(), 3);
    assert_eq!(store.queue_depth().await.unwrap(), 0);
    assert_eq!(store.oldest_queued_at().await.unwrap(), None);
}

/// Events stay queued until acked or dead-lettered: after a failed attempt
/// the next round reads them again, oldest first; a released lease frees the
/// workspace at once.
async fn failed_events_stay_queued_for_the_next_round(backend: Backend) {
    let Some((_env, store)) = open(backend).await else {
        return;
    };
    seeded(store.as_ref(), "w", 4).await;
    let lease = lease_one(store.as_ref(), NOW).await;
    let oldest = store.queued_events(&lease, 0, 2).await.unwrap();
    assert_eq!(oldest.iter().map(|e| e.message_id.as_str()).collect::<Vec<_>>(), ["m0", "m1"]);
    let ids: Vec<i64> = oldest.iter().map(|e| e.id).collect();
    store.release_lease(&lease).await.unwrap();

    let next = lease_one(store.as_ref(), NOW + 1).await;
    let again = store.queued_events(&next, 0, 10).await.unwrap();
    assert_eq!(again.iter().map(|e| e.message_id.as_str()).collect::<Vec<_>>(), ["m0", "m1", "m2", "m3"]);
    let after = store.queued_events(&next, ids[1], 10).await.unwrap();
    assert_eq!(after.iter().map(|e| e.message_id.as_str()).collect::<Vec<_>>(), ["m2", "m3"], "a read after an id");
    let rejection = Rejection { reason: DeadLetterReason::Rejected, status: None, detail: "x".into() };
    store.dead_letter(&next, &[ids[0]], &rejection, NOW).await.unwrap();
    assert_eq!(store.queue_depth().await.unwrap(), 3);
}

async fn dead_letters_are_kept_listed_and_replayed(backend: Backend) {
    let Some((_env, store)) = open(backend).await else {
        return;
    };
    seeded(store.as_ref(), "w", 3).await;
    let lease = lease_one(store.as_ref(), NOW).await;
    let claimed = store.queued_events(&lease, 0, 10).await.unwrap();
    let rejection = Rejection { reason: DeadLetterReason::Rejected, status: Some(400), detail: "bad".into() };
    assert_eq!(store.dead_letter(&lease, &[claimed[1].id], &rejection, NOW + 7).await.unwrap(), 1);
    let letters = store.dead_letters("w", 10).await.unwrap();
    assert_eq!(letters.len(), 1);
    let letter = &letters[0];
    assert_eq!((letter.message_id.as_str(), letter.reason.as_str(), letter.status), ("m1", "rejected", Some(400)));
    assert_eq!((letter.detail.as_str(), letter.failed_at, letter.user_id.as_deref()), ("bad", NOW + 7, Some("u")));
    assert_eq!(store.queue_counts("w").await.unwrap(), store::QueueCounts { queued: 2, dead: 1 });

    assert_eq!(store.replay_dead_letters("w", NOW + 9).await.unwrap(), 1);
    assert_eq!(store.queue_counts("w").await.unwrap(), store::QueueCounts { queued: 3, dead: 0 });
    let later = NOW + LEASE + 1;
    let lease = lease_one(store.as_ref(), later).await;
    let replayed = store.queued_events(&lease, 0, 10).await.unwrap();
    let m1 = replayed.iter().find(|e| e.message_id == "m1").unwrap();
    assert_eq!(m1.received_at, NOW + 9, "a replayed event has a fresh age");
}

/// Old events expire into dead letters, except while their workspace is
/// leased (a round may be sending them).
async fn old_events_expire_into_dead_letters(backend: Backend) {
    let Some((_env, store)) = open(backend).await else {
        return;
    };
    seeded(store.as_ref(), "w", 5).await;
    let lease = lease_one(store.as_ref(), NOW).await;
    // m0..m4 were received at NOW+0..4; cutoff NOW+3 makes m0..m2 old.
    assert_eq!(store.expire_events(NOW + 3, NOW + 10, 100).await.unwrap(), 0, "the workspace is leased");
    let delivered = RoundEnd::Delivered { delivered_at: None, next_attempt_at: NOW + 10 };
    store.end_round(&lease, &delivered).await.unwrap();
    assert_eq!(store.expire_events(NOW + 3, NOW + 10, 2).await.unwrap(), 2, "a limited sweep");
    assert_eq!(store.expire_events(NOW + 3, NOW + 10, 100).await.unwrap(), 1);
    let letters = store.dead_letters("w", 10).await.unwrap();
    let mut expired: Vec<_> = letters.iter().map(|l| l.message_id.as_str()).collect();
    expired.sort_unstable();
    assert_eq!(expired, ["m0", "m1", "m2"]);
    assert!(letters.iter().all(|l| l.reason == DeadLetterReason::Expired));
    assert_eq!(store.queue_depth().await.unwrap(), 2);
    assert_eq!(store.expire_events(NOW + 3, NOW + 10, 100).await.unwrap(), 0);
}

/// Only enabled, due workspaces with unleased events are leased, the
/// longest-waiting first; a failure backs the workspace off and is counted.
async fn workspaces_are_leased_when_due_longest_waiting_first(backend: Backend) {
    let Some((_env, store)) = open(backend).await else {
        return;
    };
    seeded(store.as_ref(), "busy", 2).await;
    seeded(store.as_ref(), "idle", 0).await;
    seeded(store.as_ref(), "off", 1).await;
    store.put_integration("off", &config(false), NOW).await.unwrap();
    seeded(store.as_ref(), "other", 1).await;
    let mut with_events = store.workspaces_with_events().await.unwrap();
    with_events.sort_unstable();
    assert_eq!(with_events, ["busy", "other"], "enabled workspaces with events");
    let only_other = store.lease_workspaces(&[ws("other")], NOW, NOW, 10).await.unwrap();
    assert_eq!(only_other.len(), 1, "only candidates are leased");
    assert_eq!(only_other[0].workspace_id, "other");
    store.release_lease(&only_other[0]).await.unwrap();

    let leases = lease_with_events(store.as_ref(), NOW, NOW + LEASE, 10).await.unwrap();
    let mut ids: Vec<_> = leases.iter().map(|l| l.workspace_id.as_str()).collect();
    ids.sort_unstable();
    assert_eq!(ids, ["busy", "other"]);
    let busy = leases.iter().find(|l| l.workspace_id == "busy").unwrap();
    let other = leases.iter().find(|l| l.workspace_id == "other").unwrap();
    assert_eq!((busy.sealed_write_key.as_str(), busy.region, busy.consecutive_failures), ("sealed", Region::Us, 0));

    let error = LastError { at: NOW, status: Some(500), message: "down".into() };
    let failed = RoundEnd::Failed { error: error.clone(), next_attempt_at: NOW + 1000, counts_as_failure: true };
    store.end_round(busy, &failed).await.unwrap();
    store.end_round(other, &RoundEnd::Delivered { delivered_at: None, next_attempt_at: NOW + 10 }).await.unwrap();
    assert!(
        lease_with_events(store.as_ref(), NOW + 5, NOW + LEASE, 10).await.unwrap().is_empty(),
        "neither is due yet"
    );
    let candidates = [ws("busy"), ws("other"), ws("off")];
    assert_eq!(store.next_due(&candidates, NOW + 5).await.unwrap(), Some(NOW + 10), "the earlier of the two");
    assert_eq!(store.next_due(&[ws("off")], NOW).await.unwrap(), None, "disabled ones are never due");
    let next = lease_with_events(store.as_ref(), NOW + 2000, NOW + LEASE, 1).await.unwrap();
    assert_eq!(next[0].workspace_id, "other", "the longest-waiting workspace comes first");
    let busy = lease_one(store.as_ref(), NOW + 2000).await;
    assert_eq!(busy.consecutive_failures, 1);

    let integration = store.integration("busy").await.unwrap().unwrap();
    assert_eq!((integration.consecutive_failures, integration.next_attempt_at), (1, NOW + 1000));
    assert_eq!(integration.last_error, Some(error));
    let rate_limited = RoundEnd::Failed {
        error: LastError { at: NOW, status: Some(429), message: "slow down".into() },
        next_attempt_at: NOW + 3000,
        counts_as_failure: false,
    };
    store.end_round(&busy, &rate_limited).await.unwrap();
    assert_eq!(store.integration("busy").await.unwrap().unwrap().consecutive_failures, 1, "429 is not a failure");
    store.put_integration("busy", &config(true), NOW + 2500).await.unwrap();
    let reset = store.integration("busy").await.unwrap().unwrap();
    assert_eq!(
        (reset.consecutive_failures, reset.next_attempt_at),
        (0, NOW + 2500),
        "a new configuration resumes at once"
    );
}

/// A region goes down at the threshold (the caller who reaches it sees
/// `failures == down_after`), its workspaces are no longer leased or due, one
/// probe at a time is claimed, and a success brings it up with every
/// workspace that failed due at once.
async fn a_region_goes_down_is_probed_and_comes_back(backend: Backend) {
    let Some((_env, store)) = open(backend).await else {
        return;
    };
    let store = store.as_ref();
    for id in ["first", "second"] {
        seeded(store, id, 1).await;
    }
    let candidates = [ws("first"), ws("second")];
    let first = store.lease_workspaces(&candidates[..1], NOW, NOW + LEASE, 1).await.unwrap().remove(0);
    let failed = RoundEnd::Failed {
        error: LastError { at: NOW, status: Some(500), message: "down".into() },
        next_attempt_at: NOW + 60_000,
        counts_as_failure: true,
    };
    store.end_round(&first, &failed).await.unwrap();
    for n in 1..=2 {
        let health = store.region_failed(Region::Us, NOW, 3, NOW + 500, false).await.unwrap();
        assert_eq!((health.failures, health.is_down()), (n, false));
    }
    let health = store.region_failed(Region::Us, NOW + 1, 3, NOW + 500, false).await.unwrap();
    assert_eq!((health.failures, health.down_since, health.next_probe_at), (3, Some(NOW + 1), NOW + 500));
    let later = store.region_failed(Region::Us, NOW + 2, 3, NOW + 900, false).await.unwrap();
    assert_eq!((later.failures, later.down_since, later.next_probe_at), (4, Some(NOW + 1), NOW + 500), "stays down");
    let eu = store.region_health().await.unwrap().into_iter().find(|h| h.region == Region::Eu).unwrap();
    assert!(!eu.is_down(), "the other region is not touched");

    assert!(store.lease_workspaces(&candidates, NOW + 10, NOW + LEASE, 10).await.unwrap().is_empty());
    assert_eq!(store.next_due(&candidates, NOW + 10).await.unwrap(), None, "nothing is due in a region that is down");
    assert!(store.lease_probe(Region::Us, &candidates, NOW + 100, NOW + 5000).await.unwrap().is_none(), "not yet");
    let probe = store.lease_probe(Region::Us, &candidates, NOW + 500, NOW + 5000).await.unwrap().unwrap();
    assert_eq!(probe.workspace_id, "second", "the least recently attempted workspace probes");
    assert!(
        store.lease_probe(Region::Us, &candidates, NOW + 600, NOW + 5000).await.unwrap().is_none(),
        "one probe at a time"
    );
    // The probe sent nothing: the next one may go at once.
    store.release_lease(&probe).await.unwrap();
    store.end_probe(Region::Us, NOW + 5000, NOW + 700).await.unwrap();
    let probe = store.lease_probe(Region::Us, &candidates, NOW + 700, NOW + 5000).await.unwrap().unwrap();
    let failed_probe = store.region_failed(Region::Us, NOW + 800, 3, NOW + 2000, true).await.unwrap();
    assert_eq!(failed_probe.next_probe_at, NOW + 2000, "a failed probe sets the next one");
    store.end_probe(Region::Us, NOW + 5000, NOW + 800).await.unwrap();
    assert_eq!(store.region_health().await.unwrap()[1].next_probe_at, NOW + 2000, "a claim already moved stays");

    assert_eq!(store.region_succeeded(Region::Us, NOW + 3000).await.unwrap(), Some(NOW + 1));
    store.release_lease(&probe).await.unwrap();
    let us = store.region_health().await.unwrap().into_iter().find(|h| h.region == Region::Us).unwrap();
    assert_eq!((us.failures, us.is_down()), (0, false));
    let resumed = store.integration("first").await.unwrap().unwrap();
    assert_eq!(
        (resumed.next_attempt_at, resumed.consecutive_failures),
        (NOW + 3000, 0),
        "due at once, failures forgotten"
    );
    let leased = store.lease_workspaces(&candidates, NOW + 3000, NOW + LEASE, 10).await.unwrap();
    assert_eq!(leased.len(), 2, "every workspace of the region is due");
    assert_eq!(store.region_succeeded(Region::Us, NOW + 3001).await.unwrap(), None, "it was up already");
}

async fn deleting_an_integration_drops_its_events(backend: Backend) {
    let Some((_env, store)) = open(backend).await else {
        return;
    };
    seeded(store.as_ref(), "gone", 3).await;
    seeded(store.as_ref(), "kept", 2).await;
    assert!(store.delete_integration("gone").await.unwrap().is_some());
    assert!(store.delete_integration("gone").await.unwrap().is_none());
    assert_eq!(store.integration("gone").await.unwrap(), None);
    assert_eq!(store.queue_counts("gone").await.unwrap(), store::QueueCounts::default());
    assert_eq!(store.queue_depth().await.unwrap(), 2);
}

async fn retention_deletes_only_old_dead_letters_and_identities(backend: Backend) {
    let Some((_env, store)) = open(backend).await else {
        return;
    };
    seeded(store.as_ref(), "w", 2).await;
    store.enqueue(vec![], vec![link("old", "u", NOW - 10), link("new", "u", NOW + 10)]).await.unwrap();
    let lease = lease_one(store.as_ref(), NOW).await;
    let claimed = store.queued_events(&lease, 0, 10).await.unwrap();
    for (event, failed_at) in claimed.iter().zip([NOW - 10, NOW + 10]) {
        let rejection = Rejection { reason: DeadLetterReason::Rejected, status: None, detail: "x".into() };
        store.dead_letter(&lease, &[event.id], &rejection, failed_at).await.unwrap();
    }
    assert_eq!(store.purge(NOW, NOW, 100).await.unwrap(), (1, 1));
    let letters = store.dead_letters("w", 10).await.unwrap();
    assert_eq!(letters.iter().map(|l| l.failed_at).collect::<Vec<_>>(), [NOW + 10]);
    store.enqueue(vec![event("w", 9, None, Some("old")), event("w", 10, None, Some("new"))], vec![]).await.unwrap();
    let later = NOW + LEASE + 1;
    let lease = lease_one(store.as_ref(), later).await;
    let users: Vec<_> = store
        .queued_events(&lease, 0, 10)
        .await
        .unwrap()
        .into_iter()
        .map(|e| (e.anonymous_id.unwrap(), e.user_id))
        .collect();
    assert_eq!(users, [("old".to_owned(), None), ("new".to_owned(), Some("u".to_owned()))]);
}

/// A link seen again with the same user keeps its stored time until it is a
/// day old (so that it is not rewritten by every commit); a new user, or the
/// same user a day later, is written at once.
async fn repeated_links_are_refreshed_once_a_day(backend: Backend) {
    let Some((_env, store)) = open(backend).await else {
        return;
    };
    seeded(store.as_ref(), "w", 0).await;
    let day = produktly_segment::domain::LINK_REFRESH_MILLIS;
    store
        .enqueue(vec![], vec![link("same", "u", NOW), link("moved", "u", NOW), link("renewed", "u", NOW)])
        .await
        .unwrap();
    store
        .enqueue(
            vec![],
            vec![link("same", "u", NOW + 10), link("moved", "v", NOW + 10), link("renewed", "u", NOW + day)],
        )
        .await
        .unwrap();
    // Links last stored before NOW + 5 are forgotten: only "same" kept its first time.
    assert_eq!(store.purge(0, NOW + 5, 100).await.unwrap(), (0, 1));
    let events =
        [event("w", 0, None, Some("same")), event("w", 1, None, Some("moved")), event("w", 2, None, Some("renewed"))];
    store.enqueue(events.to_vec(), vec![]).await.unwrap();
    let lease = lease_one(store.as_ref(), NOW).await;
    let users: Vec<_> = store.queued_events(&lease, 0, 10).await.unwrap().into_iter().map(|e| e.user_id).collect();
    assert_eq!(users, [None, Some("v".to_owned()), Some("u".to_owned())]);
}

/// Commits on one connection wake listeners on others (PostgreSQL), so that
/// instances learn of each other's events; SQLite, one instance, returns.
async fn commits_wake_listeners(backend: Backend) {
    let Some((env, store)) = open(backend).await else {
        return;
    };
    let other = store::connect(&env.settings(|f| f)).await.unwrap();
    seeded(store.as_ref(), "w", 0).await;
    let wake = Arc::new(tokio::sync::Notify::new());
    let stop = tokio_util::sync::CancellationToken::new();
    let heard_workspaces = Arc::new(std::sync::Mutex::new(Vec::new()));
    let on_events: store::OnEvents = Arc::new({
        let (wake, heard) = (wake.clone(), heard_workspaces.clone());
        move |workspaces| {
            heard.lock().unwrap().extend(workspaces);
            wake.notify_one();
        }
    });
    let listening = tokio::spawn({
        let stop = stop.clone();
        async move { other.listen_for_events(on_events, stop).await }
    });
    if backend == Backend::Sqlite {
        tokio::time::timeout(Duration::from_secs(1), listening).await.expect("returns at once").unwrap();
        return;
    }
    // The listener needs a moment to subscribe; keep committing until it hears one.
    let heard = async {
        for n in 0.. {
            store.enqueue(vec![event("w", n, Some("u"), None)], vec![]).await.unwrap();
            if tokio::time::timeout(Duration::from_millis(200), wake.notified()).await.is_ok() {
                return;
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(10), heard).await.expect("a commit is announced");
    let heard = heard_workspaces.lock().unwrap().clone();
    assert!(!heard.is_empty() && heard.iter().all(|w| *w == "w"), "announcements name the workspace: {heard:?}");
    stop.cancel();
    listening.await.unwrap();
}

on_both_backends!(
    a_region_goes_down_is_probed_and_comes_back,
    retention_deletes_only_old_dead_letters_and_identities,
    repeated_links_are_refreshed_once_a_day,
    commits_wake_listeners,
    workspaces_and_ingest_targets,
    claims_resolve_user_ids_and_follow_arrival_order,
    a_queued_message_id_is_stored_once,
    a_stale_lease_changes_nothing,
    failed_events_stay_queued_for_the_next_round,
    dead_letters_are_kept_listed_and_replayed,
    old_events_expire_into_dead_letters,
    workspaces_are_leased_when_due_longest_waiting_first,
    deleting_an_integration_drops_its_events,
);
