// The `context` of each event: what Segment's own libraries send, read from
// the page when the event is tracked.

/** The SDK as Segment's `context.library` names it (package.json's version; a unit test checks). */
export const LIBRARY = { name: "@produktly/segment-browser", version: "1.0.0" } as const;

/** Longest string sent, in characters: at 4 bytes each still under the
 *  service's per-string limit (`ingest.max_string_bytes`, 8,192 bytes), so a
 *  page with a long query string never has its events refused. */
export const MAX_STRING_CHARS = 2000;

/** Segment's `campaign` fields and the query parameters they come from. */
const CAMPAIGN: ReadonlyArray<[param: string, field: string]> = [
  ["utm_campaign", "name"],
  ["utm_source", "source"],
  ["utm_medium", "medium"],
  ["utm_term", "term"],
  ["utm_content", "content"],
];

/** What `navigator.userAgentData` holds where the browser has it (not in every DOM typing). */
interface UserAgentData {
  brands: ReadonlyArray<{ brand: string; version: string }>;
  mobile: boolean;
  platform: string;
}

export function cut(text: string): string {
  return text.length > MAX_STRING_CHARS ? text.slice(0, MAX_STRING_CHARS) : text;
}

/** The page's context now. The URL goes without its fragment, where sign-in
 *  flows put tokens. */
export function pageContext(): Record<string, unknown> {
  const url = new URL(location.href);
  url.hash = "";
  const campaign: Record<string, string> = {};
  for (const [param, field] of CAMPAIGN) {
    const value = url.searchParams.get(param);
    if (value) campaign[field] = cut(value);
  }
  const context: Record<string, unknown> = {
    page: {
      url: cut(url.href),
      path: cut(url.pathname),
      search: cut(url.search),
      title: cut(document.title),
      referrer: cut(document.referrer),
    },
    locale: navigator.language,
    timezone: Intl.DateTimeFormat().resolvedOptions().timeZone,
    screen: { width: screen.width, height: screen.height, density: devicePixelRatio },
    library: LIBRARY,
  };
  if (Object.keys(campaign).length > 0) context.campaign = campaign;
  const agent = (navigator as Navigator & { userAgentData?: UserAgentData }).userAgentData;
  if (agent) context.userAgentData = { brands: agent.brands, mobile: agent.mobile, platform: agent.platform };
  return context;
}
