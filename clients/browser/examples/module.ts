// How a front end uses the SDK as an ES module (`@produktly/segment-browser`);
// `npm run check` type-checks it against the SDK's types.
import { createTracker, type TrackEvent, type Tracker } from "../src/index";

declare const currentUser: { id: string } | null;

const tracker: Tracker = createTracker({
  endpoint: "https://segment-source.produktly.example",
  key: "pk_live_0123",
  workspace: "wk_0123",
  getUserId: () => currentUser?.id ?? null,
  cookieDomain: "example.com",
  startOptedOut: true,
  // Redaction: no e-mail address leaves the page.
  beforeSend: (event: TrackEvent) => ({ ...event, properties: { ...event.properties, email: undefined } }),
});

const messageId: string | null = tracker.track("tour_start", { tour_id: "welcome", tour_name: "Welcome" });
tracker.track("tour_step", { tour_id: "welcome", step_id: "s1", step_index: 0 });
tracker.identify("customer-user-42");
void tracker.flush().then(() => console.log("sent", messageId, tracker.dropped));
tracker.reset();
tracker.optOut();
tracker.optIn();
tracker.destroy();

// @ts-expect-error: properties are an object
tracker.track("tour_start", "welcome");
// @ts-expect-error: the key is required
createTracker({ endpoint: "https://segment-source.produktly.example" });
// @ts-expect-error: dropped is read-only
tracker.dropped = 0;
// @ts-expect-error: beforeSend returns the event or null
createTracker({ endpoint: "https://segment-source.produktly.example", key: "k", beforeSend: () => "drop" });
