import { mkdirSync, mkdtempSync, rmSync, statSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import {
  findProjectCredentials,
  type Lookup,
  requireCredentials,
  resolveCredentials,
  saveCredentials,
  userCredentialsFile,
} from "./credentials";
import { CliError } from "./errors";

let dir: string;
let home: string;
let project: string;
let nested: string;

const write = (file: string, content: unknown) => {
  mkdirSync(join(file, ".."), { recursive: true });
  writeFileSync(file, typeof content === "string" ? content : JSON.stringify(content));
};

beforeEach(() => {
  dir = mkdtempSync(join(tmpdir(), "scalar-cli-creds-"));
  home = join(dir, "home");
  project = join(dir, "clone");
  nested = join(project, "workers", "api");
  mkdirSync(home, { recursive: true });
  mkdirSync(nested, { recursive: true });
});
afterEach(() => rmSync(dir, { recursive: true, force: true }));

const lookup = (over: Partial<Lookup> = {}): Lookup => ({ flags: {}, env: {}, cwd: nested, home, ...over });

describe("credential lookup", () => {
  it("goes flags → env → nearest .scalar/credentials.json → XDG file, each value separately", () => {
    write(join(home, ".config/scalar/credentials.json"), { api_url: "http://xdg:1", api_key: "sk_xdg" });
    expect(resolveCredentials(lookup())).toEqual({
      apiUrl: { value: "http://xdg:1", from: join(home, ".config/scalar/credentials.json") },
      apiKey: { value: "sk_xdg", from: join(home, ".config/scalar/credentials.json") },
    });

    const projectFile = join(project, ".scalar/credentials.json");
    write(projectFile, { api_url: "http://project:2", api_key: "sk_project" });
    expect(resolveCredentials(lookup()).apiKey).toEqual({ value: "sk_project", from: projectFile });

    const env = { SCALAR_API_KEY: "sk_env" };
    const r = resolveCredentials(lookup({ env }));
    expect(r.apiKey).toEqual({ value: "sk_env", from: "SCALAR_API_KEY" });
    expect(r.apiUrl?.value).toBe("http://project:2");

    const flags = resolveCredentials(
      lookup({ env: { ...env, SCALAR_API_URL: "http://env:3" }, flags: { apiKey: "sk_flag" } }),
    );
    expect(flags.apiKey).toEqual({ value: "sk_flag", from: "--api-key" });
    expect(flags.apiUrl).toEqual({ value: "http://env:3", from: "SCALAR_API_URL" });
  });

  it("takes the nearest project file walking up, and a file with only one field falls through for the other", () => {
    write(join(project, ".scalar/credentials.json"), { api_url: "http://outer:1", api_key: "sk_outer" });
    write(join(project, "workers/.scalar/credentials.json"), { api_key: "sk_inner" });
    expect(findProjectCredentials(nested)).toBe(join(project, "workers/.scalar/credentials.json"));
    write(join(home, ".config/scalar/credentials.json"), { api_url: "http://xdg:1" });
    const r = resolveCredentials(lookup());
    expect(r.apiKey?.value).toBe("sk_inner");
    // The nearest file has no URL: the next place that has one (the XDG file; the outer project file is not read).
    expect(r.apiUrl?.value).toBe("http://xdg:1");
  });

  it("honours XDG_CONFIG_HOME", () => {
    const xdg = join(dir, "xdg");
    expect(userCredentialsFile({ XDG_CONFIG_HOME: xdg }, home)).toBe(join(xdg, "scalar/credentials.json"));
    expect(userCredentialsFile({}, home)).toBe(join(home, ".config/scalar/credentials.json"));
    write(join(xdg, "scalar/credentials.json"), { api_url: "http://x:9/", api_key: "sk_x" });
    expect(requireCredentials(lookup({ env: { XDG_CONFIG_HOME: xdg } }))).toMatchObject({
      apiUrl: "http://x:9",
      apiKey: "sk_x",
    });
  });

  it("says in one line what to run when nothing is found, and names a broken file", () => {
    expect(() => requireCredentials(lookup())).toThrow(
      "no Scalar API credentials found: run `npm start` in a clone of Scalar (it saves development credentials there) or `scalar login --api-url URL --api-key KEY`",
    );
    expect(() => requireCredentials(lookup({ env: { SCALAR_API_URL: "http://a:1" } }))).toThrow(
      /^no Scalar API key found/,
    );
    write(join(project, ".scalar/credentials.json"), "{not json");
    expect(() => requireCredentials(lookup())).toThrow(CliError);
    expect(() => requireCredentials(lookup())).toThrow(/credentials\.json is not valid JSON/);
    expect(() => requireCredentials(lookup({ flags: { apiUrl: "ftp://x", apiKey: "k" } }))).toThrow(
      "not an http(s) URL: ftp://x",
    );
  });

  it("saves the file readable by its owner only, also over an existing file", async () => {
    const file = join(home, ".config/scalar/credentials.json");
    write(file, "{}");
    await saveCredentials(file, { api_url: "http://a:1", api_key: "sk_a" });
    expect(statSync(file).mode & 0o777).toBe(0o600);
    expect(resolveCredentials(lookup()).apiKey?.value).toBe("sk_a");
    const fresh = join(dir, "fresh/scalar/credentials.json");
    await saveCredentials(fresh, { api_url: "http://a:1", api_key: "sk_a" });
    expect(statSync(fresh).mode & 0o777).toBe(0o600);
    expect(statSync(join(fresh, "..")).mode & 0o777).toBe(0o700);
  });
});
