// Unit tests of the sender (Node's test runner; `npm test` bundles and runs
// them): what each answer of the service does to the queue, the batch and
// the next try. The transport is replaced by a recorder of requests.
import assert from "node:assert/strict";
import { afterEach, test } from "node:test";
import { Queue } from "../../src/queue";
import { BACKOFF_MAX_MS, NETWORK_ATTEMPTS, Sender } from "../../src/sender";
import { openStorage } from "../../src/storage";
import type { Outcome } from "../../src/transport";

const RETRY_AT = "test:retry_at";

interface Sent {
  url: string;
  body: { batch?: { messageId: string }[]; messageId?: string };
}

/** What each test set up, ended after it (the queue's heartbeat, the sender's timer). */
const made: { queue: Queue; sender: Sender }[] = [];
afterEach(() => {
  for (const { queue, sender } of made.splice(0)) {
    sender.cancel();
    queue.clear();
  }
});

/** A sender over a queue in memory whose requests are answered, in turn, by `answers` (then `sent`). */
function setUp(answers: Outcome[], events = 3) {
  const storage = openStorage();
  const queue = new Queue(storage, "test:queue:", "page", () => true);
  for (let i = 0; i < events; i++) {
    const body = JSON.stringify({ event: "tour_start", messageId: `m${i}` });
    queue.add({ id: `m${i}`, kind: "track", at: Date.now(), body, bytes: body.length });
  }
  const requests: Sent[] = [];
  const post = async (url: string, body: string): Promise<Outcome> => {
    requests.push({ url, body: JSON.parse(body) });
    return answers.shift() ?? { kind: "sent", rejected: [] };
  };
  const sender = new Sender({
    endpoint: "https://source.example",
    key: "pk_1",
    queue,
    storage,
    retryAtName: RETRY_AT,
    optedOut: () => false,
    post,
  });
  made.push({ queue, sender });
  return { storage, queue, sender, requests };
}

const ids = (request: Sent) => request.body.batch?.map((message) => message.messageId);

test("what waits goes in one batch with the key, and leaves the queue once sent", async () => {
  const { queue, sender, requests } = setUp([]);
  await sender.flush();
  assert.equal(requests.length, 1);
  assert.equal(requests[0].url, "https://source.example/v1/batch?key=pk_1");
  assert.deepEqual(ids(requests[0]), ["m0", "m1", "m2"]);
  assert.equal(queue.items.length, 0);
  assert.equal(sender.dropped, 0);
});

test("an identify goes alone, ahead of the events tracked before it", async () => {
  const { queue, sender, requests } = setUp([]);
  const body = JSON.stringify({ userId: "u1", anonymousId: "a1", messageId: "i1" });
  queue.add({ id: "i1", kind: "identify", at: Date.now(), body, bytes: body.length });
  await sender.flush();
  assert.equal(requests[0].url, "https://source.example/v1/identify?key=pk_1");
  assert.equal(requests[0].body.messageId, "i1");
  assert.deepEqual(ids(requests[1]), ["m0", "m1", "m2"]);
});

test("Retry-After is kept in storage for every tab, and nothing is sent before it", async () => {
  const { storage, queue, sender, requests } = setUp([{ kind: "retry", status: 503, retryAfterMs: 60_000 }]);
  const before = Date.now();
  await sender.flush();
  assert.equal(requests.length, 1);
  assert.ok(Number(storage.get(RETRY_AT)) >= before + 60_000, "the wait is stored");
  assert.ok(sender.resumeAt() >= before + 60_000);
  await sender.send();
  assert.equal(requests.length, 1, "no request while the wait lasts");
  assert.equal(queue.items.length, 3, "nothing is dropped");
});

test("a batch over the body limit is halved; one event over it is dropped", async () => {
  const { queue, sender, requests } = setUp([{ kind: "too_large" }, { kind: "sent", rejected: [] }, { kind: "too_large" }], 4);
  await sender.flush();
  assert.deepEqual(requests.map(ids), [["m0", "m1", "m2", "m3"], ["m0", "m1"], ["m2", "m3"], ["m2"], ["m3"]]);
  assert.equal(queue.items.length, 0);

  const single = setUp([{ kind: "too_large" }], 1);
  await single.sender.flush();
  assert.equal(single.sender.dropped, 1);
  assert.equal(single.queue.items.length, 0);
});

test("events refused within an accepted batch are counted as dropped", async () => {
  const rejected = [{ index: 1, code: "unknown_event", message: "no such event" }];
  const { sender } = setUp([{ kind: "sent", rejected }]);
  await sender.flush();
  assert.equal(sender.dropped, 1);
});

test("a refused key or origin stops the sender for the page", async () => {
  const { queue, sender, requests } = setUp([{ kind: "stop", status: 403, reason: "origin_not_allowed" }]);
  await sender.flush();
  assert.ok(sender.stopped);
  assert.equal(sender.dropped, 3);
  const body = JSON.stringify({ messageId: "later" });
  queue.add({ id: "later", kind: "track", at: Date.now(), body, bytes: body.length });
  sender.schedule(0);
  await sender.send();
  assert.equal(requests.length, 1, "nothing more is sent");
});

test(`after ${NETWORK_ATTEMPTS} network failures the page waits for the next page or the network`, async () => {
  const unreachable: Outcome[] = Array.from({ length: NETWORK_ATTEMPTS }, () => ({ kind: "unreachable" }));
  const { queue, sender, requests } = setUp(unreachable);
  const realNow = Date.now;
  let later = 0;
  Date.now = () => realNow() + later;
  try {
    for (let attempt = 1; attempt <= NETWORK_ATTEMPTS; attempt++) {
      await sender.send();
      assert.equal(requests.length, attempt);
      assert.ok(sender.resumeAt() > Date.now(), "each failure waits");
      later += BACKOFF_MAX_MS; // past the wait
    }
    later -= BACKOFF_MAX_MS;
    assert.ok(sender.resumeAt() >= Date.now() + BACKOFF_MAX_MS - 1000, "then the long wait");
  } finally {
    Date.now = realNow;
  }
  assert.equal(queue.items.length, 3, "the events are kept");
  sender.online();
  await sender.flush();
  assert.equal(queue.items.length, 0, "sent once the network is back");
});
