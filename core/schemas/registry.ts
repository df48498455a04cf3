/**
 * Container registries and the credentials an account keeps for them. A job's image names its
 * registry the way Docker reads a reference: the part before the first `/` is a registry host when
 * it has a `.` or a `:` or is `localhost`; otherwise the image is on Docker Hub (`docker.io`).
 */
import { z } from "zod";

/** Docker Hub, under the name `docker login` and image references use for it. */
export const DOCKER_HUB = "docker.io";
/** Other names Docker Hub goes by; they all mean `docker.io`. */
const DOCKER_HUB_ALIASES = new Set(["docker.io", "index.docker.io", "registry-1.docker.io", "registry.hub.docker.com"]);

/** A registry host as credentials name it: lower-case host name or IP, optional port. */
export const RegistryHost = z
  .string()
  .min(1)
  .max(253)
  .regex(
    // Any case (stored lower-case); written out, not with the i flag, which the OpenAPI pattern cannot carry.
    /^(?:[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?)(?:\.[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?)*(?::[0-9]{1,5})?$/,
    "a registry host such as ghcr.io, registry.example.com:5000 or docker.io (no scheme, no path)",
  )
  .transform(normaliseRegistry);

/** `index.docker.io` and the other Docker Hub names → `docker.io`; anything else unchanged. */
export function normaliseRegistry(host: string): string {
  const lower = host.toLowerCase();
  return DOCKER_HUB_ALIASES.has(lower) ? DOCKER_HUB : lower;
}

/**
 * The registry an image reference is pulled from: `ghcr.io/org/app:1` → `ghcr.io`,
 * `127.0.0.1:5000/test/busybox:1` → `127.0.0.1:5000`, `busybox` and `org/app` → `docker.io`.
 */
export function registryOf(image: string): string {
  const slash = image.indexOf("/");
  if (slash < 0) return DOCKER_HUB;
  const first = image.slice(0, slash);
  if (first.includes(".") || first.includes(":") || first === "localhost") return normaliseRegistry(first);
  return DOCKER_HUB;
}

/**
 * What the engine is told when it pulls with credentials (`serveraddress` as `docker login` stores
 * it: Docker Hub's v1 index address, any other registry by its host).
 */
export function serverAddressOf(registry: string): string {
  return registry === DOCKER_HUB ? "https://index.docker.io/v1/" : registry;
}

/**
 * The agent's answer for a placement's pull (`GET /v1/agent/placements/{id}/registry-auth`): the
 * registry its image is on and the account's credentials for it, or null when the account has none
 * (the agent then pulls anonymously).
 */
export const RegistryAuth = z.object({
  registry: z.string(),
  credentials: z.object({ username: z.string(), password: z.string() }).nullable(),
});
export type RegistryAuth = z.infer<typeof RegistryAuth>;
