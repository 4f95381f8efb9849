// What waits to be sent, kept in storage so that it outlives the page: each
// page writes its own record (no two pages write one record), and a page that
// goes away releases its record for the next page of the origin to adopt and
// send, with the same messageIds. Adoption runs under a Web Lock where the
// browser has them, so two tabs never adopt (and send) the same events.

import type { Storage } from "./storage";

/** One call to send: a track event or an identify, as its JSON body. */
export interface Item {
  /** The messageId (an identify's own id, never sent). */
  id: string;
  kind: "track" | "identify";
  /** When it was tracked (ms since the epoch). */
  at: number;
  body: string;
  /** The body's size in UTF-8 bytes. */
  bytes: number;
}

/** A page's record in storage. */
interface Record {
  /** Last written (ms since the epoch): a page that stops writing is gone. */
  at: number;
  /** The page went away: its items are for the next page to take. */
  released: boolean;
  items: Item[];
}

/** Most items kept, and most bytes: beyond either, the oldest go. */
export const MAX_ITEMS = 1000;
export const MAX_BYTES = 1_000_000;
/** Segment de-duplicates messageIds for 24 h: older events are not resent. */
export const MAX_AGE_MS = 24 * 3600 * 1000;
/** A live page rewrites its record this often while it holds items. */
const HEARTBEAT_MS = 60_000;
/** A record not written for this long belongs to a page that died. */
const ORPHANED_MS = 5 * 60_000;

export class Queue {
  items: Item[] = [];
  /** Items dropped on this page: over the bounds, or too old. */
  dropped = 0;
  /** The page went away: its record is the next page's (until it comes back). */
  private released = false;
  private writing = false;
  private heartbeat: ReturnType<typeof setInterval> | undefined;

  constructor(
    private readonly storage: Storage,
    private readonly prefix: string,
    private readonly page: string,
    /** False once the user opted out (in any tab): nothing is kept then. */
    private readonly keeping: () => boolean,
  ) {}

  private get own(): string {
    return this.prefix + this.page;
  }

  add(item: Item): void {
    this.items.push(item);
    this.bound();
    this.save();
  }

  /** Removes the items of these ids (sent, or refused for good). */
  remove(ids: ReadonlySet<string>): void {
    this.items = this.items.filter((item) => !ids.has(item.id));
    this.save();
  }

  /** Writes the record soon: once for the calls of the same task. */
  save(): void {
    if (this.writing) return;
    this.writing = true;
    queueMicrotask(() => {
      this.writing = false;
      this.write();
    });
  }

  /** The page goes away: the record is written for the next page to take. */
  release(): void {
    this.released = true;
    this.write();
  }

  /** Writes the record now. */
  write(): void {
    if (!this.keeping()) this.items = [];
    if (this.items.length === 0) {
      this.storage.remove(this.own);
      clearInterval(this.heartbeat);
      this.heartbeat = undefined;
      return;
    }
    const record: Record = { at: Date.now(), released: this.released, items: this.items };
    this.storage.set(this.own, JSON.stringify(record));
    if (!this.released && this.heartbeat === undefined) {
      this.heartbeat = setInterval(() => this.write(), HEARTBEAT_MS);
    }
  }

  /** The page came back from the back-forward cache: its record, unless
   *  another page adopted it meanwhile (then that page sends the items). */
  reclaim(): void {
    if (this.storage.get(this.own) === null) this.items = [];
    this.released = false;
    this.write();
  }

  /** Takes over the records of pages that went away or died. */
  async adopt(): Promise<void> {
    const take = () => {
      const now = Date.now();
      for (const name of this.storage.names(this.prefix)) {
        if (name === this.own) continue;
        const record = parse(this.storage.get(name));
        if (record !== null && !record.released && now - record.at < ORPHANED_MS) continue;
        this.storage.remove(name);
        if (record !== null) this.merge(record.items);
      }
    };
    const locks = typeof navigator !== "undefined" ? navigator.locks : undefined;
    if (this.storage.lasting && locks) {
      await locks.request(this.prefix + "adopt", take);
    } else {
      take();
    }
    this.write();
  }

  /** Forgets everything kept, this page's and any other's. */
  clear(): void {
    this.items = [];
    for (const name of this.storage.names(this.prefix)) this.storage.remove(name);
    this.write();
  }

  private merge(adopted: Item[]): void {
    const known = new Set(this.items.map((item) => item.id));
    const fresh = adopted.filter((item) => isItem(item) && !known.has(item.id));
    if (fresh.length === 0) return;
    this.items = [...fresh, ...this.items].sort((a, b) => a.at - b.at);
    this.bound();
  }

  /** Drops what is too old, then the oldest beyond the bounds. */
  private bound(): void {
    const oldest = Date.now() - MAX_AGE_MS;
    let kept = this.items.filter((item) => item.at >= oldest);
    let bytes = kept.reduce((sum, item) => sum + item.bytes, 0);
    let first = 0;
    while (kept.length - first > MAX_ITEMS || (bytes > MAX_BYTES && first < kept.length)) {
      bytes -= kept[first].bytes;
      first++;
    }
    kept = kept.slice(first);
    const dropped = this.items.length - kept.length;
    if (dropped > 0) {
      this.dropped += dropped;
      console.warn(`Produktly: ${dropped} kept events dropped (older than 24 h, or over ${MAX_ITEMS} events or 1 MB)`);
      this.items = kept;
    }
  }
}

function parse(text: string | null): Record | null {
  if (text === null) return null;
  try {
    const record = JSON.parse(text) as Record;
    return Array.isArray(record.items) ? record : null;
  } catch {
    return null;
  }
}

function isItem(item: Item): boolean {
  return (
    typeof item === "object" &&
    item !== null &&
    typeof item.id === "string" &&
    (item.kind === "track" || item.kind === "identify") &&
    typeof item.at === "number" &&
    typeof item.body === "string" &&
    typeof item.bytes === "number"
  );
}
