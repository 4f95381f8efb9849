// The package as a front-end team gets it: `npm pack`, then a fresh project
// installs the tarball and uses it through ESM `import` and CommonJS
// `require` under Node, and through its types under TypeScript's `bundler`
// and `node16` resolution (the module, and the classic script's global).
import { execFileSync } from "node:child_process";
import { mkdirSync, mkdtempSync, readdirSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

const root = join(dirname(fileURLToPath(import.meta.url)), "..");
const tsc = join(root, "node_modules/.bin/tsc");
const work = mkdtempSync(join(tmpdir(), "produktly-package-"));
/** The command's output; what it printed is shown when it fails (tsc reports on stdout). */
function run(command, args, cwd) {
  try {
    return execFileSync(command, args, { cwd, encoding: "utf8", stdio: ["ignore", "pipe", "inherit"] });
  } catch (error) {
    console.error(`${command} ${args.join(" ")} failed:\n${error.stdout ?? ""}`);
    throw error;
  }
}

try {
  run("npm", ["pack", "--pack-destination", work, "--silent"], root);
  const tarball = join(work, readdirSync(work).find((name) => name.endsWith(".tgz")));
  const contents = run("tar", ["-tzf", tarball], work).split("\n").filter(Boolean).sort();
  console.log(`packed ${contents.length} files: ${contents.join(", ")}`);
  for (const needed of ["package/LICENSE", "package/README.md", "package/dist/produktly-segment.cjs", "package/dist/types/index.d.cts"]) {
    if (!contents.includes(needed)) throw new Error(`the package lacks ${needed}`);
  }

  const project = join(work, "project");
  mkdirSync(project);
  writeFileSync(join(project, "package.json"), JSON.stringify({ name: "adopter", private: true }));
  run("npm", ["install", tarball, "--no-audit", "--no-fund", "--offline", "--no-package-lock"], project);

  const files = {
    "esm.mjs": `import { createTracker } from "@produktly/segment-browser";
if (typeof createTracker !== "function") throw new Error("import gives no createTracker");
console.log("ESM import: createTracker is a " + typeof createTracker);`,
    "cjs.cjs": `const { createTracker } = require("@produktly/segment-browser");
if (typeof createTracker !== "function") throw new Error("require gives no createTracker");
require.resolve("@produktly/segment-browser/script");
console.log("CommonJS require: createTracker is a " + typeof createTracker);`,
    "usage.mts": `import { createTracker, type Tracker, type TrackEvent } from "@produktly/segment-browser";
const tracker: Tracker = createTracker({ endpoint: "https://s.example", key: "pk", workspace: "wk", startOptedOut: true,
  beforeSend: (event: TrackEvent) => event });
const id: string | null = tracker.track("tour_start", { tour_id: "t" });
// @ts-expect-error: the key is required
createTracker({ endpoint: "https://s.example" });
void id;`,
    "usage.cts": `import sdk = require("@produktly/segment-browser");
const tracker: sdk.Tracker = sdk.createTracker({ endpoint: "https://s.example", key: "pk" });
tracker.destroy();`,
    "page.ts": `/// <reference types="@produktly/segment-browser/global" />
const tracker = window.Produktly.createTracker({ endpoint: "https://s.example", key: "pk" });
tracker.optIn();`,
  };
  for (const [name, text] of Object.entries(files)) writeFileSync(join(project, name), text + "\n");
  console.log(run(process.execPath, ["esm.mjs"], project).trim());
  console.log(run(process.execPath, ["cjs.cjs"], project).trim());
  const common = ["--noEmit", "--strict", "--skipLibCheck", "false", "--lib", "es2020,dom"];
  run(tsc, [...common, "--module", "node16", "--moduleResolution", "node16", "usage.mts", "usage.cts", "page.ts"], project);
  console.log("types under node16 resolution: the module (import and require) and the global");
  run(tsc, [...common, "--module", "esnext", "--moduleResolution", "bundler", "usage.mts", "page.ts"], project);
  console.log("types under bundler resolution: the module and the global");
} finally {
  rmSync(work, { recursive: true, force: true });
}
