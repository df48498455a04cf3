#!/usr/bin/env node
// Entry of `npm start` and `npm test` on a fresh clone: installs the locked dependencies when they
// are missing or older than package-lock.json, then runs the given TypeScript file in this process.
import { spawnSync } from "node:child_process";
import { existsSync, statSync } from "node:fs";
import { dirname, resolve } from "node:path";
import { fileURLToPath, pathToFileURL } from "node:url";

const root = resolve(dirname(fileURLToPath(import.meta.url)), "..");
const marker = resolve(root, "node_modules/.package-lock.json");
const lock = resolve(root, "package-lock.json");
const stale = !existsSync(marker) || (existsSync(lock) && statSync(lock).mtimeMs > statSync(marker).mtimeMs + 1000);
if (stale) {
  console.log("Installing dependencies (npm ci)…");
  const started = Date.now();
  const r = spawnSync("npm", ["ci", "--no-audit", "--no-fund", "--loglevel=error"], { cwd: root, stdio: "inherit" });
  if (r.status !== 0) {
    console.error("npm ci failed; see the output above.");
    process.exit(r.status ?? 1);
  }
  console.log(`Dependencies installed in ${((Date.now() - started) / 1000).toFixed(1)} s.`);
}

const [entry, ...rest] = process.argv.slice(2);
if (!entry) {
  console.error("usage: node tools/bootstrap.mjs <file.ts> [args…]");
  process.exit(2);
}
const { register } = await import("tsx/esm/api");
register();
process.argv = [process.argv[0], resolve(root, entry), ...rest];
await import(pathToFileURL(resolve(root, entry)).href);
