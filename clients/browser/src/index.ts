// The Produktly browser SDK: guidance events from the page to the Produktly
// Segment source, with nothing lost from the click on and no retry storms.
//
//   const tracker = Produktly.createTracker({ endpoint, key, getUserId });
//   tracker.track("tour_start", { tour_id: "welcome" });
//
// - Every event gets its messageId when tracked and keeps it on every retry,
//   on this page or the next, so Segment de-duplicates what is sent twice.
// - What waits is kept in localStorage (memory where storage is refused),
//   released when the page goes away, and sent by the next page of the origin;
//   at most 1,000 events or 1 MB, for 24 h.
// - Failures back off with full jitter, `Retry-After` honoured; new events
//   never shorten a wait, and every tab of the origin shares it.
// - A refusal no retry can fix drops only what it refused, with a warning; a
//   wrong key or a refused origin stops the tracker for the page.

import { pageContext } from "./context";
import { type Item, Queue } from "./queue";
import { openStorage } from "./storage";
import { Sender } from "./sender";

export interface TrackerOptions {
  /** The service's base URL, e.g. `https://segment-source.produktly.example`. */
  endpoint: string;
  /** The workspace's public ingest key. */
  key: string;
  /** The product's own id of the signed-in user; null or undefined when none is. */
  getUserId?: () => string | null | undefined;
}

/** An event's properties: the catalog's, and any of the customer's own. */
export type Properties = { [name: string]: unknown };

export interface Tracker {
  /** Queues an event (a catalog event name) for sending; returns its messageId,
   *  or null when it is not queued (opted out, stopped, or too large). */
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
  /** Undoes `optOut`. */
  optIn(): void;
  /** Events dropped on this page: over the bounds, older than 24 h, too large,
   *  or refused by the service. */
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
  const prefix = `produktly:${key}:`;
  const names = {
    anonymousId: prefix + "anonymous_id",
    userId: prefix + "user_id",
    optedOut: prefix + "opted_out",
    retryAt: prefix + "retry_at",
  };
  const optedOut = () => storage.get(names.optedOut) === "1";
  const queue = new Queue(storage, prefix + "queue:", randomId(), () => !optedOut());
  const encoder = new TextEncoder();

  const sender = new Sender({ endpoint, key, queue, storage, retryAtName: names.retryAt, optedOut });
  let dropped = 0;

  function anonymousId(): string {
    let id = storage.get(names.anonymousId);
    if (!id) {
      id = randomId();
      storage.set(names.anonymousId, id);
    }
    return id;
  }

  function userId(): string | undefined {
    return options.getUserId?.() ?? storage.get(names.userId) ?? undefined;
  }

  function enqueue(kind: Item["kind"], id: string, message: object): boolean {
    const body = JSON.stringify(message);
    const bytes = encoder.encode(body).length;
    if (bytes > MAX_EVENT_BYTES) {
      dropped++;
      console.warn(`Produktly: an event of ${bytes} bytes is over the ${MAX_EVENT_BYTES}-byte limit and is not sent`);
      return false;
    }
    queue.add({ id, kind, at: Date.now(), body, bytes });
    sender.schedule(BATCH_DELAY_MS);
    return true;
  }

  /** The page is going away, or hidden: what waits goes out now (unless a
   *  wait is pending) and is written down. The sent events stay kept until
   *  their answer, which comes only if the page lives on; the next page may
   *  send them again, with the same ids. */
  function leave(): void {
    sender.leave();
    queue.write();
  }

  addEventListener("pagehide", () => {
    leave();
    queue.release();
  });
  addEventListener("pageshow", (event) => {
    if ((event as PageTransitionEvent).persisted) {
      queue.reclaim();
      sender.schedule(0);
    }
  });
  document.addEventListener("visibilitychange", () => {
    if (document.visibilityState === "hidden") leave();
  });
  addEventListener("online", () => sender.online());

  // What earlier pages of the origin left to send; `flush` waits for it.
  const adopted = optedOut() ? Promise.resolve(queue.clear()) : queue.adopt().then(() => sender.schedule(0));

  return {
    track(event: string, properties: Properties = {}): string | null {
      if (sender.stopped || optedOut()) return null;
      const id = messageId();
      const message = {
        event,
        properties,
        messageId: id,
        userId: userId(),
        anonymousId: anonymousId(),
        timestamp: new Date().toISOString(),
        context: pageContext(),
      };
      return enqueue("track", id, message) ? id : null;
    },

    identify(user: string): void {
      if (sender.stopped || optedOut() || !user) return;
      storage.set(names.userId, String(user));
      enqueue("identify", messageId(), { userId: String(user), anonymousId: anonymousId() });
    },

    async flush(): Promise<void> {
      await adopted;
      if (sender.stopped || optedOut() || queue.items.length === 0) return;
      return sender.flush();
    },

    reset(): void {
      storage.remove(names.userId);
      storage.remove(names.anonymousId);
    },

    optOut(): void {
      storage.set(names.optedOut, "1");
      queue.clear();
      for (const name of Object.values(names)) if (name !== names.optedOut) storage.remove(name);
      sender.cancel();
    },

    optIn(): void {
      storage.remove(names.optedOut);
    },

    get dropped(): number {
      return dropped + sender.dropped + queue.dropped;
    },
  };
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

