// Unit tests of the tracker as a page uses it (Node's test runner, the page
// faked by ./fakes): consent and the anonymous id through a full quota and a
// key rotation, consent first, the shared anonymous id, beforeSend, events
// that cannot be serialised, and destroy().
import assert from "node:assert/strict";
import { afterEach, test } from "node:test";
import { createTracker, type TrackerOptions } from "../../src/index";
import { COOKIE } from "../../src/identity";
import { FakeLocalStorage, installPage, type Page } from "./fakes";

const ENDPOINT = "https://source.example";
const WORKSPACE = "wk_1";
const PREFIX = `produktly:${WORKSPACE}:`;

let pages: Page[] = [];
let trackers: ReturnType<typeof createTracker>[] = [];
afterEach(() => {
  for (const tracker of trackers.splice(0)) tracker.destroy();
  for (const page of pages.splice(0)) page.end();
});

function open(options: Partial<TrackerOptions> = {}, local?: FakeLocalStorage, href?: string) {
  const page = installPage(href, local);
  pages.push(page);
  const tracker = createTracker({ endpoint: ENDPOINT, key: "pk_1", workspace: WORKSPACE, ...options });
  trackers.push(tracker);
  return { page, tracker };
}

/** The next page of the origin: the same storage, a new tracker. */
function next(page: Page, options: Partial<TrackerOptions> = {}) {
  trackers.splice(0).forEach((tracker) => tracker.destroy());
  pages.splice(0).forEach((old) => old.end());
  return open(options, page.local);
}

const sent = (page: Page) => page.requests.flatMap((request) => request.body.batch ?? []);
const tick = (ms = 0) => new Promise((resolve) => setTimeout(resolve, ms));

/** Waits up to 5 s for `done`. */
async function until(done: () => boolean, what: string): Promise<void> {
  for (let waited = 0; !done(); waited += 20) {
    assert.ok(waited < 5000, `${what}: not within 5 s`);
    await tick(20);
  }
}

test("with a full quota, an opted-out user stays opted out and nothing is sent", async () => {
  const { page, tracker } = open();
  tracker.optOut();
  page.local.values.set("host_app_cache", "x".repeat(1000));
  page.local.fill();
  const again = next(page);
  assert.equal(again.tracker.track("tour_start", { tour_id: "t" }), null);
  await again.tracker.flush();
  assert.equal(again.page.requests.length, 0);
});

test("with a full quota, the kept anonymous id is still used", async () => {
  const { page, tracker } = open();
  tracker.track("tour_start", { tour_id: "t" });
  await tracker.flush();
  const id = sent(page)[0].anonymousId;
  page.local.fill();
  const again = next(page);
  again.tracker.track("tour_start", { tour_id: "t" });
  await again.tracker.flush();
  assert.equal(sent(again.page)[0].anonymousId, id);
});

test("an opt-out that storage refuses holds on the page, with a warning", async () => {
  const { page, tracker } = open();
  page.local.fill();
  tracker.optOut();
  assert.equal(tracker.track("tour_start", { tour_id: "t" }), null);
  assert.ok(page.warnings.some((w) => w.includes("the opt-out holds on this page only")), String(page.warnings));
});

test("the opt-out is written before the queue is cleared, which makes room for it", () => {
  const { page, tracker } = open();
  page.local.values.set("host_app_cache", "x".repeat(1000));
  tracker.track("tour_start", { tour_id: "t", blob: "y".repeat(2000) });
  return tick().then(() => {
    page.local.fill();
    tracker.optOut();
    assert.equal(page.local.getItem(PREFIX + "consent"), "out", "kept once the queue made room");
    assert.deepEqual(page.warnings, []);
  });
});

test("a retry wait that storage refuses is kept in memory: no tight loop", async () => {
  const { page, tracker } = open();
  page.local.fill();
  page.answers.push({ status: 503, headers: { "Retry-After": "60" } });
  tracker.track("tour_start", { tour_id: "t" });
  await tracker.flush();
  tracker.track("tour_start", { tour_id: "t" });
  await tick(1200); // past the batching delay
  assert.equal(page.requests.length, 1, "no request before Retry-After");
});

test("after a key rotation, consent and the anonymous id hold and kept events go with the new key", async () => {
  const { page, tracker } = open();
  tracker.track("tour_start", { tour_id: "t" });
  await tracker.flush();
  const id = sent(page)[0].anonymousId;
  page.answers.push({ status: 503 });
  tracker.track("tour_start", { tour_id: "kept" });
  await tracker.flush();
  const rotated = next(page, { key: "pk_2" });
  await rotated.tracker.flush();
  const [event] = sent(rotated.page);
  assert.ok(rotated.page.requests[0].url.endsWith("?key=pk_2"));
  assert.equal(event.anonymousId, id);
  rotated.tracker.optOut();
  const again = next(rotated.page, { key: "pk_3" });
  assert.equal(again.tracker.track("tour_start", { tour_id: "t" }), null, "the opt-out outlives the rotation");
});

test("what an earlier version kept under the ingest key moves under the workspace", () => {
  const local = new FakeLocalStorage();
  local.setItem("produktly:pk_1:anonymous_id", "old-anonymous-id");
  local.setItem("produktly:pk_1:opted_out", "1");
  const { page, tracker } = open({}, local);
  assert.equal(tracker.track("tour_start", { tour_id: "t" }), null, "the opt-out moved");
  assert.equal(page.local.getItem(PREFIX + "anonymous_id"), "old-anonymous-id");
  assert.deepEqual(
    [...page.local.values.keys()].filter((name) => name.startsWith("produktly:pk_1:")),
    [],
  );
});

