// Builds the SDK from src/: the classic script the service serves
// (dist/produktly-segment.js, minified, defining window.Produktly; committed,
// since the service embeds it), the ES module (dist/produktly-segment.mjs),
// the CommonJS build (dist/produktly-segment.cjs) and the type declarations
// (dist/types/, with index.d.cts for `require`). With --check, builds into a temporary
// folder and tells whether the committed script is the one the source makes.
import { execFileSync } from "node:child_process";
import { cpSync, existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, dirname } from "node:path";
import { fileURLToPath } from "node:url";
import { gzipSync } from "node:zlib";
import * as esbuild from "esbuild";

const root = join(dirname(fileURLToPath(import.meta.url)), "..");
const check = process.argv.includes("--check");
/** The served script loads on every page of every customer. */
const MAX_GZIPPED = 10 * 1024;

const out = check ? mkdtempSync(join(tmpdir(), "produktly-sdk-")) : join(root, "dist");
rmSync(out, { recursive: true, force: true });
mkdirSync(out, { recursive: true });

const common = { entryPoints: [join(root, "src/index.ts")], bundle: true, target: "es2020", legalComments: "none" };
await esbuild.build({ ...common, format: "iife", globalName: "Produktly", minify: true, outfile: join(out, "produktly-segment.js") });
await esbuild.build({ ...common, format: "esm", outfile: join(out, "produktly-segment.mjs") });
await esbuild.build({ ...common, format: "cjs", outfile: join(out, "produktly-segment.cjs") });
execFileSync(join(root, "node_modules/.bin/tsc"), ["-p", join(root, "tsconfig.json"), "--outDir", join(out, "types")], { stdio: "inherit" });
cpSync(join(root, "src/global.d.ts"), join(out, "types/global.d.ts"));
// The public types import nothing, so one text serves `import` and `require`.
cpSync(join(out, "types/index.d.ts"), join(out, "types/index.d.cts"));

const script = readFileSync(join(out, "produktly-segment.js"));
const gzipped = gzipSync(script, { level: 9 }).length;
console.log(`produktly-segment.js: ${script.length} bytes, ${gzipped} gzipped`);
if (gzipped > MAX_GZIPPED) {
  console.error(`the served script is over ${MAX_GZIPPED} bytes gzipped`);
  process.exit(1);
}

if (check) {
  const committed = join(root, "dist/produktly-segment.js");
  const current = existsSync(committed) && readFileSync(committed).equals(script);
  rmSync(out, { recursive: true, force: true });
  if (!current) {
    console.error("dist/produktly-segment.js is not built from src/: run `npm run build` and commit it");
    process.exit(1);
  }
  console.log("dist/produktly-segment.js is built from src/");
}
