// Browser scenarios of the SDK, each in a fresh profile of Debian's Chromium
// driven by playwright-core. tests/browser.rs (cargo test) runs one:
//
//   node test/scenarios.mjs <scenario>
//
// with the pages' site (SITE), the same site under two subdomains of a test
// host (APP_HOST, WWW_HOST: `*.shop.test`, mapped to 127.0.0.1, plain http, so
// without Web Locks), a page on another origin (AWAY), the gate in front of
// the service (CONTROL: its commands), the service's admin API (SERVICE,
// TOKEN, WORKSPACE) and Chromium (CHROMIUM) in the environment. It prints one
// line, `RESULT <json>`: what the page tracked and logged; the Rust test
// checks what reached Segment and the gate.
import { chromium } from "playwright-core";

const { SITE, APP_HOST, WWW_HOST, AWAY, CONTROL, SERVICE, TOKEN, WORKSPACE, CHROMIUM } = process.env;
const scenario = process.argv[2];

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

async function command(name, query = "") {
  const answer = await fetch(`${CONTROL}/${name}${query}`, { method: "POST" });
  if (!answer.ok) throw new Error(`gate ${name}: ${answer.status}`);
}

/** The workspace's new ingest key (the old one stops working). */
async function rotateKey() {
  const answer = await fetch(`${SERVICE}/admin/v1/workspaces/${WORKSPACE}/ingest-key/rotate`, {
    method: "POST",
    headers: { authorization: `Bearer ${TOKEN}` },
  });
  if (!answer.ok) throw new Error(`rotate: ${answer.status}`);
  return (await answer.json()).ingest_key;
}

/** The host app fills localStorage's quota with its own entries. */
function fillStorage(page) {
  return page.evaluate(() => {
    let written = 0;
    for (let size = 1 << 20; size >= 8; ) {
      try {
        localStorage.setItem(`host_cache_${written}`, "x".repeat(size));
        written++;
      } catch {
        size >>= 2;
      }
    }
    return written;
  });
}

/** Every localStorage entry of the page's origin but the host app's fillers, and its cookies. */
function storageOf(page) {
  return page.evaluate(() => ({
    local: Object.keys(localStorage).filter((k) => !k.startsWith("host_cache_")),
    cookie: document.cookie,
  }));
}

/** A page of the site with its tracker; warnings and errors collected. */
async function open(context, report, path = "/app", base = SITE) {
  const page = await context.newPage();
  page.on("console", (message) => {
    if (message.type() === "warning") report.warnings.push(message.text());
    if (message.type() === "log" && message.text().startsWith("tracked ")) report.tracked.push(message.text().slice(8));
  });
  page.on("pageerror", (error) => report.errors.push(String(error)));
  page.on("requestfailed", (request) => report.failed.push(`${request.method()} ${request.url()}: ${request.failure()?.errorText}`));
  await page.goto(base + path);
  await page.waitForFunction(() => window.tracker !== undefined);
  return page;
}

/** Tracks `count` tour steps on the page; their messageIds go to the report. */
async function track(page, report, count, properties = {}) {
  const ids = await page.evaluate(
    ({ count, properties }) =>
      Array.from({ length: count }, (_, i) =>
        window.tracker.track("tour_step", { tour_id: "t1", step_id: `s${i}`, step_index: i, ...properties }),
      ),
    { count, properties },
  );
  report.tracked.push(...ids);
  return ids;
}

/** The tracker's keys in the page's localStorage that start with `part`, with their values. */
function stored(page, part = "") {
  return page.evaluate(
    (part) =>
      Object.fromEntries(
        Object.keys(localStorage)
          .filter((k) => k.startsWith("produktly:") && k.includes(part))
          .map((k) => [k, localStorage.getItem(k)]),
      ),
    part,
  );
}

/** The events the page's origin keeps for later. */
function kept(page) {
  return stored(page, ":queue:");
}

