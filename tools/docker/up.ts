/**
 * `npm run docker:up`: installs (apt, with `--install`) and starts the Docker stack the tests and the
 * local platform use: the gpu engine, the plain engine and the local registry with `test/busybox:1`
 * (see stack.ts). Idempotent: what already runs is reused. `.ci/run` calls it before `npm test`.
 */
import { ensureDockerStack } from "./stack";

const started = Date.now();
const log = (line: string) => console.log(`[docker:up] ${line}`);
try {
  const stack = await ensureDockerStack({ install: process.argv.includes("--install"), log });
  log(`gpu engine    DOCKER_HOST=unix://${stack.gpuSocket}   (NVIDIA device requests work via the stand-in hook)`);
  log(`plain engine  DOCKER_HOST=unix://${stack.plainSocket}   (no NVIDIA runtime)`);
  log(`registry      http://${stack.registry}/v2/   image ${stack.image}`);
  log(`ready in ${((Date.now() - started) / 1000).toFixed(1)} s; stop with npm run docker:down`);
} catch (error) {
  console.error(`[docker:up] ${error instanceof Error ? error.message : String(error)}`);
  process.exit(1);
}
