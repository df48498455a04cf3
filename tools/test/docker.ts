/** Finds the Docker engine and local registry that `.ci/run` starts (or the machine's own). */
import { existsSync } from "node:fs";
import { request } from "node:http";
import { resolve } from "node:path";
import { ROOT } from "../db/local";

export const CI_DOCKER_SOCKET = resolve(ROOT, ".scalar/docker/docker.sock");
export const LOCAL_REGISTRY = process.env.SCALAR_REGISTRY ?? "127.0.0.1:5000";
export const TEST_IMAGE = `${LOCAL_REGISTRY}/test/busybox:1`;

function ping(socketPath: string): Promise<string | null> {
  return new Promise((done) => {
    const req = request({ socketPath, path: "/version", timeout: 2_000 }, (res) => {
      let body = "";
      res.on("data", (c) => {
        body += c;
      });
      res.on("end", () => {
        try {
          const v = JSON.parse(body) as { Version?: string; ApiVersion?: string };
          done(res.statusCode === 200 ? `${v.Version} (API ${v.ApiVersion})` : null);
        } catch {
          done(null);
        }
      });
    });
    req.on("error", () => done(null));
    req.on("timeout", () => {
      req.destroy();
      done(null);
    });
    req.end();
  });
}

async function registryUp(): Promise<boolean> {
  try {
    const res = await fetch(`http://${LOCAL_REGISTRY}/v2/`, { signal: AbortSignal.timeout(2_000) });
    return res.status === 200;
  } catch {
    return false;
  }
}

export async function detectDocker(): Promise<{
  available: boolean;
  host: string;
  detail: string;
  registry: boolean;
  image: string;
}> {
  const fromEnv = process.env.DOCKER_HOST?.startsWith("unix://") ? process.env.DOCKER_HOST.slice(7) : undefined;
  const candidates = [fromEnv, CI_DOCKER_SOCKET, "/var/run/docker.sock"].filter((p): p is string => Boolean(p));
  for (const socket of candidates) {
    if (!existsSync(socket)) continue;
    const version = await ping(socket);
    if (version) {
      return {
        available: true,
        host: `unix://${socket}`,
        detail: `${version} at ${socket}`,
        registry: await registryUp(),
        image: TEST_IMAGE,
      };
    }
  }
  return {
    available: false,
    host: "",
    detail: `no engine answers at ${candidates.join(", ")}`,
    registry: false,
    image: TEST_IMAGE,
  };
}
