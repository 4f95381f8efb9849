// Sending what the queue holds: one request at a time, batched, with backoff
// (full jitter, `Retry-After` honoured and shared by the origin's tabs through
// storage), and what each answer does to the events it carried.

import type { Item, Queue } from "./queue";
import type { Storage } from "./storage";
import { KEEPALIVE_BUDGET, type Outcome, post } from "./transport";

/** The service takes at most 500 events per batch. */
const MAX_BATCH_EVENTS = 500;
/** Full jitter: a failure's wait is random up to BACKOFF_BASE_MS × 2^failures, capped. */
const BACKOFF_BASE_MS = 1000;
export const BACKOFF_MAX_MS = 5 * 60_000;
/** Network errors are tried this many times on a page, then left for later. */
export const NETWORK_ATTEMPTS = 4;

export interface SenderOptions {
  /** The service's base URL, without a trailing slash. */
  endpoint: string;
  key: string;
  queue: Queue;
  storage: Storage;
  /** The storage name of the service's wait, shared by the origin's tabs. */
  retryAtName: string;
  /** Sending stops while this is true. */
  optedOut: () => boolean;
  /** One request and its outcome; the transport's `post` unless a test gives its own. */
  post?: (url: string, body: string, bytes: number) => Promise<Outcome>;
}

interface Request {
  path: string;
  items: Item[];
  body: string;
  bytes: number;
}

export class Sender {
  /** Events dropped: refused by the service, or too large for it. */
  dropped = 0;
  /** A wrong key or a refused origin: nothing more is sent from this page. */
  stopped = false;
  private failures = 0;
  private networkFailures = 0;
  private sending = false;
  private timer: ReturnType<typeof setTimeout> | undefined;
  private waiters: (() => void)[] = [];
  /** The largest batch the service took lately (halved after a 413). */
  private batchLimit = MAX_BATCH_EVENTS;
  /** This page's own wait after network errors; the service's waits (429,
   *  503, ...) are kept in storage, shared by the origin's tabs and pages. */
  private unreachableUntil = 0;
  private readonly post: NonNullable<SenderOptions["post"]>;

  constructor(private readonly options: SenderOptions) {
    this.post = options.post ?? post;
  }

  /** When sending may resume (ms since the epoch). */
  resumeAt(): number {
    const shared = Math.min(Number(this.options.storage.get(this.options.retryAtName)) || 0, Date.now() + BACKOFF_MAX_MS);
    return Math.max(shared, this.unreachableUntil);
  }

  /** Sends after `delay`, or when a pending wait ends; never sooner. Nothing
   *  is scheduled once opted out (in any tab), so no timer spins. */
  schedule(delay: number): void {
    const { queue, optedOut } = this.options;
    if (this.timer !== undefined || this.sending || this.stopped || queue.items.length === 0 || optedOut()) return;
    const wait = Math.max(delay, this.resumeAt() - Date.now());
    this.timer = setTimeout(() => {
      this.timer = undefined;
      void this.send();
    }, wait);
  }

  /** Sends now unless a wait is pending or a send is under way; resolves once
   *  what waits is sent, or once a later try must wait again. */
  flush(): Promise<void> {
    const flushed = new Promise<void>((resolve) => this.waiters.push(resolve));
    if (!this.sending && Date.now() >= this.resumeAt()) this.sendNow();
    return flushed;
  }

  /** The page is going away or hidden: what waits goes out now, unless a
   *  wait is pending (the next page sends it, with the same ids). */
  leave(): void {
    if (!this.sending && this.options.queue.items.length > 0) this.sendNow();
  }

  /** The network is back: this page's own wait ends. */
  online(): void {
    this.networkFailures = 0;
    this.unreachableUntil = 0;
    this.schedule(0);
  }

  /** No more timers; pending flushes are answered. */
  cancel(): void {
    clearTimeout(this.timer);
    this.timer = undefined;
    this.answerFlushes();
  }

