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

import { type Item, Queue } from "./queue";
import { openStorage } from "./storage";
import { KEEPALIVE_BUDGET, type Outcome, post } from "./transport";

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
/** The service takes at most 500 events per batch. */
const MAX_BATCH_EVENTS = 500;
/** A new event waits this long, so that events close together share a request. */
const BATCH_DELAY_MS = 1000;
/** Full jitter: a failure's wait is random up to BACKOFF_BASE_MS × 2^failures, capped. */
const BACKOFF_BASE_MS = 1000;
const BACKOFF_MAX_MS = 5 * 60_000;
/** Network errors are tried this many times on a page, then left for later. */
const NETWORK_ATTEMPTS = 4;

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
  const queue = new Queue(storage, prefix + "queue:", newId(), () => !optedOut());
  const encoder = new TextEncoder();

  let stopped = false;
  let failures = 0;
  let networkFailures = 0;
  let sending = false;
  let timer: ReturnType<typeof setTimeout> | undefined;
  let dropped = 0;
  let waiters: (() => void)[] = [];
  /** The largest batch the service took lately (halved after a 413). */
  let batchLimit = MAX_BATCH_EVENTS;
  /** This page's own wait after network errors; the service's waits (429,
   *  503, ...) are kept in storage, shared by the origin's tabs and pages. */
  let unreachableUntil = 0;

  /** When sending may resume (ms since the epoch). */
  function resumeAt(): number {
    const shared = Math.min(Number(storage.get(names.retryAt)) || 0, Date.now() + BACKOFF_MAX_MS);
    return Math.max(shared, unreachableUntil);
  }

  function anonymousId(): string {
    let id = storage.get(names.anonymousId);
    if (!id) {
      id = newId();
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
    schedule(BATCH_DELAY_MS);
    return true;
  }

  /** Runs `send` after `delay`, or when a pending wait ends; never sooner. */
  function schedule(delay: number): void {
    if (timer !== undefined || sending || stopped || queue.items.length === 0) return;
    const wait = Math.max(delay, resumeAt() - Date.now());
    timer = setTimeout(() => {
      timer = undefined;
      void send();
    }, wait);
  }

  /** The next request: an identify alone, ahead of every event (so that
   *  events tracked before it, still waiting, reach Segment with its user),
   *  else the oldest events. */
  function nextRequest(): { path: string; items: Item[]; body: string; bytes: number } | null {
    const waiting = queue.items;
    if (waiting.length === 0) return null;
    const sentAt = JSON.stringify(new Date().toISOString());
    const identify = waiting.find((item) => item.kind === "identify");
    if (identify !== undefined) {
      const body = `${identify.body.slice(0, -1)},"sentAt":${sentAt}}`;
      return { path: "/v1/identify", items: [identify], body, bytes: identify.bytes + 40 };
    }
    const items: Item[] = [];
    let bytes = 50;
    for (const item of waiting) {
      if (items.length >= batchLimit) break;
      if (items.length > 0 && bytes + item.bytes + 1 > KEEPALIVE_BUDGET) break;
      items.push(item);
      bytes += item.bytes + 1;
    }
    const body = `{"batch":[${items.map((item) => item.body).join(",")}],"sentAt":${sentAt}}`;
    return { path: "/v1/batch", items, body, bytes };
  }

  /** Sends what waits, one request at a time, until it is sent or must
   *  wait; then answers the `flush` calls. The first request leaves before
   *  this returns, so a page going away still sends it (keepalive). */
  async function send(): Promise<void> {
    if (sending) return;
    sending = true;
    while (!stopped && !optedOut() && Date.now() >= resumeAt()) {
      const request = nextRequest();
      if (request === null) break;
      const url = `${endpoint}${request.path}?key=${encodeURIComponent(key)}`;
      const outcome = await post(url, request.body, request.bytes);
      if (!settle(request.items, outcome)) break;
    }
    sending = false;
    schedule(0);
    answerFlushes();
  }

  function answerFlushes(): void {
    const done = waiters;
    waiters = [];
    for (const resolve of done) resolve();
  }

  /** What an answer does to the items sent; false when sending must pause. */
  function settle(items: Item[], outcome: Outcome): boolean {
    const ids = new Set(items.map((item) => item.id));
    switch (outcome.kind) {
      case "sent":
        if (outcome.rejected.length > 0) {
          dropped += outcome.rejected.length;
          const reasons = outcome.rejected.map((r) => `${r.code} (${r.message})`).join("; ");
          console.warn(`Produktly: the service refused ${outcome.rejected.length} events: ${reasons}`);
        }
        failures = 0;
        networkFailures = 0;
        unreachableUntil = 0;
        storage.remove(names.retryAt);
        queue.remove(ids);
        return true;
      case "refused":
        dropped += items.length;
        console.warn(`Produktly: the service refused ${items.length} events (${outcome.status} ${outcome.reason}); they are dropped`);
        queue.remove(ids);
        return true;
      case "too_large":
        if (items.length > 1) {
          batchLimit = Math.max(1, Math.floor(items.length / 2));
          return true;
        }
        dropped++;
        console.warn("Produktly: the service refused an event as too large (413); it is dropped");
        queue.remove(ids);
        return true;
      case "stop": {
        stopped = true;
        dropped += items.length;
        const hint =
          outcome.status === 403
            ? "this page's origin is not in the workspace's allowed_origins"
            : outcome.status === 401
              ? "the ingest key is wrong or was rotated"
              : "check the tracker's endpoint";
        console.warn(`Produktly: tracking stopped on this page: ${outcome.status} ${outcome.reason} (${hint})`);
        queue.remove(ids);
        return false;
      }
      case "retry": {
        // The service asked for the wait: every tab and page of the origin keeps it.
        const until = Date.now() + backoff(outcome.retryAfterMs);
        storage.set(names.retryAt, String(Math.max(Number(storage.get(names.retryAt)) || 0, until)));
        return false;
      }
      case "unreachable":
        // After a few tries on this page the events wait for the next page (or the network).
        networkFailures++;
        unreachableUntil = Date.now() + (networkFailures >= NETWORK_ATTEMPTS ? BACKOFF_MAX_MS : backoff(null));
        return false;
    }
  }

  /** At least `floor` (capped), and a random part of the growing backoff (full jitter). */
  function backoff(floor: number | null): number {
    failures++;
    const jitter = Math.random() * Math.min(BACKOFF_MAX_MS, BACKOFF_BASE_MS * 2 ** failures);
    return Math.max(Math.min(floor ?? 0, BACKOFF_MAX_MS), jitter);
  }

  /** The page is going away, or hidden: what waits goes out now (unless a
   *  wait is pending) and is written down. The sent events stay kept until
   *  their answer, which comes only if the page lives on; the next page may
   *  send them again, with the same ids. */
  function leave(): void {
    if (!sending && queue.items.length > 0) {
      clearTimeout(timer);
      timer = undefined;
      void send();
    }
    queue.write();
  }

  addEventListener("pagehide", () => {
    leave();
    queue.release();
  });
  addEventListener("pageshow", (event) => {
    if ((event as PageTransitionEvent).persisted) {
      queue.reclaim();
      schedule(0);
    }
  });
  document.addEventListener("visibilitychange", () => {
    if (document.visibilityState === "hidden") leave();
  });
  addEventListener("online", () => {
    networkFailures = 0;
    unreachableUntil = 0;
    schedule(0);
  });

  // What earlier pages of the origin left to send; `flush` waits for it.
  const adopted = optedOut() ? Promise.resolve(queue.clear()) : queue.adopt().then(() => schedule(0));

  return {
    track(event: string, properties: Properties = {}): string | null {
      if (stopped || optedOut()) return null;
      const messageId = newId();
      const message = {
        event,
        properties,
        messageId,
        userId: userId(),
        anonymousId: anonymousId(),
        timestamp: new Date().toISOString(),
        context: {
          page: { url: location.href, path: location.pathname, title: document.title, referrer: document.referrer },
          locale: navigator.language,
        },
      };
      return enqueue("track", messageId, message) ? messageId : null;
    },

    identify(user: string): void {
      if (stopped || optedOut() || !user) return;
      storage.set(names.userId, String(user));
      enqueue("identify", newId(), { userId: String(user), anonymousId: anonymousId() });
    },

    async flush(): Promise<void> {
      await adopted;
      if (stopped || optedOut() || queue.items.length === 0) return;
      const flushed = new Promise<void>((resolve) => waiters.push(resolve));
      if (!sending && Date.now() >= resumeAt()) {
        clearTimeout(timer);
        timer = undefined;
        void send();
      }
      return flushed;
    },

    reset(): void {
      storage.remove(names.userId);
      storage.remove(names.anonymousId);
    },

    optOut(): void {
      storage.set(names.optedOut, "1");
      clearTimeout(timer);
      timer = undefined;
      queue.clear();
      for (const name of Object.values(names)) if (name !== names.optedOut) storage.remove(name);
      answerFlushes();
    },

    optIn(): void {
      storage.remove(names.optedOut);
    },

    get dropped(): number {
      return dropped + queue.dropped;
    },
  };
}

/** A random UUID (v4); `crypto.randomUUID` only exists in secure contexts. */
function newId(): string {
  if (typeof crypto.randomUUID === "function") return crypto.randomUUID();
  const bytes = crypto.getRandomValues(new Uint8Array(16));
  bytes[6] = (bytes[6] & 0x0f) | 0x40;
  bytes[8] = (bytes[8] & 0x3f) | 0x80;
  const hex = [...bytes].map((b) => b.toString(16).padStart(2, "0")).join("");
  return `${hex.slice(0, 8)}-${hex.slice(8, 12)}-${hex.slice(12, 16)}-${hex.slice(16, 20)}-${hex.slice(20)}`;
}

