// A page for unit tests in Node: localStorage with a quota, cookies, the
// window's and document's events, fetch answered by a script, and every timer
// counted, so that a test can see what the tracker leaves running.

/** localStorage over a Map; a write that would pass `quota` characters throws as browsers do. */
export class FakeLocalStorage implements Storage {
  readonly values = new Map<string, string>();
  quota = Number.POSITIVE_INFINITY;
  /** Names written, in order (refused writes too). */
  readonly written: string[] = [];

  get length(): number {
    return this.values.size;
  }
  key(index: number): string | null {
    return [...this.values.keys()][index] ?? null;
  }
  getItem(name: string): string | null {
    return this.values.get(name) ?? null;
  }
  setItem(name: string, value: string): void {
    this.written.push(name);
    const others = this.used() - (this.values.has(name) ? name.length + this.values.get(name)!.length : 0);
    if (others + name.length + value.length > this.quota) {
      throw new DOMException("The quota has been exceeded.", "QuotaExceededError");
    }
    this.values.set(name, String(value));
  }
  removeItem(name: string): void {
    this.values.delete(name);
  }
  clear(): void {
    this.values.clear();
  }
  /** Characters held, names and values. */
  used(): number {
    let sum = 0;
    for (const [name, value] of this.values) sum += name.length + value.length;
    return sum;
  }
  /** No room left beyond what is held now. */
  fill(): void {
    this.quota = this.used();
  }
}

/** `document.cookie`'s behaviour, enough for the tracker: name=value pairs, Max-Age=0 deletes. */
export class FakeCookies {
  readonly values = new Map<string, string>();
  /** Every string assigned to document.cookie. */
  readonly set: string[] = [];
  read(): string {
    return [...this.values].map(([name, value]) => `${name}=${value}`).join("; ");
  }
  write(text: string): void {
    this.set.push(text);
    const [pair, ...attributes] = text.split(";").map((part) => part.trim());
    const [name, ...value] = pair.split("=");
    if (attributes.some((attribute) => attribute.toLowerCase() === "max-age=0")) this.values.delete(name);
    else this.values.set(name, value.join("="));
  }
}

export interface Answer {
  status: number;
  headers?: Record<string, string>;
  body?: unknown;
}

export interface Page {
  local: FakeLocalStorage;
  cookies: FakeCookies;
  window: EventTarget;
  document: EventTarget;
  /** Requests made, with their URL and parsed body. */
  requests: { url: string; body: { batch?: { messageId: string; anonymousId?: string; userId?: string }[] } }[];
  /** Answers for the next requests, in turn; then 200. */
  answers: Answer[];
  warnings: string[];
  /** Timers not yet fired or cleared, and how many were ever set. */
  timers: { active: Set<unknown>; made: number };
  /** Listeners the page holds now. */
  listeners(): number;
  end(): void;
}

/** Installs a page at `href` as Node's globals; `end()` restores them. */
export function installPage(href = "https://app.example.com/tours", local = new FakeLocalStorage()): Page {
  const saved = new Map<string, PropertyDescriptor | undefined>();
  const define = (name: string, value: unknown) => {
    if (!saved.has(name)) saved.set(name, Object.getOwnPropertyDescriptor(globalThis, name));
    Object.defineProperty(globalThis, name, { value, configurable: true, writable: true });
  };
  let listeners = 0;
  const counted = (target: EventTarget) => {
    const add = target.addEventListener.bind(target);
    const remove = target.removeEventListener.bind(target);
    target.addEventListener = (type: string, listener: EventListenerOrEventListenerObject | null) => {
      listeners++;
      add(type, listener);
    };
    target.removeEventListener = (type: string, listener: EventListenerOrEventListenerObject | null) => {
      listeners--;
      remove(type, listener);
    };
    return target;
  };
  const cookies = new FakeCookies();
  const windowTarget = counted(new EventTarget());
  Object.defineProperty(windowTarget, "localStorage", { get: () => local });
  const documentTarget = counted(new EventTarget());
  Object.defineProperties(documentTarget, {
    cookie: { get: () => cookies.read(), set: (text: string) => cookies.write(text) },
    title: { value: "Tours" },
    referrer: { value: "" },
    visibilityState: { value: "visible" },
  });
  const page: Page = {
    local,
    cookies,
    window: windowTarget,
    document: documentTarget,
    requests: [],
    answers: [],
    warnings: [],
    timers: { active: new Set(), made: 0 },
    listeners: () => listeners,
    end: () => {
      for (const timer of page.timers.active) clearTimeout(timer as ReturnType<typeof setTimeout>);
      for (const [name, descriptor] of saved) {
        if (descriptor) Object.defineProperty(globalThis, name, descriptor);
        else delete (globalThis as Record<string, unknown>)[name];
      }
    },
  };
  const realSetTimeout = globalThis.setTimeout;
  const realSetInterval = globalThis.setInterval;
  const realClearTimeout = globalThis.clearTimeout;
  const realClearInterval = globalThis.clearInterval;
  define("setTimeout", (callback: () => void, ms?: number) => {
    page.timers.made++;
    const timer = realSetTimeout(() => {
      page.timers.active.delete(timer);
      callback();
    }, ms);
    page.timers.active.add(timer);
    return timer;
  });
  define("setInterval", (callback: () => void, ms?: number) => {
    page.timers.made++;
    const timer = realSetInterval(callback, ms);
    page.timers.active.add(timer);
    return timer;
  });
  define("clearTimeout", (timer: ReturnType<typeof setTimeout> | undefined) => {
    page.timers.active.delete(timer);
    realClearTimeout(timer);
  });
  define("clearInterval", (timer: ReturnType<typeof setInterval> | undefined) => {
    page.timers.active.delete(timer);
    realClearInterval(timer);
  });
  define("window", windowTarget);
  define("document", documentTarget);
  define("location", new URL(href));
  define("navigator", { language: "en-US" });
  define("screen", { width: 1440, height: 900 });
  define("devicePixelRatio", 2);
  define("fetch", async (url: string, init: { body: string }) => {
    page.requests.push({ url, body: JSON.parse(init.body) });
    const answer = page.answers.shift() ?? { status: 200, body: { success: true } };
    return new Response(JSON.stringify(answer.body ?? {}), { status: answer.status, headers: answer.headers });
  });
  define("console", { ...console, warn: (text: string) => page.warnings.push(String(text)) });
  return page;
}
