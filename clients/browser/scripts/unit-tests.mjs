// Runs the SDK's unit tests (test/unit/*.test.ts) under Node's own test
// runner: each file bundled by esbuild, since Node does not run TypeScript.
import { spawnSync } from "node:child_process";
import { mkdtempSync, readdirSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import * as esbuild from "esbuild";

const root = join(dirname(fileURLToPath(import.meta.url)), "..");
const tests = readdirSync(join(root, "test/unit")).filter((name) => name.endsWith(".test.ts"));
const out = mkdtempSync(join(tmpdir(), "produktly-sdk-unit-"));
await esbuild.build({
  entryPoints: tests.map((name) => join(root, "test/unit", name)),
  bundle: true,
  platform: "node",
  format: "esm",
  outdir: out,
  outExtension: { ".js": ".mjs" },
});
const run = spawnSync(process.execPath, ["--test", ...tests.map((name) => join(out, name.replace(/\.ts$/, ".mjs")))], {
  stdio: "inherit",
});
rmSync(out, { recursive: true, force: true });
process.exit(run.status ?? 1);
