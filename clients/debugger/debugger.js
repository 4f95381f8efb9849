// The delivery debugger: reads a workspace's activity from the admin API of
// the service that serves this page, then tails it live. No framework, no
// build step. The admin token stays in sessionStorage (this tab only), and
// everything shown is written as text, never as HTML.
"use strict";

const TOKEN_KEY = "produktly-debugger:token";
const WORKSPACE_KEY = "produktly-debugger:workspace";
const MAX_ROWS = 500;

const $ = (id) => document.getElementById(id);
let tail = null;

/** Each refusal's reason in plain words, and what fixes it. */
function explain(entry, workspace) {
  const code = entry.code || entry.reason;
  const origin = /origin (\S+) is not/.exec(entry.message || "");
  const why = {
    origin_not_allowed: [
      "The page's origin is not one the workspace allows.",
      `Add ${origin ? origin[1] : "the page's origin"} to allowed_origins (PUT /admin/v1/workspaces/${workspace}).`,
    ],
    unknown_event: [
      `"${entry.event ?? ""}" is not an event of the catalog.`,
      "Send one of the catalog's names (case matters); the partner documentation lists them.",
    ],
    missing_property: [entry.message, "Send the property in the event's properties."],
    invalid_property: [entry.message, "Send the property with the type the catalog gives."],
    missing_field: [entry.message, "Send the field; the SDK does unless the call was made by hand."],
    invalid_field: [entry.message, "Send the field with the type the API reference gives."],
    missing_identity: [entry.message, "Give getUserId, or let the SDK keep its anonymous id."],
    invalid_event: [entry.message, "Send each event as a JSON object."],
    body_too_large: [entry.message, "Send fewer events per request (the SDK splits its batches)."],
    too_many_events: [entry.message, "Send fewer events per batch."],
    invalid_json: [entry.message, "Send well-formed JSON."],
    invalid_body: [entry.message, "Send {\"batch\": [...]} to /v1/batch."],
    rate_limited: ["Too many requests for this workspace.", "The SDK waits as Retry-After says; nothing is lost."],
    queue_full: ["The service's queue was full.", "The SDK retries; if it lasts, look at the service's delivery."],
    store_unavailable: ["The service could not store the event then.", "The SDK retries; the operator should check the database."],
    event_not_selected: [
      "Valid, but the workspace's Segment integration does not forward this event.",
      "Add it to the integration's events (PUT …/integrations/segment).",
    ],
    segment_not_configured: [
      "Valid, but the workspace has no enabled Segment integration.",
      "Paste the Segment source's write key in the integration (PUT …/integrations/segment).",
    ],
    rejected: ["Segment refused the message.", "See the dead letters for Segment's answer; fix the data, then replay them."],
    message_too_large: ["The message is over Segment's 32 KB limit.", "Send smaller properties."],
    expired: ["It waited in the queue past the service's maximum age.", "Check the delivery attempts below for why."],
  }[code];
  if (entry.outcome === "erased") return [`Removed by an erasure request (${entry.events} queued events).`, ""];
  if (entry.outcome === "queued") return ["Stored; on its way to Segment.", ""];
  if (entry.outcome === "delivered") return [`In request ${entry.attempt} to Segment, answered ${entry.status}.`, ""];
  return why ?? [entry.message ?? code ?? "", ""];
}

function cell(row, text, className) {
  const td = row.insertCell();
  td.textContent = text ?? "";
  if (className) td.className = className;
  return td;
}

function matches(entry) {
  const outcome = $("outcome").value;
  const event = $("event").value.trim();
  return (!outcome || entry.outcome === outcome) && (!event || entry.event === event);
}

function addEvent(entry, workspace, atTop) {
  if (!matches(entry)) return;
  const body = $("events").tBodies[0];
  const row = atTop ? body.insertRow(0) : body.insertRow();
  row.dataset.messageId = entry.messageId ?? "";
  row.dataset.outcome = entry.outcome;
  cell(row, new Date(entry.received_at).toLocaleTimeString());
  cell(row, entry.event ?? "—");
  cell(row, entry.messageId ?? "—");
  cell(row, [entry.userId, entry.anonymousId].filter(Boolean).join(" / ") || "—");
  cell(row, entry.outcome + (entry.code ? ` (${entry.code})` : ""), `outcome ${entry.outcome}`);
  const [why, fix] = explain(entry, workspace);
  const td = cell(row, why, "why");
  if (fix) {
    const span = document.createElement("span");
    span.className = "fix";
    span.textContent = `Fix: ${fix}`;
    td.append(span);
  }
  while (body.rows.length > MAX_ROWS) body.deleteRow(-1);
}

