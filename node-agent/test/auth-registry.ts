/**
 * A private registry for tests: a second docker-registry (the package `npm run docker:up` installs)
 * behind htpasswd basic auth on a free port, and the test image pushed to it under another id.
 */
import { spawn } from "node:child_process";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { freePort } from "../../tools/db/embedded";
import type { DockerodeEngine } from "../docker/dockerode-engine";

/** The user and password of the private test registry (its htpasswd holds a bcrypt of the password). */
export const AUTH_USER = "scalar";
export const AUTH_PASSWORD = "scalar-test-password";
const AUTH_HTPASSWD = "scalar:$2b$04$D.itP1nU0Y8QZqHRKcfmRO59YRqdgI83SwsyYAc1C.y3CoFUUDfxe\n";

export interface AuthRegistry {
  host: string;
  stop(): Promise<void>;
}

/** A second docker-registry (the package `npm run docker:up` installs) behind basic auth, on a free port. */
export async function startAuthRegistry(): Promise<AuthRegistry> {
  const dir = mkdtempSync(join(tmpdir(), "scalar-auth-registry-"));
  const port = await freePort();
  writeFileSync(join(dir, "htpasswd"), AUTH_HTPASSWD);
  writeFileSync(
    join(dir, "config.yml"),
    [
      "version: 0.1",
      "log: { level: error }",
      `storage: { filesystem: { rootdirectory: ${join(dir, "data")} } }`,
      `http: { addr: "127.0.0.1:${port}" }`,
      `auth: { htpasswd: { realm: scalar-test, path: ${join(dir, "htpasswd")} } }`,
    ].join("\n"),
  );
  const child = spawn("docker-registry", ["serve", join(dir, "config.yml")], { stdio: "ignore" });
  const stop = async () => {
    if (child.exitCode === null && child.signalCode === null) {
      const exited = new Promise((done) => child.once("exit", done));
      child.kill();
      await exited;
    }
    rmSync(dir, { recursive: true, force: true });
  };
  try {
    for (const until = Date.now() + 15_000; ; ) {
      const status = await fetch(`http://127.0.0.1:${port}/v2/`)
        .then((r) => r.status)
        .catch(() => 0);
      if (status === 401) break;
      if (Date.now() > until) throw new Error(`the auth registry did not start (last status ${status})`);
      await new Promise((r) => setTimeout(r, 100));
    }
  } catch (error) {
    await stop();
    throw error;
  }
  return { host: `127.0.0.1:${port}`, stop };
}

/** `docker push` with credentials; fails on an error in the engine's progress stream too. */
async function pushImage(engine: DockerodeEngine, ref: string, authconfig: Record<string, string>): Promise<void> {
  const stream = await engine.docker.getImage(ref).push({ authconfig });
  await new Promise<void>((done, fail) => {
    let streamError: string | null = null;
    engine.docker.modem.followProgress(
      stream,
      (error: unknown) => (error || streamError ? fail(error ?? new Error(streamError!)) : done()),
      (event: { error?: string }) => {
        if (event.error) streamError ??= event.error;
      },
    );
  });
}

/**
 * `source` (pulled if missing) committed with a fresh label, so its image id is its own, pushed to
 * `registry` as `<host>/test/private:1` with the right credentials and removed from the engine:
 * only the registry has it, and the first placement pulls it.
 */
export async function pushPrivateImage(
  engine: DockerodeEngine,
  registry: AuthRegistry,
  source: string,
): Promise<string> {
  const privateImage = `${registry.host}/test/private:1`;
  await engine.pull(source, () => {});
  const container = await engine.docker.createContainer({ Image: source, Cmd: ["true"] });
  try {
    await container.commit({
      repo: `${registry.host}/test/private`,
      tag: "1",
      changes: [`LABEL io.scalar.test.private=${Date.now()}`],
    });
  } finally {
    await container.remove({ force: true });
  }
  await pushImage(engine, privateImage, { username: AUTH_USER, password: AUTH_PASSWORD, serveraddress: registry.host });
  await engine.docker.getImage(privateImage).remove();
  return privateImage;
}
