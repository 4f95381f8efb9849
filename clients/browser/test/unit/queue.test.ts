// Unit tests of the kept queue over a fake localStorage (Node's test runner):
// one byte cap across the origin's records, a write that storage refuses,
// a record adopted while its page was frozen, and adoption without Web Locks.
import assert from "node:assert/strict";
import { afterEach, test } from "node:test";
import { MAX_BYTES, Queue } from "../../src/queue";
import { layered } from "../../src/storage";
import { FakeLocalStorage, installPage, type Page } from "./fakes";

const PREFIX = "test:queue:";
let pages: Page[] = [];
let queues: Queue[] = [];
afterEach(() => {
  for (const queue of queues.splice(0)) queue.stop();
  for (const page of pages.splice(0)) page.end();
});

/** A faked page, ended after the test. */
function openPage(): Page {
  const page = installPage();
  pages.push(page);
  return page;
}

function queueOn(local: FakeLocalStorage, page: string) {
  const queue = new Queue(layered(local), PREFIX, page, () => true);
  queues.push(queue);
  return queue;
}

function item(id: string, bytes = 100) {
  const body = JSON.stringify({ messageId: id, pad: "x".repeat(Math.max(0, bytes - 40)) });
  return { id, kind: "track" as const, at: Date.now(), body, bytes: body.length };
}

test("one byte cap across the origin's records: a page's oldest go when others hold the rest", () => {
  const page = openPage();
  const other = queueOn(page.local, "other");
  for (let i = 0; i < 8; i++) other.add(item(`o${i}`, 100_000));
  other.write();
  const mine = queueOn(page.local, "mine");
  for (let i = 0; i < 4; i++) mine.add(item(`m${i}`, 100_000));
  mine.write();
  const held = [...page.local.values].filter(([name]) => name.startsWith(PREFIX)).reduce((sum, [, v]) => sum + v.length, 0);
  assert.ok(held <= MAX_BYTES, `${held} characters kept across the records`);
  assert.deepEqual(
    mine.items.map((i) => i.id),
    ["m3"],
  );
  assert.equal(mine.dropped, 3);
  assert.ok(page.warnings.some((w) => w.includes("1 MB")));
});

test("a write storage refuses removes the stale record and warns once; the items stay on the page", () => {
  const page = openPage();
  const queue = queueOn(page.local, "p");
  queue.add(item("a"));
  queue.write();
  assert.ok(page.local.getItem(PREFIX + "p")?.includes('"a"'));
  page.local.fill();
  queue.add(item("b", 5000));
  queue.write();
  queue.add(item("c", 5000));
  queue.write();
  assert.equal(page.local.getItem(PREFIX + "p"), null, "no stale copy for the next page to adopt");
  assert.deepEqual(
    queue.items.map((i) => i.id),
    ["a", "b", "c"],
  );
  assert.equal(page.warnings.filter((w) => w.includes("storage is full")).length, 1);
});

test("a page whose record was adopted while it was frozen forgets its items and does not write them back", () => {
  const page = openPage();
  const frozen = queueOn(page.local, "frozen");
  frozen.add(item("a"));
  frozen.write();
  page.local.removeItem(PREFIX + "frozen"); // another page adopted it
  frozen.reclaim();
  assert.deepEqual(frozen.items, []);
  assert.equal(page.local.getItem(PREFIX + "frozen"), null);
});

test("without Web Locks, two pages adopting one released record at once: one takes it", async () => {
  const page = openPage();
  const gone = queueOn(page.local, "gone");
  for (const id of ["a", "b", "c"]) gone.add(item(id));
  gone.release();
  await new Promise((resolve) => setTimeout(resolve, 0)); // the gone page's last writes
  const [first, second] = [queueOn(page.local, "first"), queueOn(page.local, "second")];
  await Promise.all([first.adopt(), second.adopt()]);
  const taken = [first.items.length, second.items.length].sort();
  assert.deepEqual(taken, [0, 3]);
  assert.equal(page.local.getItem(PREFIX + "gone"), null);
});