function addDelivery(attempt, atTop) {
  const body = $("deliveries").tBodies[0];
  const row = atTop ? body.insertRow(0) : body.insertRow();
  cell(row, new Date(attempt.sent_at).toLocaleTimeString());
  cell(row, String(attempt.attempt));
  cell(row, String(attempt.events));
  cell(row, String(attempt.bytes));
  cell(row, attempt.status === null ? "no answer" : String(attempt.status));
  cell(row, `${attempt.latency_ms} ms`);
  const then = attempt.retry_at ? `${attempt.decision}, again at ${new Date(attempt.retry_at).toLocaleTimeString()}` : attempt.decision;
  cell(row, attempt.error ? `${then}: ${attempt.error}` : then);
  while (body.rows.length > MAX_ROWS) body.deleteRow(-1);
}

function status(text, isError = false) {
  $("status").textContent = text;
  $("status").className = isError ? "error" : "";
}

async function get(path, token) {
  const answer = await fetch(path, { headers: { authorization: `Bearer ${token}` } });
  const body = await answer.json().catch(() => ({}));
  if (!answer.ok) throw new Error(body.error?.message ?? `HTTP ${answer.status}`);
  return body;
}

async function load(token, workspace) {
  const base = `/admin/v1/workspaces/${encodeURIComponent(workspace)}`;
  const [activity, deliveries] = await Promise.all([get(`${base}/activity?limit=200`, token), get(`${base}/deliveries?limit=50`, token)]);
  $("events").tBodies[0].replaceChildren();
  $("deliveries").tBodies[0].replaceChildren();
  for (const entry of activity.events) addEvent(entry, workspace, false);
  for (const attempt of deliveries.deliveries) addDelivery(attempt, false);
  $("instance").textContent = `as seen by instance ${activity.instance}`;
  $("view").hidden = false;
}

/** Reads the live tail (fetch, since EventSource cannot send the token). */
async function follow(token, workspace) {
  tail?.abort();
  const controller = new AbortController();
  tail = controller;
  const path = `/admin/v1/workspaces/${encodeURIComponent(workspace)}/activity/stream`;
  const answer = await fetch(path, { headers: { authorization: `Bearer ${token}` }, signal: controller.signal });
  if (!answer.ok || !answer.body) throw new Error(`the live tail answered HTTP ${answer.status}`);
  status("live");
  const reader = answer.body.pipeThrough(new TextDecoderStream()).getReader();
  let buffered = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    buffered += value;
    let end;
    while ((end = buffered.indexOf("\n\n")) >= 0) {
      const message = buffered.slice(0, end);
      buffered = buffered.slice(end + 2);
      const kind = /^event: (.*)$/m.exec(message)?.[1];
      const data = message.split("\n").filter((l) => l.startsWith("data: ")).map((l) => l.slice(6)).join("\n");
      if (kind === "activity") addEvent(JSON.parse(data), workspace, true);
      if (kind === "delivery") addDelivery(JSON.parse(data), true);
      if (kind === "dropped") status("fell behind; reloading");
    }
  }
  if (tail !== controller) return;
  // The tail ended (the client fell behind, or the service restarted): start again.
  await new Promise((resolve) => setTimeout(resolve, 1000));
  if (tail === controller) await start(token, workspace);
}

async function start(token, workspace) {
  try {
    status("loading…");
    await load(token, workspace);
    await follow(token, workspace);
  } catch (error) {
    if (error.name !== "AbortError") status(String(error.message ?? error), true);
  }
}

function connect(event) {
  event?.preventDefault();
  const token = $("token").value;
  const workspace = $("workspace").value.trim();
  sessionStorage.setItem(TOKEN_KEY, token);
  sessionStorage.setItem(WORKSPACE_KEY, workspace);
  start(token, workspace);
}

$("connect").addEventListener("submit", connect);
for (const id of ["outcome", "event"]) {
  $(id).addEventListener("change", () => connect());
}
$("token").value = sessionStorage.getItem(TOKEN_KEY) ?? "";
$("workspace").value = new URLSearchParams(location.search).get("workspace") ?? sessionStorage.getItem(WORKSPACE_KEY) ?? "";
if ($("token").value && $("workspace").value) connect();
