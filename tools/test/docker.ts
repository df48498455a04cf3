/**
 * Finds the Docker engines and local registry that `npm run docker:up` (and `.ci/run`) start, or the
 * machine's own engine; with `start`, first starts what is installed but not running (tools/docker/stack.ts).
 */
import { existsSync } from "node:fs";
import {
  engineSpec,
  ensureDockerStack,
  findEngine,
  LOCAL_REGISTRY,
  missingPackages,
  pingEngine,
  registryUp,
  TEST_IMAGE,
} from "../docker/stack";

export { LOCAL_REGISTRY, TEST_IMAGE };
export const CI_DOCKER_SOCKET = engineSpec("gpu").socket;

export async function detectDocker(opts: { start?: boolean; log?: (line: string) => void } = {}): Promise<{
  available: boolean;
  host: string;
  detail: string;
  registry: boolean;
  image: string;
  /** The engine without an NVIDIA runtime (GPU requests fail there), when it runs. */
  plainHost: string;
}> {
  const fromEnv = process.env.DOCKER_HOST?.startsWith("unix://") ? process.env.DOCKER_HOST.slice(7) : undefined;
  let startError = "";
  if (opts.start && !(fromEnv && (await pingEngine(fromEnv)))) {
    const missing = missingPackages();
    if (missing.length > 0) startError = `; not installed: ${missing.join(", ")} (npm run docker:up installs them)`;
    else {
      try {
        await ensureDockerStack({ install: false, log: opts.log ?? (() => {}) });
      } catch (error) {
        startError = `; starting it failed: ${error instanceof Error ? error.message : String(error)}`;
      }
    }
  }
  const gpu = await findEngine("gpu");
  const plain = await findEngine("plain");
  const candidates = [fromEnv, gpu?.socket, "/var/run/docker.sock"].filter((p): p is string => Boolean(p));
  for (const socket of candidates) {
    if (!existsSync(socket)) continue;
    const version = await pingEngine(socket);
    if (version) {
      return {
        available: true,
        host: `unix://${socket}`,
        detail: `${version} at ${socket}${plain ? `; plain engine at ${plain.socket}` : ""}`,
        registry: await registryUp(),
        image: TEST_IMAGE,
        plainHost: plain ? `unix://${plain.socket}` : "",
      };
    }
  }
  return {
    available: false,
    host: "",
    detail: `no engine answers at ${[...candidates, CI_DOCKER_SOCKET].join(", ")}${startError}`,
    registry: false,
    image: TEST_IMAGE,
    plainHost: "",
  };
}
