/**
 * Where the CLI finds its API address and key, in this order (each value separately):
 * flags `--api-url`/`--api-key`, env `SCALAR_API_URL`/`SCALAR_API_KEY`, the nearest
 * `.scalar/credentials.json` walking up from the current directory (written by `npm start`), then
 * `$XDG_CONFIG_HOME/scalar/credentials.json` (default `~/.config/…`, written by `scalar login`).
 */
import { existsSync, readFileSync } from "node:fs";
import { chmod, mkdir, writeFile } from "node:fs/promises";
import { dirname, join, resolve } from "node:path";
import { CliError } from "./errors";

export interface CredentialsFile {
  api_url?: string;
  api_key?: string;
}

export interface Lookup {
  flags: { apiUrl?: string; apiKey?: string };
  env: Record<string, string | undefined>;
  cwd: string;
  home: string;
}

/** One value and where it came from (`--api-key`, `SCALAR_API_KEY`, or a file's path). */
export interface Found {
  value: string;
  from: string;
}

export interface Credentials {
  apiUrl: string;
  apiKey: string;
  from: { apiUrl: string; apiKey: string };
}

export function userCredentialsFile(env: Record<string, string | undefined>, home: string): string {
  const config = env.XDG_CONFIG_HOME?.trim() ? env.XDG_CONFIG_HOME : join(home, ".config");
  return resolve(config, "scalar", "credentials.json");
}

/** The nearest `.scalar/credentials.json` in `cwd` or a parent, or null. */
export function findProjectCredentials(cwd: string): string | null {
  let dir = resolve(cwd);
  for (;;) {
    const candidate = join(dir, ".scalar", "credentials.json");
    if (existsSync(candidate)) return candidate;
    const parent = dirname(dir);
    if (parent === dir) return null;
    dir = parent;
  }
}

export function readCredentialsFile(file: string): CredentialsFile | null {
  if (!existsSync(file)) return null;
  let parsed: unknown;
  try {
    parsed = JSON.parse(readFileSync(file, "utf8"));
  } catch {
    throw new CliError(`${file} is not valid JSON; fix it, delete it, or run \`scalar login\` again`);
  }
  const o = (parsed ?? {}) as Record<string, unknown>;
  return {
    ...(typeof o.api_url === "string" && o.api_url ? { api_url: o.api_url } : {}),
    ...(typeof o.api_key === "string" && o.api_key ? { api_key: o.api_key } : {}),
  };
}

/** Every place that may hold credentials, in lookup order. */
export function credentialFiles(lookup: Pick<Lookup, "env" | "cwd" | "home">): string[] {
  const project = findProjectCredentials(lookup.cwd);
  return [...(project ? [project] : []), userCredentialsFile(lookup.env, lookup.home)];
}

export function resolveCredentials(lookup: Lookup): { apiUrl?: Found; apiKey?: Found } {
  // Files are read only when a flag or variable does not already answer.
  let files: { file: string; content: CredentialsFile | null }[] | undefined;
  const readFiles = () => {
    files ??= credentialFiles(lookup).map((file) => ({ file, content: readCredentialsFile(file) }));
    return files;
  };
  const pick = (flag: string | undefined, flagName: string, envName: string, key: keyof CredentialsFile) => {
    if (flag) return { value: flag, from: flagName };
    const fromEnv = lookup.env[envName];
    if (fromEnv) return { value: fromEnv, from: envName };
    for (const f of readFiles()) {
      const value = f.content?.[key];
      if (value) return { value, from: f.file };
    }
    return undefined;
  };
  const apiUrl = pick(lookup.flags.apiUrl, "--api-url", "SCALAR_API_URL", "api_url");
  const apiKey = pick(lookup.flags.apiKey, "--api-key", "SCALAR_API_KEY", "api_key");
  return { ...(apiUrl ? { apiUrl } : {}), ...(apiKey ? { apiKey } : {}) };
}

export const MISSING_CREDENTIALS =
  "run `npm start` in a clone of Scalar (it saves development credentials there) or `scalar login --api-url URL --api-key KEY`";

export function requireCredentials(lookup: Lookup): Credentials {
  const { apiUrl, apiKey } = resolveCredentials(lookup);
  if (!apiUrl || !apiKey) {
    const missing = !apiUrl && !apiKey ? "no Scalar API credentials" : !apiKey ? "no Scalar API key" : "no API URL";
    throw new CliError(`${missing} found: ${MISSING_CREDENTIALS}`);
  }
  return {
    apiUrl: normaliseUrl(apiUrl.value),
    apiKey: apiKey.value,
    from: { apiUrl: apiUrl.from, apiKey: apiKey.from },
  };
}

export function normaliseUrl(url: string): string {
  let parsed: URL;
  try {
    parsed = new URL(url);
  } catch {
    throw new CliError(`not a URL: ${url}`);
  }
  if (parsed.protocol !== "http:" && parsed.protocol !== "https:") throw new CliError(`not an http(s) URL: ${url}`);
  return parsed.toString().replace(/\/+$/, "");
}

/** Writes the file readable by its owner only (0600, in a 0700 folder), also when it existed before. */
export async function saveCredentials(file: string, content: Required<CredentialsFile>): Promise<void> {
  await mkdir(dirname(file), { recursive: true, mode: 0o700 });
  await writeFile(file, `${JSON.stringify(content, null, 2)}\n`, { mode: 0o600 });
  await chmod(file, 0o600);
}
