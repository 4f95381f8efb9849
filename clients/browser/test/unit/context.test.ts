// Unit tests of the page context (Node's test runner, with the page's globals
// set by hand): the fragment never leaves, utm_* become Segment's campaign,
// long strings are cut, and the library names the package's version.
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { test } from "node:test";
import { LIBRARY, MAX_STRING_CHARS, pageContext } from "../../src/context";

function onPage(href: string, title = "Tours") {
  Object.assign(globalThis, {
    location: new URL(href),
    document: { title, referrer: "https://search.example/?q=produktly" },
    screen: { width: 1440, height: 900 },
    devicePixelRatio: 2,
  });
  Object.defineProperty(globalThis, "navigator", { value: { language: "fi-FI" }, configurable: true });
}

test("the URL goes without its fragment, and utm_* parameters become the campaign", () => {
  onPage("https://app.example.com/tours?utm_source=x&utm_medium=email&utm_campaign=spring&other=1#token=secret");
  const context = pageContext() as { page: Record<string, string>; campaign: Record<string, string> };
  assert.equal(context.page.url, "https://app.example.com/tours?utm_source=x&utm_medium=email&utm_campaign=spring&other=1");
  assert.equal(context.page.path, "/tours");
  assert.equal(context.page.search, "?utm_source=x&utm_medium=email&utm_campaign=spring&other=1");
  assert.deepEqual(context.campaign, { source: "x", medium: "email", name: "spring" });
  assert.ok(!JSON.stringify(context).includes("secret"));
  assert.deepEqual((context as Record<string, unknown>).screen, { width: 1440, height: 900, density: 2 });
  assert.equal((context as Record<string, unknown>).locale, "fi-FI");
  assert.equal(typeof (context as Record<string, unknown>).timezone, "string");
});

test("a page without utm_* parameters has no campaign", () => {
  onPage("https://app.example.com/");
  assert.equal((pageContext() as Record<string, unknown>).campaign, undefined);
});

test("long strings are cut to the limit", () => {
  onPage(`https://app.example.com/search?q=${"a".repeat(10_000)}`, "t".repeat(5000));
  const context = pageContext() as { page: Record<string, string> };
  assert.equal(context.page.url.length, MAX_STRING_CHARS);
  assert.equal(context.page.search.length, MAX_STRING_CHARS);
  assert.equal(context.page.title.length, MAX_STRING_CHARS);
});

test("the library is this package at its version", () => {
  // npm test runs in the package's folder.
  const manifest = JSON.parse(readFileSync("package.json", "utf8"));
  assert.deepEqual(LIBRARY, { name: manifest.name, version: manifest.version });
});
