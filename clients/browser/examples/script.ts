// How a page uses the classic script the service serves
// (<script src="https://segment-source.produktly.example/sdk/v1/produktly-segment.js">).
/// <reference path="../src/global.d.ts" />

const tracker = window.Produktly.createTracker({
  endpoint: "https://segment-source.produktly.example",
  key: "pk_live_0123",
});
tracker.track("announcement_action_clicked", { announcement_id: "a1", link: "https://example.com/new" });
void Produktly.createTracker({ endpoint: "https://segment-source.produktly.example", key: "pk_live_0123" }).flush();
