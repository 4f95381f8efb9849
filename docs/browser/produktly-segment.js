// Reference client for the Produktly Segment source: what the Produktly
// browser script does to send guidance events. Copy it, or follow it.
//
//   const tracker = createProduktlyTracker({
//     endpoint: "https://segment-source.produktly.example",
//     key: "pk_…",                                // the workspace's public ingest key
//     getUserId: () => currentUser?.id ?? null,   // your product's user id, when signed in
//   });
//   tracker.track("tour_start", { tour_id: "welcome", tour_name: "Welcome" });
//   tracker.identify("customer-user-42");          // after sign-in
//
// - Events are queued and sent in batches with fetch (keepalive), each batch
//   under the browser's 64 KB keepalive budget.
// - Every event gets its messageId when it is tracked, so a batch sent again
//   after a failure carries the same ids and is de-duplicated downstream.
// - 429 and 5xx answers and network errors keep the batch for a later try
//   (with backoff); other 4xx answers drop it: the events are invalid.
// - When the page is hidden (tab switch, navigation, close), what is queued
//   goes out with navigator.sendBeacon: text/plain, the key in the query string.
function createProduktlyTracker({ endpoint, key, getUserId = () => null, anonymousId = storedAnonymousId() }) {
  const BUDGET = 60 * 1024; // bytes: below the 64 KB a browser allows keepalive requests in flight
  const MAX_EVENTS = 500; // the service's limit per /v1/batch
  const encoder = new TextEncoder();
  const queue = [];
  let retryDelay = 1000;
  let timer = null;
  let sending = false; // one request at a time keeps within the keepalive budget

  function track(event, properties = {}, context = {}) {
    queue.push({
      event,
      properties,
      messageId: crypto.randomUUID(),
      userId: getUserId() ?? undefined,
      anonymousId,
      timestamp: new Date().toISOString(),
      context: {
        page: { url: location.href, path: location.pathname, title: document.title, referrer: document.referrer },
        locale: navigator.language,
        ...context,
      },
    });
    schedule(200);
  }

  async function identify(userId) {
    await send("/v1/identify", JSON.stringify({ userId, anonymousId, sentAt: new Date().toISOString() }));
  }

  // The oldest queued events that fit in one request within the budget.
  function takeBatch() {
    const batch = [];
    let size = 64; // the envelope
    while (queue.length && batch.length < MAX_EVENTS) {
      const next = encoder.encode(JSON.stringify(queue[0])).length + 1;
      if (batch.length && size + next > BUDGET) break;
      batch.push(queue.shift());
      size += next;
    }
    return batch;
  }

  function body(batch) {
    return JSON.stringify({ batch, sentAt: new Date().toISOString() });
  }

  async function send(path, text) {
    return fetch(endpoint + path, {
      method: "POST",
      keepalive: true,
      headers: { "Content-Type": "application/json", "X-Produktly-Key": key },
      body: text,
    });
  }

  async function flush() {
    clearTimeout(timer);
    if (sending) return; // the request in flight sends on what is queued after it
    sending = true;
    try {
      while (queue.length) {
        const batch = takeBatch();
        let status = 0;
        try {
          status = (await send("/v1/batch", body(batch))).status;
        } catch (_) {
          // A network error: retried below.
        }
        if (status === 0 || status === 429 || status >= 500) {
          queue.unshift(...batch); // same events, same messageIds
          schedule(retryDelay);
          retryDelay = Math.min(retryDelay * 2, 60000);
          return;
        }
        retryDelay = 1000; // 2xx, or a 4xx that no retry can fix
      }
    } finally {
      sending = false;
    }
  }

  function flushWithBeacon() {
    clearTimeout(timer);
    const url = `${endpoint}/v1/batch?key=${encodeURIComponent(key)}`;
    while (queue.length) {
      const batch = takeBatch();
      if (!navigator.sendBeacon(url, body(batch))) {
        queue.unshift(...batch);
        return;
      }
    }
  }

  function schedule(delay) {
    clearTimeout(timer);
    timer = setTimeout(flush, delay);
  }

  document.addEventListener("visibilitychange", () => {
    if (document.visibilityState === "hidden") flushWithBeacon();
  });
  window.addEventListener("pagehide", flushWithBeacon);

  return { track, identify, flush, flushWithBeacon };
}

function storedAnonymousId() {
  const name = "produktly_anonymous_id";
  let id = localStorage.getItem(name);
  if (!id) {
    id = crypto.randomUUID();
    localStorage.setItem(name, id);
  }
  return id;
}