  private sendNow(): void {
    clearTimeout(this.timer);
    this.timer = undefined;
    void this.send();
  }

  /** Sends what waits, one request at a time, until it is sent or must
   *  wait; then answers the `flush` calls. The first request leaves before
   *  this returns, so a page going away still sends it (keepalive). */
  async send(): Promise<void> {
    if (this.sending) return;
    this.sending = true;
    const { endpoint, key, optedOut, queue } = this.options;
    queue.checkAdopted();
    while (!this.stopped && !optedOut() && Date.now() >= this.resumeAt()) {
      const request = this.nextRequest();
      if (request === null) break;
      const url = `${endpoint}${request.path}?key=${encodeURIComponent(key)}`;
      const outcome = await this.post(url, request.body, request.bytes);
      if (!this.settle(request.items, outcome)) break;
    }
    this.sending = false;
    this.schedule(0);
    this.answerFlushes();
  }

  private answerFlushes(): void {
    const done = this.waiters;
    this.waiters = [];
    for (const resolve of done) resolve();
  }

  /** The next request: an identify alone, ahead of every event (so that
   *  events tracked before it, still waiting, reach Segment with its user),
   *  else the oldest events. */
  private nextRequest(): Request | null {
    const waiting = this.options.queue.items;
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
      if (items.length >= this.batchLimit) break;
      if (items.length > 0 && bytes + item.bytes + 1 > KEEPALIVE_BUDGET) break;
      items.push(item);
      bytes += item.bytes + 1;
    }
    const body = `{"batch":[${items.map((item) => item.body).join(",")}],"sentAt":${sentAt}}`;
    return { path: "/v1/batch", items, body, bytes };
  }

  /** What an answer does to the items sent; false when sending must pause. */
  private settle(items: Item[], outcome: Outcome): boolean {
    const ids = new Set(items.map((item) => item.id));
    const { queue, storage, retryAtName } = this.options;
    switch (outcome.kind) {
      case "sent":
        if (outcome.rejected.length > 0) {
          this.dropped += outcome.rejected.length;
          const reasons = outcome.rejected.map((r) => `${r.code} (${r.message})`).join("; ");
          console.warn(`Produktly: the service refused ${outcome.rejected.length} events: ${reasons}`);
        }
        this.failures = 0;
        this.networkFailures = 0;
        this.unreachableUntil = 0;
        storage.remove(retryAtName);
        queue.remove(ids);
        return true;
      case "refused":
        this.dropped += items.length;
        console.warn(
          `Produktly: the service refused ${items.length} events (${outcome.status} ${outcome.reason}); they are dropped`,
        );
        queue.remove(ids);
        return true;
      case "too_large":
        if (items.length > 1) {
          this.batchLimit = Math.max(1, Math.floor(items.length / 2));
          return true;
        }
        this.dropped++;
        console.warn("Produktly: the service refused an event as too large (413); it is dropped");
        queue.remove(ids);
        return true;
      case "stop": {
        this.stopped = true;
        this.dropped += items.length;
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
        const until = Math.ceil(Date.now() + this.backoff(outcome.retryAfterMs));
        storage.set(retryAtName, String(Math.max(Number(storage.get(retryAtName)) || 0, until)));
        return false;
      }
      case "unreachable":
        // After a few tries on this page the events wait for the next page (or the network).
        this.networkFailures++;
        this.unreachableUntil =
          Date.now() + (this.networkFailures >= NETWORK_ATTEMPTS ? BACKOFF_MAX_MS : this.backoff(null));
        return false;
    }
  }

  /** At least `floor` (capped), and a random part of the growing backoff (full jitter). */
  private backoff(floor: number | null): number {
    this.failures++;
    const jitter = Math.random() * Math.min(BACKOFF_MAX_MS, BACKOFF_BASE_MS * 2 ** this.failures);
    return Math.max(Math.min(floor ?? 0, BACKOFF_MAX_MS), jitter);
  }
}