const scenarios = {
  // Click, and the page navigates to another origin at once: 20 times.
  async click_then_navigate(context, report) {
    for (let i = 0; i < 20; i++) {
      const page = await open(context, report);
      await Promise.all([page.waitForURL(`${AWAY}/**`), page.click("#go")]);
      await page.close();
    }
    // The user comes back once more: a click whose keepalive request the
    // browser cut off goes with the next page, as each earlier click's does.
    const next = await open(context, report);
    await next.evaluate(() => window.tracker.flush());
  },

  // The service out of reach while 10 events are tracked; the page goes away;
  // the service comes back; the next page of the origin sends them.
  async out_of_reach_then_next_page(context, report) {
    await command("down");
    const first = await open(context, report);
    await track(first, report, 10);
    await sleep(1500);
    await first.goto(`${AWAY}/away`);
    await command("up");
    const next = await open(context, report);
    await next.evaluate(() => window.tracker.flush());
    report.kept = await kept(next);
  },

  // 503 with Retry-After: 5 while the page tracks an event a second for 30 s;
  // then the service recovers and everything is sent.
  async retry_after(context, report) {
    await command("unavailable", "?retry_after=5");
    const page = await open(context, report);
    for (let i = 0; i < 30; i++) {
      await track(page, report, 1, { second: i });
      await sleep(1000);
    }
    await command("available");
    report.recoveredAt = Date.now();
    await page.evaluate(() => window.tracker.flush());
    report.flushedAfterMs = Date.now() - report.recoveredAt;
    report.kept = await kept(page);
  },

  // A valid event, one the service refuses, one over 64 KB, a valid one.
  async refused_and_too_large(context, report) {
    const page = await open(context, report);
    await track(page, report, 1, { which: "first" });
    await page.evaluate(() => window.tracker.flush());
    report.refused = await page.evaluate(() => window.tracker.track("no_such_event", { x: 1 }));
    await page.evaluate(() => window.tracker.flush());
    report.tooLarge = await page.evaluate(() => window.tracker.track("tour_start", { tour_id: "t", blob: "x".repeat(70000) }));
    await track(page, report, 1, { which: "last" });
    await page.evaluate(() => window.tracker.flush());
    report.dropped = await page.evaluate(() => window.tracker.dropped);
    report.kept = await kept(page);
  },

  // The workspace does not allow this origin: the page keeps tracking for 30 s.
  async origin_not_allowed(context, report) {
    const page = await open(context, report);
    for (let i = 0; i < 30; i++) {
      await track(page, report, 1);
      await sleep(1000);
    }
  },

  // localStorage throws (strict privacy settings): the tracker works.
  async storage_throws(context, report) {
    await context.addInitScript(() => {
      Object.defineProperty(window, "localStorage", {
        get() {
          throw new DOMException("The operation is insecure.", "SecurityError");
        },
      });
    });
    const page = await open(context, report);
    await track(page, report, 3);
    await page.evaluate(() => window.tracker.flush());
  },

  // An anonymous event, then identify, both while the service is out of
  // reach; then it is back: the event reaches Segment with the user.
  async identify_while_out_of_reach(context, report) {
    await command("down");
    const page = await open(context, report);
    await track(page, report, 1);
    await page.evaluate(() => window.tracker.identify("signed-in-user"));
    await sleep(1000);
    await command("up");
    await page.evaluate(() => window.tracker.flush());
    await sleep(500);
    await page.evaluate(() => window.tracker.flush());
    report.kept = await kept(page);
  },

  // optOut: nothing sent, nothing kept, on this page and the next; optIn: sent again.
  async opt_out(context, report) {
    const page = await open(context, report);
    await track(page, report, 1, { phase: "before" });
    await page.evaluate(() => window.tracker.optOut());
    report.optedOutTracks = await page.evaluate(() => [window.tracker.track("tour_start", { tour_id: "t" })]);
    await page.evaluate(() => window.tracker.identify("someone"));
    await sleep(2000);
    report.keptAfterOptOut = await stored(page);
    await page.reload();
    await page.waitForFunction(() => window.tracker !== undefined);
    report.optedOutTracks.push(await page.evaluate(() => window.tracker.track("tour_start", { tour_id: "t" })));
    await sleep(2000);
    report.keptOnNextPage = await stored(page);
    await page.evaluate(() => window.tracker.optIn());
    report.afterOptIn = await page.evaluate(() => window.tracker.track("tour_start", { tour_id: "after-opt-in" }));
    await page.evaluate(() => window.tracker.flush());
  },

  // The context analysts use: a page reached from a campaign with a token in
  // its fragment, then a page whose URL is 10 KB long.
  async context(context, report) {
    const campaign = await open(context, report, "/app?utm_source=x&utm_medium=email&utm_campaign=spring#token=secret");
    await track(campaign, report, 1);
    await campaign.evaluate(() => window.tracker.flush());
    const long = await open(context, report, `/app?q=${"a".repeat(10_000)}`);
    await track(long, report, 1);
    await long.evaluate(() => window.tracker.flush());
  },

  // Events kept by a page that went away while the service was out of reach;
  // then two tabs of the origin open at once: each event is sent once.
  async two_tabs(context, report, base = SITE) {
    await command("down");
    const first = await open(context, report, "/app", base);
    report.locks = await first.evaluate(() => "locks" in navigator);
    await track(first, report, 5);
    await sleep(1200);
    await first.goto(`${AWAY}/away`);
    await command("up");
    const [a, b] = await Promise.all([open(context, report, "/app", base), open(context, report, "/app", base)]);
    await Promise.all([a.evaluate(() => window.tracker.flush()), b.evaluate(() => window.tracker.flush())]);
    await sleep(2500);
    report.kept = { ...(await kept(a)), ...(await kept(b)) };
  },

  // The same on plain http, where browsers have no Web Locks.
  async two_tabs_without_locks(context, report) {
    await scenarios.two_tabs(context, report, APP_HOST);
  },

  // The host app filled localStorage: the anonymous id kept before is still
  // used; a user who opted out (while there was room) stays opted out.
  async full_quota(context, report) {
    const page = await open(context, report);
    await track(page, report, 1, { phase: "before" });
    await page.evaluate(() => window.tracker.flush());
    report.fillers = await fillStorage(page);
    await page.reload();
    await page.waitForFunction(() => window.tracker !== undefined);
    await track(page, report, 1, { phase: "full" });
    await page.evaluate(() => window.tracker.flush());
    await page.evaluate(() => localStorage.removeItem("host_cache_0"));
    await page.evaluate(() => window.tracker.optOut());
    await fillStorage(page);
    await page.reload();
    await page.waitForFunction(() => window.tracker !== undefined);
    report.optedOutTracks = [];
    for (let i = 0; i < 3; i++) {
      report.optedOutTracks.push(await page.evaluate(() => window.tracker.track("tour_start", { tour_id: "t" })));
      await sleep(700);
    }
    report.stored = await storageOf(page);
  },

  // Events kept under the old key while the service is out of reach; the key
  // is rotated; the next page, with the new key, sends them and keeps the
  // anonymous id; an opt-out then outlives another rotation.
  async key_rotation(context, report) {
    const first = await open(context, report);
    await track(first, report, 1, { phase: "old key" });
    await first.evaluate(() => window.tracker.flush());
    await command("down");
    await track(first, report, 3, { phase: "kept under the old key" });
    await sleep(1500);
    await first.goto(`${AWAY}/away`);
    const rotated = await rotateKey();
    await command("up");
    const next = await open(context, report, `/app?key=${rotated}`);
    await next.evaluate(() => window.tracker.flush());
    await track(next, report, 1, { phase: "new key" });
    await next.evaluate(() => window.tracker.flush());
    report.kept = await kept(next);
    await next.evaluate(() => window.tracker.optOut());
    const again = await rotateKey();
    const third = await open(context, report, `/app?key=${again}`);
    report.optedOutTracks = [await third.evaluate(() => window.tracker.track("tour_start", { tour_id: "t" }))];
    await sleep(1500);
    report.stored = await storageOf(third);
  },

  // startOptedOut: nothing sent and nothing stored (not a key, not a cookie)
  // until optIn(); then sent, and later pages remember the consent.
  async consent_first(context, report) {
    const path = "/app?consent_first=1&cookie_domain=shop.test";
    const page = await open(context, report, path, APP_HOST);
    report.optedOutTracks = await page.evaluate(() => [
      window.tracker.track("tour_start", { tour_id: "t" }),
      window.tracker.track("tour_step", { tour_id: "t", step_id: "s", step_index: 0 }),
    ]);
    await page.evaluate(() => window.tracker.identify("someone"));
    await page.evaluate(() => window.tracker.flush());
    await sleep(1500);
    report.storedBeforeOptIn = await storageOf(page);
    await page.evaluate(() => window.tracker.optIn());
    await track(page, report, 1, { phase: "after optIn" });
    await page.evaluate(() => window.tracker.flush());
    report.storedAfterOptIn = await storageOf(page);
    await page.reload();
    await page.waitForFunction(() => window.tracker !== undefined);
    await track(page, report, 1, { phase: "next page" });
    await page.evaluate(() => window.tracker.flush());
  },

  // One visitor across app. and www. of a site: the SDK's own id in a cookie
  // on the parent domain, then analytics.js's ajs_anonymous_id (its
  // localStorage entry, then its cookie) when the site has it.
  async shared_anonymous_id(context, report) {
    const path = "/app?cookie_domain=shop.test";
    const app = await open(context, report, path, APP_HOST);
    report.own = (await track(app, report, 1))[0];
    await app.evaluate(() => window.tracker.flush());
    const www = await open(context, report, path, WWW_HOST);
    report.ownOnWww = (await track(www, report, 1))[0];
    await www.evaluate(() => window.tracker.flush());
    report.cookie = await www.evaluate(() => document.cookie);
    await www.evaluate(() => localStorage.setItem("ajs_anonymous_id", JSON.stringify("ajs-visitor-local")));
    report.ajsLocal = (await track(www, report, 1))[0];
    await www.evaluate(() => window.tracker.flush());
    await app.evaluate(() => (document.cookie = "ajs_anonymous_id=%22ajs-visitor-cookie%22; Domain=shop.test; Path=/"));
    report.ajsCookie = (await track(app, report, 1))[0];
    await app.evaluate(() => window.tracker.flush());
  },

  // A tab holding kept events is frozen long enough for another tab to
  // adopt its record and send them; back, it sends none of them again.
  async frozen_tab(context, report) {
    await command("down");
    const frozen = await open(context, report);
    await track(frozen, report, 3);
    await sleep(1500);
    const cdp = await context.newCDPSession(frozen);
    await cdp.send("Page.setWebLifecycleState", { state: "frozen" });
    // Five minutes pass for the frozen tab: its record stops looking alive.
    const plain = await context.newPage();
    await plain.goto(SITE + "/plain");
    report.aged = await plain.evaluate(() => {
      const names = Object.keys(localStorage).filter((k) => k.includes(":queue:"));
      for (const name of names) {
        const record = JSON.parse(localStorage.getItem(name));
        localStorage.setItem(name, JSON.stringify({ ...record, at: record.at - 6 * 60_000 }));
      }
      return names.length;
    });
    await command("up");
    const adopter = await open(context, report);
    await adopter.evaluate(() => window.tracker.flush());
    await cdp.send("Page.setWebLifecycleState", { state: "active" });
    // Back, with the network: the tab would send at once what it still held.
    await frozen.evaluate(() => {
      dispatchEvent(new Event("online"));
      return window.tracker.flush();
    });
    await sleep(2000);
    report.kept = { ...(await kept(frozen)), ...(await kept(adopter)) };
  },
};

const browser = await chromium.launch({
  executablePath: CHROMIUM,
  args: [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-quic",
    "--host-resolver-rules=MAP *.shop.test 127.0.0.1",
  ],
});
const report = { tracked: [], warnings: [], errors: [], failed: [] };
try {
  if (!scenarios[scenario]) throw new Error(`no scenario ${scenario}`);
  const context = await browser.newContext();
  await scenarios[scenario](context, report);
  await context.close();
} catch (error) {
  report.errors.push(`the scenario failed: ${error.stack ?? error}`);
} finally {
  await browser.close();
}
console.log("RESULT " + JSON.stringify(report));
