// The Produktly browser SDK: guidance events from the page to the Produktly
// Segment source, with nothing lost from the click on and no retry storms.
//
//   const tracker = Produktly.createTracker({ endpoint, key, workspace, getUserId });
//   tracker.track("tour_start", { tour_id: "welcome" });
//
// - Every event gets its messageId when tracked and keeps it on every retry,
//   on this page or the next, so Segment de-duplicates what is sent twice.
// - What waits is kept in localStorage (memory where storage is refused),
//   released when the page goes away, and sent by the next page of the origin;
//   at most 1,000 events a page and 1 MB across the origin, for 24 h. It is
//   named after the workspace, so a key rotation keeps it.
// - Consent and the anonymous id hold through a full quota (see storage.ts
//   and identity.ts); `startOptedOut` stores nothing before `optIn()`.
// - Failures back off with full jitter, `Retry-After` honoured; new events
//   never shorten a wait, and every tab of the origin shares it.
// - A refusal no retry can fix drops only what it refused, with a warning; a
//   wrong key or a refused origin stops the tracker for the page.

import { pageContext } from "./context";
import { AnonymousId } from "./identity";
import { type Item, Queue } from "./queue";
import { openStorage, type Storage } from "./storage";
import { Sender } from "./sender";

export interface TrackerOptions {
  /** The service's base URL, e.g. `https://segment-source.produktly.example`. */
  endpoint: string;
  /** The workspace's public ingest key. */
  key: string;
  /** The workspace's id. What the tracker keeps (consent, the anonymous id,
   *  waiting events) is named after it, so it outlives a rotation of the key;
   *  without it, after the endpoint. */
  workspace?: string;
  /** The product's own id of the signed-in user; null or undefined when none
   *  is. Given, it decides: events tracked while it answers null are anonymous. */
  getUserId?: () => string | null | undefined;
  /** The page's own anonymous id for the visitor, when it has one. */
  getAnonymousId?: () => string | null | undefined;
  /** A domain (e.g. `"example.com"`) whose first-party cookie keeps the
   *  anonymous id, so that its subdomains (`app.`, `www.`) share it. */
  cookieDomain?: string;
  /** Consent first: nothing is sent or stored (not even an anonymous id)
   *  until `optIn()`, which later pages remember. */
  startOptedOut?: boolean;
  /** Sees each event before it is queued: returns it (changed or not) to
   *  send it, or null to drop it, e.g. to redact. The messageId stays the SDK's. */
  beforeSend?: (event: TrackEvent) => TrackEvent | null;
}

/** An event's properties: the catalog's, and any of the customer's own. */
export type Properties = { [name: string]: unknown };

/** A track call as it is sent. */
export interface TrackEvent {
  event: string;
  properties: Properties;
  messageId: string;
  userId?: string;
  anonymousId: string;
  timestamp: string;
  context: { [field: string]: unknown };
}

export interface Tracker {
  /** Queues an event (a catalog event name) for sending; returns its messageId,
   *  or null when it is not queued (opted out, stopped, dropped by
   *  `beforeSend`, too large, or not serialisable). */
  track(event: string, properties?: Properties): string | null;
  /** Records that this browser's anonymous id belongs to `userId`; queued, and
   *  sent ahead of the events still waiting. */
  identify(userId: string): void;
  /** Sends what is queued now (a pending backoff is still waited out); resolves
   *  once it is sent, or waits for a later try. */
  flush(): Promise<void>;
  /** Sign-out: forgets the user, and starts a new anonymous id. */
  reset(): void;
  /** Stops sending, forgets what is kept and the anonymous id, and remembers
   *  the choice on later pages. */
  optOut(): void;
  /** Undoes `optOut`, or gives the consent `startOptedOut` waits for; remembered. */
  optIn(): void;
  /** Removes the tracker's listeners and timers; what waits is left for the
   *  next tracker or page of the origin to send. */
  destroy(): void;
  /** Events dropped on this page: over the bounds, older than 24 h, too large,
   *  not serialisable, or refused by the service. */
  readonly dropped: number;
}

