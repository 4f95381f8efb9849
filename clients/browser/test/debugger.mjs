// The delivery debugger's page (/debugger/) in Debian's Chromium, driven by
// playwright-core; tests/api/debugger_page.rs (cargo test) runs it with the
// service (SERVICE), an admin token (TOKEN), a workspace (WORKSPACE) and its
// ingest key (KEY) in the environment. It types the token in, posts a refused
// event and a good one, and prints `RESULT <json>`: the rows the page showed,
// what it kept where, and any error (a CSP violation among them).
import { chromium } from "playwright-core";

const { SERVICE, TOKEN, WORKSPACE, KEY, CHROMIUM } = process.env;
const report = { errors: [], rows: {}, sessionToken: null, localKeys: [] };

const browser = await chromium.launch({ executablePath: CHROMIUM, args: ["--headless", "--no-sandbox", "--disable-gpu"] });
try {
  const page = await browser.newPage();
  page.on("pageerror", (error) => report.errors.push(String(error)));
  page.on("console", (message) => {
    if (message.type() === "error") report.errors.push(message.text());
  });
  await page.goto(`${SERVICE}/debugger/`);
  await page.fill("#token", TOKEN);
  await page.fill("#workspace", WORKSPACE);
  await page.click("button[type=submit]");
  await page.waitForFunction(() => document.getElementById("status").textContent === "live", null, { timeout: 10000 });

  const post = (event) =>
    fetch(`${SERVICE}/v1/track`, { method: "POST", headers: { "content-type": "application/json", "x-produktly-key": KEY }, body: JSON.stringify(event) });
  await post({ event: "tour_begin", messageId: "m-page-refused", anonymousId: "anon-page-1", properties: {} });
  await post({ event: "tour_start", messageId: "m-page-good", anonymousId: "anon-page-1", properties: { tour_id: "t1" } });
  for (const id of ["m-page-refused", "m-page-good"]) {
    await page.waitForSelector(`#events tr[data-message-id="${id}"]`, { timeout: 10000 });
    report.rows[id] = await page.$$eval(`#events tr[data-message-id="${id}"]`, (rows) => rows.map((row) => row.innerText));
  }
  report.sessionToken = await page.evaluate(() => sessionStorage.getItem("produktly-debugger:token"));
  report.localKeys = await page.evaluate(() => Object.keys(localStorage));
} catch (error) {
  report.errors.push(String(error));
} finally {
  await browser.close();
}
console.log(`RESULT ${JSON.stringify(report)}`);
