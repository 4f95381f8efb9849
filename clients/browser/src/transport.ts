// One request to the service and what its answer means for the events in it.
// Requests are CORS "simple" (text/plain, the key in the query string), so no
// preflight precedes them, and `keepalive`, so a request outlives its page.

/** An event refused within a batch the service otherwise accepted. */
export interface Rejected {
  index: number;
  code: string;
  message: string;
}

export type Outcome =
  /** Stored; `rejected` were refused (the rest were stored). */
  | { kind: "sent"; rejected: Rejected[] }
  /** Refused for good (`400`, `415`): no retry can fix it. */
  | { kind: "refused"; status: number; reason: string }
  /** The key or the origin is refused (`401`, `403`), or the endpoint is wrong. */
  | { kind: "stop"; status: number; reason: string }
  /** Over the service's body limit (`413`). */
  | { kind: "too_large" }
  /** To be tried again later (`408`, `429`, `5xx`), at the earliest after `retryAfterMs`. */
  | { kind: "retry"; status: number; retryAfterMs: number | null }
  /** No answer: offline, the service out of reach, or the request was cut. */
  | { kind: "unreachable" };

/** Bodies of keepalive requests in flight may total 64 KB in browsers. */
export const KEEPALIVE_BUDGET = 60 * 1024;

export async function post(url: string, body: string, bytes: number): Promise<Outcome> {
  let response: Response;
  try {
    response = await fetch(url, {
      method: "POST",
      keepalive: bytes <= KEEPALIVE_BUDGET,
      headers: { "Content-Type": "text/plain;charset=UTF-8" },
      body,
      credentials: "omit",
    });
  } catch {
    return { kind: "unreachable" };
  }
  const status = response.status;
  if (status >= 200 && status < 300) {
    const answer = await json(response);
    return { kind: "sent", rejected: Array.isArray(answer?.rejected) ? (answer.rejected as Rejected[]) : [] };
  }
  if (status === 408 || status === 429 || status >= 500) {
    return { kind: "retry", status, retryAfterMs: retryAfter(response.headers.get("Retry-After")) };
  }
  if (status === 413) return { kind: "too_large" };
  const reason = await errorText(response);
  if (status === 400 || status === 415) return { kind: "refused", status, reason };
  return { kind: "stop", status, reason };
}

/** `Retry-After` as seconds or an HTTP date, in milliseconds from now. */
export function retryAfter(value: string | null): number | null {
  if (value === null || value.trim() === "") return null;
  const seconds = Number(value);
  if (Number.isFinite(seconds)) return Math.max(0, seconds * 1000);
  const date = Date.parse(value);
  return Number.isNaN(date) ? null : Math.max(0, date - Date.now());
}

async function json(response: Response): Promise<{ [key: string]: unknown } | null> {
  try {
    return (await response.json()) as { [key: string]: unknown };
  } catch {
    return null;
  }
}

/** The service's error code and message, and why each event was refused, for a warning. */
async function errorText(response: Response): Promise<string> {
  const answer = await json(response);
  const error = answer?.error as { code?: string; message?: string } | undefined;
  const text = error?.code ? `${error.code}: ${error.message ?? ""}` : `HTTP ${response.status}`;
  const rejected = Array.isArray(answer?.rejected) ? (answer.rejected as Rejected[]) : [];
  return [text, ...rejected.map((r) => `${r.code} (${r.message})`)].join("; ");
}
