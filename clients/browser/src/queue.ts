// What waits to be sent, kept in storage so that it outlives the page: each
// page writes its own record (no two pages write one record), and a page that
// goes away releases its record for the next page of the origin to adopt and
// send, with the same messageIds. Adoption runs under a Web Lock where the
// browser has them, and by a claim written and read back where it has not
// (plain http pages), so two tabs never adopt (and send) the same events. A
// page that finds its record gone (adopted while the page was frozen) forgets
// its items: the adopter sends them.

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
  /** A page adopting the record without Web Locks: the last claim wins. */
  claim?: { page: string; at: number };
  items: Item[];
}

/** Most items a page keeps, and most bytes all the origin's records hold:
 *  beyond either, the page's oldest go. */
export const MAX_ITEMS = 1000;
export const MAX_BYTES = 1_000_000;
/** Segment de-duplicates messageIds for 24 h: older events are not resent. */
export const MAX_AGE_MS = 24 * 3600 * 1000;
/** A live page rewrites its record this often while it holds items. */
const HEARTBEAT_MS = 60_000;
/** A record not written for this long belongs to a page that died. */
const ORPHANED_MS = 5 * 60_000;
/** Without Web Locks: how long claims are left to settle before the winner takes
 *  the record, and how long a claim keeps others off it. */
const CLAIM_SETTLE_MS = 150;
const CLAIM_HOLD_MS = 2000;

export class Queue {
  items: Item[] = [];
  /** Items dropped on this page: over the bounds, or too old. */
  dropped = 0;
  /** The page went away: its record is the next page's (until it comes back). */
  private released = false;
  private writing = false;
  /** This page's record is in storage, as last written. */
  private stored = false;
  /** The user was told, once, that storage refused the record. */
  private warned = false;
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
    this.stopHeartbeat();
    this.write();
  }

  /** Writes the record now, within the origin's byte cap. A write storage
   *  refuses (quota) removes the record, so no page adopts a stale copy. */
  write(): void {
    const records = this.storage.names(this.prefix);
    this.checkAdopted(records);
    if (!this.keeping()) this.items = [];
    this.bound(MAX_BYTES - this.othersBytes(records));
    if (this.items.length === 0) {
      this.forgetRecord();
      return;
    }
    const record: Record = { at: Date.now(), released: this.released, items: this.items };
    const text = JSON.stringify(record);
    this.stored = this.storage.set(this.own, text);
    if (!this.stored) {
      // The stale copy goes first: what it held may be room enough.
      this.storage.remove(this.own);
      this.stored = this.storage.set(this.own, text);
    }
    if (!this.stored) {
      this.storage.remove(this.own);
      if (!this.warned) console.warn(`Produktly: storage is full; ${this.items.length} waiting events are kept on this page only`);
      this.warned = true;
    }
    if (!this.released && this.heartbeat === undefined) {
      this.heartbeat = setInterval(() => this.write(), HEARTBEAT_MS);
    }
  }

  /** The page came back (back-forward cache, or unfrozen): its record,
   *  unless another page adopted it meanwhile (then that page sends the items). */
  reclaim(): void {
    this.released = false;
    this.write();
  }

  /** Forgets the items when another page adopted this page's record (it was
   *  released, or this page was frozen long enough to seem dead); `records`
   *  are the names of the origin's records. */
  checkAdopted(records = this.storage.names(this.prefix)): void {
    if (this.stored && !records.includes(this.own)) {
      this.items = [];
      this.stored = false;
    }
  }

  /** No more timers; what waits stays in storage. */
  stop(): void {
    this.stopHeartbeat();
  }

  /** Takes over the records of pages that went away or died. */
  async adopt(): Promise<void> {
    const locks = typeof navigator !== "undefined" ? navigator.locks : undefined;
    if (!this.storage.lasting) {
      this.take(this.adoptable());
    } else if (locks) {
      await locks.request(this.prefix + "adopt", () => this.take(this.adoptable()));
    } else {
      await this.claimThenTake();
    }
    this.write();
  }

  /** The other records to adopt: released, or not written for so long that their page died. */
  private adoptable(): string[] {
    const now = Date.now();
    return this.storage.names(this.prefix).filter((name) => {
      if (name === this.own) return false;
      const record = parse(this.storage.get(name));
      if (record === null) return true;
      const claimed = record.claim !== undefined && record.claim.page !== this.page && now - record.claim.at < CLAIM_HOLD_MS;
      return !claimed && (record.released || now - record.at >= ORPHANED_MS);
    });
  }

  private take(names: string[]): void {
    for (const name of names) {
      const record = parse(this.storage.get(name));
      this.storage.remove(name);
      if (record !== null) this.merge(record.items);
    }
  }

  /** Without Web Locks: each candidate record gets this page's claim; after
   *  the claims of other tabs have had time to land, the last one written
   *  stands, and only its page takes the record. */
  private async claimThenTake(): Promise<void> {
    const claimed = this.adoptable().filter((name) => {
      const record = parse(this.storage.get(name));
      if (record === null) return false;
      return this.storage.set(name, JSON.stringify({ ...record, claim: { page: this.page, at: Date.now() } }));
    });
    if (claimed.length === 0) return;
    await new Promise((resolve) => setTimeout(resolve, CLAIM_SETTLE_MS));
    this.take(claimed.filter((name) => parse(this.storage.get(name))?.claim?.page === this.page));
  }

  /** Forgets everything kept, this page's and any other's. */
  clear(): void {
    this.items = [];
    for (const name of this.storage.names(this.prefix)) this.storage.remove(name);
    this.forgetRecord();
  }

  private forgetRecord(): void {
    this.storage.remove(this.own);
    this.stored = false;
    this.stopHeartbeat();
  }

  private stopHeartbeat(): void {
    clearInterval(this.heartbeat);
    this.heartbeat = undefined;
  }

  /** What the other pages' records hold, in characters (about bytes: the bodies are mostly ASCII). */
  private othersBytes(records: string[]): number {
    if (!this.storage.lasting) return 0;
    return records
      .filter((name) => name !== this.own)
      .reduce((sum, name) => sum + (this.storage.get(name)?.length ?? 0), 0);
  }

  private merge(adopted: Item[]): void {
    const known = new Set(this.items.map((item) => item.id));
    const fresh = adopted.filter((item) => isItem(item) && !known.has(item.id));
    if (fresh.length === 0) return;
    this.items = [...fresh, ...this.items].sort((a, b) => a.at - b.at);
  }

  /** Drops what is too old, then the oldest beyond the bounds. */
  private bound(maxBytes: number): void {
    const oldest = Date.now() - MAX_AGE_MS;
    let kept = this.items.filter((item) => item.at >= oldest);
    let bytes = kept.reduce((sum, item) => sum + item.bytes, 0);
    let first = 0;
    while (kept.length - first > MAX_ITEMS || (bytes > maxBytes && first < kept.length)) {
      bytes -= kept[first].bytes;
      first++;
    }
    kept = kept.slice(first);
    const dropped = this.items.length - kept.length;
    if (dropped > 0) {
      this.dropped += dropped;
      console.warn(`Produktly: ${dropped} kept events dropped (older than 24 h, or over ${MAX_ITEMS} events or the origin's 1 MB)`);
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
