// The usual Node setup the bench compares the service with (`bench` runs it
// when `node` is there): express parses the JSON body and checks the key
// header, and @segment/analytics-node batches the event in memory and sends
// it to Segment (here the bench's mock). Nothing is durable: a crash loses
// what waits in memory. Usage: node server.mjs PORT SEGMENT_URL
import express from "express";
import { Analytics } from "@segment/analytics-node";

const [port, segmentUrl] = process.argv.slice(2);
const analytics = new Analytics({ writeKey: "node-peer", host: segmentUrl, path: "/v1/batch", flushAt: 100, flushInterval: 1000 });
const app = express();
app.use(express.json({ limit: "64kb", type: ["application/json", "text/plain"] }));
app.post("/v1/track", (request, response) => {
  if (!request.get("x-produktly-key")) {
    response.status(401).json({ error: { code: "missing_ingest_key" } });
    return;
  }
  const { event, userId, anonymousId, properties, messageId, timestamp, context } = request.body;
  analytics.track({ event, userId, anonymousId, properties, messageId, timestamp, context });
  response.status(202).json({ accepted: 1 });
});
app.listen(Number(port), "127.0.0.1");