/** Segment's limit per message; a larger event is refused here, not sent. */
const MAX_EVENT_BYTES = 32_000;
/** A new event waits this long, so that events close together share a request. */
const BATCH_DELAY_MS = 1000;

export function createTracker(options: TrackerOptions): Tracker {
  const endpoint = String(options.endpoint).replace(/\/+$/, "");
  const key = String(options.key);
  const storage = openStorage();
  const prefix = `produktly:${options.workspace ?? endpoint}:`;
  moveKeptUnder(storage, `produktly:${key}:`, prefix);
  const names = {
    anonymousId: prefix + "anonymous_id",
    userId: prefix + "user_id",
    consent: prefix + "consent",
    retryAt: prefix + "retry_at",
  };
  const optedOut = () => {
    const consent = storage.get(names.consent);
    return consent === "out" || (options.startOptedOut === true && consent !== "in");
  };
  const queue = new Queue(storage, prefix + "queue:", randomId(), () => !optedOut());
  const identity = new AnonymousId(storage, names.anonymousId, options, randomId);
  const encoder = new TextEncoder();

  const sender = new Sender({ endpoint, key, queue, storage, retryAtName: names.retryAt, optedOut });
  let dropped = 0;
  let destroyed = false;
  const active = () => !destroyed && !sender.stopped && !optedOut();

  function userId(): string | undefined {
    const user = options.getUserId ? options.getUserId() : storage.get(names.userId);
    return user ?? undefined;
  }

  function drop(warning: string): false {
    dropped++;
    console.warn(`Produktly: ${warning}`);
    return false;
  }

  function enqueue(kind: Item["kind"], id: string, message: object): boolean {
    let body: string;
    try {
      body = JSON.stringify(message);
    } catch (error) {
      return drop(`an event that cannot be serialised is not sent (${String(error)})`);
    }
    const bytes = encoder.encode(body).length;
    if (bytes > MAX_EVENT_BYTES) return drop(`an event of ${bytes} bytes is over the ${MAX_EVENT_BYTES}-byte limit and is not sent`);
    queue.add({ id, kind, at: Date.now(), body, bytes });
    sender.schedule(BATCH_DELAY_MS);
    return true;
  }

  /** `beforeSend`'s answer: the event to send, or null when it is dropped. */
  function screened(message: TrackEvent): TrackEvent | null {
    if (!options.beforeSend) return message;
    try {
      const answer = options.beforeSend(message);
      if (answer === null) return null;
      if (typeof answer === "object") return { ...answer, messageId: message.messageId };
      drop(`beforeSend returned ${typeof answer}; the event is dropped (return the event to send it, or null)`);
    } catch (error) {
      drop(`beforeSend threw; the event is dropped (${String(error)})`);
    }
    return null;
  }

  /** The page is going away, or hidden: what waits goes out now (unless a
   *  wait is pending) and is written down. The sent events stay kept until
   *  their answer, which comes only if the page lives on; the next page may
   *  send them again, with the same ids. */
  function leave(): void {
    sender.leave();
    queue.write();
  }

  /** Another tab opted out: this one stops too, with nothing left to send. */
  function consentChanged(event: StorageEvent): void {
    if (event.key !== names.consent || !optedOut()) return;
    queue.write(); // keeps nothing once opted out
    sender.cancel();
  }

  /** The page came back (back-forward cache, or unfrozen): its record, unless adopted meanwhile. */
  function back(): void {
    queue.reclaim();
    sender.schedule(0);
  }

  const listeners: [EventTarget, string, EventListener][] = [
    [window, "pagehide", () => {
      leave();
      queue.release();
    }],
    [window, "pageshow", (event) => {
      if ((event as PageTransitionEvent).persisted) back();
    }],
    [document, "visibilitychange", () => {
      if (document.visibilityState === "hidden") leave();
    }],
    [document, "freeze", leave],
    [document, "resume", back],
    [window, "online", () => sender.online()],
    [window, "storage", (event) => consentChanged(event as StorageEvent)],
  ];
  for (const [target, type, listener] of listeners) target.addEventListener(type, listener);

  // What earlier pages of the origin left to send; `flush` waits for it.
  const adopted = optedOut() ? Promise.resolve(queue.clear()) : queue.adopt().then(() => sender.schedule(0));

  return {
    track(event: string, properties: Properties = {}): string | null {
      if (!active()) return null;
      const id = messageId();
      const message = screened({
        event,
        properties,
        messageId: id,
        userId: userId(),
        anonymousId: identity.current(),
        timestamp: new Date().toISOString(),
        context: pageContext(),
      });
      return message !== null && enqueue("track", id, message) ? id : null;
    },

    identify(user: string): void {
      if (!active() || !user) return;
      storage.set(names.userId, String(user));
      enqueue("identify", messageId(), { userId: String(user), anonymousId: identity.current() });
    },

    async flush(): Promise<void> {
      await adopted;
      if (!active() || queue.items.length === 0) return;
      return sender.flush();
    },

    reset(): void {
      storage.remove(names.userId);
      identity.forget();
    },

    optOut(): void {
      // The choice is kept first; clearing the queue may make room for it.
      const kept = storage.set(names.consent, "out");
      queue.clear();
      sender.cancel();
      identity.forget();
      storage.remove(names.userId);
      storage.remove(names.retryAt);
      if (!kept && !storage.set(names.consent, "out")) {
        console.warn("Produktly: storage is full; the opt-out holds on this page only");
      }
    },

    optIn(): void {
      storage.set(names.consent, "in");
    },

    destroy(): void {
      if (destroyed) return;
      destroyed = true;
      for (const [target, type, listener] of listeners) target.removeEventListener(type, listener);
      sender.cancel();
      sender.stopped = true;
      queue.release();
    },

    get dropped(): number {
      return dropped + sender.dropped + queue.dropped;
    },
  };
}