test("consent first: nothing stored, no cookie, nothing sent until optIn, which later pages remember", async () => {
  const { page, tracker } = open({ startOptedOut: true, cookieDomain: "example.com" });
  assert.equal(tracker.track("tour_start", { tour_id: "t" }), null);
  tracker.identify("u1");
  await tracker.flush();
  assert.deepEqual(page.local.written, []);
  assert.deepEqual(page.cookies.set, []);
  assert.equal(page.requests.length, 0);
  tracker.optIn();
  assert.ok(tracker.track("tour_start", { tour_id: "t" }));
  await tracker.flush();
  assert.equal(sent(page).length, 1);
  const again = next(page, { startOptedOut: true });
  assert.ok(again.tracker.track("tour_start", { tour_id: "t" }), "the consent is remembered");
});

test("the page's own anonymous id, else analytics.js's, else the SDK's in a cookie on cookieDomain", async () => {
  const given = open({ getAnonymousId: () => "page-visitor" });
  given.tracker.track("tour_start", { tour_id: "t" });
  await given.tracker.flush();
  assert.equal(sent(given.page)[0].anonymousId, "page-visitor");

  const local = new FakeLocalStorage();
  local.setItem("ajs_anonymous_id", JSON.stringify("ajs-visitor"));
  const fromStorage = next(given.page);
  fromStorage.page.local.setItem("ajs_anonymous_id", JSON.stringify("ajs-visitor"));
  fromStorage.tracker.track("tour_start", { tour_id: "t" });
  await fromStorage.tracker.flush();
  assert.equal(sent(fromStorage.page)[0].anonymousId, "ajs-visitor");

  const cookie = next(fromStorage.page);
  cookie.page.local.removeItem("ajs_anonymous_id");
  cookie.page.cookies.write("ajs_anonymous_id=%22ajs-cookie-visitor%22");
  cookie.tracker.track("tour_start", { tour_id: "t" });
  await cookie.tracker.flush();
  assert.equal(sent(cookie.page)[0].anonymousId, "ajs-cookie-visitor");

  const own = open({ cookieDomain: "example.com" }, new FakeLocalStorage());
  own.tracker.track("tour_start", { tour_id: "t" });
  await own.tracker.flush();
  const id = sent(own.page)[0].anonymousId!;
  assert.ok(own.page.cookies.set.some((text) => text.startsWith(`${COOKIE}=${id}; Domain=example.com;`)), String(own.page.cookies.set));
});

test("getUserId answering null after a user was known makes the events anonymous", async () => {
  let user: string | null = "u1";
  const { page, tracker } = open({ getUserId: () => user });
  tracker.identify("u1");
  tracker.track("tour_start", { tour_id: "t" });
  user = null;
  tracker.track("tour_start", { tour_id: "t" });
  await tracker.flush();
  await tracker.flush();
  const events = sent(page);
  assert.equal(events[0].userId, "u1");
  assert.equal(events[1].userId, undefined);
});

test("beforeSend changes or drops an event, and keeps the SDK's messageId", async () => {
  const { page, tracker } = open({
    beforeSend: (event) => {
      if (event.properties.drop) return null;
      if (event.properties.fail) throw new Error("redaction failed");
      return { ...event, messageId: "not-this", properties: { ...event.properties, email: "[redacted]" } };
    },
  });
  const id = tracker.track("tour_start", { tour_id: "t", email: "a@example.com" });
  assert.equal(tracker.track("tour_start", { tour_id: "t", drop: true }), null);
  assert.equal(tracker.track("tour_start", { tour_id: "t", fail: true }), null);
  await tracker.flush();
  const events = sent(page) as unknown as { messageId: string; properties: { email: string } }[];
  assert.equal(events.length, 1);
  assert.equal(events[0].messageId, id);
  assert.equal(events[0].properties.email, "[redacted]");
  assert.ok(page.warnings.some((w) => w.includes("beforeSend threw")));
});

test("a property that cannot be serialised drops that event with a warning, and nothing throws", async () => {
  const { page, tracker } = open();
  const circular: { self?: unknown } = {};
  circular.self = circular;
  assert.equal(tracker.track("tour_start", { tour_id: "t", circular }), null);
  assert.equal(tracker.track("tour_start", { tour_id: "t", big: 10n }), null);
  assert.ok(tracker.track("tour_start", { tour_id: "t" }));
  await tracker.flush();
  assert.equal(sent(page).length, 1);
  assert.equal(tracker.dropped, 2);
  assert.equal(page.warnings.filter((w) => w.includes("cannot be serialised")).length, 2);
});

test("destroy() removes every listener and timer, and leaves what waits for the next page", async () => {
  const { page, tracker } = open();
  await tick();
  const before = page.listeners();
  assert.ok(before > 0);
  page.answers.push({ status: 503 });
  tracker.track("tour_start", { tour_id: "t" });
  await tracker.flush();
  tracker.destroy();
  assert.equal(page.listeners(), 0);
  assert.equal(page.timers.active.size, 0);
  assert.equal(tracker.track("tour_start", { tour_id: "t" }), null);
  const again = next(page);
  await until(() => sent(again.page).length === 1, "the next tracker sends what waited");
});

test("another tab opting out leaves no timer spinning", async () => {
  const { page, tracker } = open();
  tracker.track("tour_start", { tour_id: "t" });
  await tick(10); // the event is kept
  // Another tab opts out; this tab's storage event may come late (or never, in a frozen tab).
  page.local.setItem(PREFIX + "consent", "out");
  const made = page.timers.made;
  await tick(1300); // past the batching delay
  assert.ok(page.timers.made - made <= 2, `${page.timers.made - made} timers set in 1.3 s`);
  assert.equal(page.requests.length, 0);
  page.window.dispatchEvent(Object.assign(new Event("storage"), { key: PREFIX + "consent" }));
  assert.equal(page.timers.active.size, 0, "and once the event comes, nothing waits");
});
