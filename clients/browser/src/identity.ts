// The browser's anonymous id, one across the customer's site where it can be:
// the page's own (`getAnonymousId`), else analytics.js's (`ajs_anonymous_id`,
// its cookie or its localStorage entry) so that Segment sees one visitor, not
// two, else the SDK's own, kept in localStorage and, with `cookieDomain`, in a
// first-party cookie on that domain, which its subdomains share.

import { attempt, type Storage } from "./storage";

/** analytics.js's name for the anonymous id, as cookie and localStorage entry. */
const ANALYTICS_JS = "ajs_anonymous_id";
/** The SDK's own cookie, set only with `cookieDomain`. */
export const COOKIE = "produktly_anonymous_id";
const COOKIE_MAX_AGE_S = 365 * 24 * 3600;

export interface IdentityOptions {
  getAnonymousId?: () => string | null | undefined;
  cookieDomain?: string;
}

export class AnonymousId {
  constructor(
    private readonly storage: Storage,
    /** The storage name of the SDK's own id. */
    private readonly name: string,
    private readonly options: IdentityOptions,
    private readonly newId: () => string,
  ) {}

  /** The id to send now; made and kept when there is none yet. */
  current(): string {
    const given = usable(attempt(() => this.options.getAnonymousId?.(), undefined));
    if (given) return given;
    const shared = usable(decoded(cookie(ANALYTICS_JS))) ?? usable(decoded(this.storage.get(ANALYTICS_JS)));
    if (shared) return shared;
    const { cookieDomain } = this.options;
    const inCookie = cookieDomain ? usable(cookie(COOKIE)) : undefined;
    const inStorage = usable(this.storage.get(this.name));
    const id = inCookie ?? inStorage ?? this.newId();
    if (inStorage !== id) this.storage.set(this.name, id);
    if (cookieDomain && inCookie !== id) setCookie(COOKIE, id, cookieDomain, COOKIE_MAX_AGE_S);
    return id;
  }

  /** Forgets the SDK's own id (analytics.js's is its own to reset). */
  forget(): void {
    this.storage.remove(this.name);
    const { cookieDomain } = this.options;
    if (cookieDomain && cookie(COOKIE) !== null) setCookie(COOKIE, "", cookieDomain, 0);
  }
}

/** A cookie's value, or null. */
function cookie(name: string): string | null {
  const all = attempt(() => document.cookie, "");
  for (const part of all.split(";")) {
    const [key, ...value] = part.trim().split("=");
    if (key === name) return attempt(() => decodeURIComponent(value.join("=")), null);
  }
  return null;
}

function setCookie(name: string, value: string, domain: string, maxAge: number): void {
  const secure = location.protocol === "https:" ? "; Secure" : "";
  const text = `${name}=${encodeURIComponent(value)}; Domain=${domain}; Path=/; Max-Age=${maxAge}; SameSite=Lax${secure}`;
  attempt(() => (document.cookie = text), undefined);
}

/** analytics.js writes its id JSON-encoded (`"…"`) in localStorage, and in older versions' cookies. */
function decoded(value: string | null): string | null {
  if (value === null || !value.startsWith('"')) return value;
  const parsed = attempt(() => JSON.parse(value) as unknown, null);
  return typeof parsed === "string" ? parsed : null;
}

/** A non-empty id of sane length, else undefined. */
function usable(value: unknown): string | undefined {
  return typeof value === "string" && value.length > 0 && value.length <= 200 ? value : undefined;
}