/** What an earlier version kept under the ingest key's name moves under the
 *  workspace's, once: consent first, then the ids and the waiting events. */
function moveKeptUnder(storage: Storage, from: string, to: string): void {
  if (from === to) return;
  for (const name of storage.names(from)) {
    const value = storage.get(name);
    const rest = name.slice(from.length);
    const target = rest === "opted_out" ? to + "consent" : to + rest;
    if (value !== null && storage.get(target) === null && rest !== "retry_at") {
      storage.set(target, rest === "opted_out" ? "out" : value);
    }
    storage.remove(name);
  }
}

/** A random UUID (v4), for ids that must tell nothing, such as the anonymous id. */
function randomId(): string {
  const bytes = crypto.getRandomValues(new Uint8Array(16));
  bytes[6] = (bytes[6] & 0x0f) | 0x40;
  return uuid(bytes);
}

/**
 * A UUIDv7 for a messageId: the time in milliseconds, then random bits. Ids
 * made one after another sort together, so the service's unique index on them
 * grows at its end rather than at random places, which costs its commits
 * less.
 */
function messageId(): string {
  const bytes = crypto.getRandomValues(new Uint8Array(16));
  let time = Date.now();
  for (let i = 5; i >= 0; i--) {
    bytes[i] = time % 256;
    time = Math.floor(time / 256);
  }
  bytes[6] = (bytes[6] & 0x0f) | 0x70;
  return uuid(bytes);
}

/** The 16 bytes as a UUID's text, with RFC 9562's variant bits. */
function uuid(bytes: Uint8Array): string {
  bytes[8] = (bytes[8] & 0x3f) | 0x80;
  const hex = [...bytes].map((b) => b.toString(16).padStart(2, "0")).join("");
  return `${hex.slice(0, 8)}-${hex.slice(8, 12)}-${hex.slice(12, 16)}-${hex.slice(16, 20)}-${hex.slice(20)}`;
}

