import { spawnSync } from "node:child_process";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { describe, expect, it } from "vitest";
import { defaultIngressUrl, parseCli, UsageError } from "./cli";

const parse = (argv: string[], env: NodeJS.ProcessEnv = {}) => parseCli(argv, env, "gpu-node-7");
const required = ["--api-url", "https://api.scalar.test", "--token", "t0k"];

describe("scalar-agent command line", () => {
  it("has defaults for everything but the control plane and the token", () => {
    const o = parse(required);
    expect(o).toMatchObject({
      apiUrl: "https://api.scalar.test",
      token: "t0k",
      dockerSocket: "/var/run/docker.sock",
      gpus: { kind: "nvidia-smi", binary: "nvidia-smi" },
      logLevel: "info",
    });
    expect(o.agent).toMatchObject({ agentName: "gpu-node-7", dataDir: "/var/lib/scalar-agent", orphanGraceMs: 60_000 });
  });

  it("reads the environment, and a token file", () => {
    const dir = mkdtempSync(join(tmpdir(), "agent-cli-"));
    try {
      writeFileSync(join(dir, "token"), "from-file\n");
      const o = parse([], {
        SCALAR_API_URL: "http://127.0.0.1:8787",
        SCALAR_NODE_TOKEN_FILE: join(dir, "token"),
        DOCKER_HOST: "unix:///run/scalar/docker.sock",
        SCALAR_AGENT_DATA: "/srv/agent",
        SCALAR_ZONE: "us-west-1a",
        SCALAR_AGENT_NAME: "n-1",
      });
      expect(o).toMatchObject({
        apiUrl: "http://127.0.0.1:8787",
        token: "from-file",
        dockerSocket: "/run/scalar/docker.sock",
      });
      expect(o.agent).toMatchObject({ dataDir: "/srv/agent", zone: "us-west-1a", agentName: "n-1" });
      expect(() => parse(["--api-url", "http://x", "--token-file", join(dir, "missing")])).toThrow(
        /cannot read the token file/,
      );
      // Flags before the environment: --token, then --token-file, then SCALAR_NODE_TOKEN, then its file.
      const env = { SCALAR_NODE_TOKEN: "from-env", SCALAR_NODE_TOKEN_FILE: join(dir, "missing") };
      expect(parse(["--api-url", "http://x", "--token-file", join(dir, "token")], env).token).toBe("from-file");
      expect(parse(["--api-url", "http://x", "--token", "flag", "--token-file", join(dir, "token")], env).token).toBe(
        "flag",
      );
      expect(parse(["--api-url", "http://x"], env).token).toBe("from-env");
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it("declares GPUs on hosts without them, and checks the model", () => {
    expect(parse([...required, "--gpus", "8", "--gpu-model", "H100"]).gpus).toEqual({
      kind: "declared",
      count: 8,
      model: "H100",
    });
    expect(() => parse([...required, "--gpus", "8"])).toThrow(/--gpus needs --gpu-model/);
    expect(() => parse([...required, "--gpus", "8", "--gpu-model", "A100"])).toThrow(UsageError);
    expect(() => parse([...required, "--gpu-model", "H100"])).toThrow(/goes with --gpus/);
    expect(() => parse([...required, "--gpus", "two", "--gpu-model", "H100"])).toThrow(/whole number/);
  });

  it("takes the tuning options", () => {
    const o = parse([
      ...required,
      "--orphan-grace-ms",
      "5000",
      "--retry-max-ms",
      "2000",
      "--pids-limit",
      "512",
      "--zone",
      "z1",
    ]);
    expect(o.agent).toMatchObject({ orphanGraceMs: 5000, pidsLimit: 512, zone: "z1" });
    expect(o.agent.backoff.maxMs).toBe(2000);
  });

  it("takes a pull policy (auto unless told), from the flag or the environment", () => {
    expect(parse(required).agent.pullPolicy).toBe("auto");
    expect(parse([...required, "--pull-policy", "always"]).agent.pullPolicy).toBe("always");
    expect(parse([...required, "--pull-policy", "if-not-present"]).agent.pullPolicy).toBe("if-not-present");
    expect(parse(required, { SCALAR_PULL_POLICY: "always" }).agent.pullPolicy).toBe("always");
    expect(() => parse([...required, "--pull-policy", "never"])).toThrow(
      /--pull-policy takes always, if-not-present, auto/,
    );
  });

  it("takes the image GC thresholds, interval and minimum age, from the flags or the environment", () => {
    expect(parse(required).agent.imageGc).toEqual({
      highPercent: 85,
      lowPercent: 80,
      intervalMs: 300_000,
      minAgeMs: 120_000,
    });
    expect(
      parse([
        ...required,
        "--image-gc-high-percent",
        "90",
        "--image-gc-low-percent",
        "70",
        "--image-gc-interval",
        "90s",
        "--image-min-age",
        "0s",
      ]).agent.imageGc,
    ).toEqual({ highPercent: 90, lowPercent: 70, intervalMs: 90_000, minAgeMs: 0 });
    expect(
      parse(required, {
        SCALAR_IMAGE_GC_HIGH_PERCENT: "95",
        SCALAR_IMAGE_GC_LOW_PERCENT: "60",
        SCALAR_IMAGE_GC_INTERVAL: "1h",
        SCALAR_IMAGE_MIN_AGE: "1500ms",
      }).agent.imageGc,
    ).toEqual({ highPercent: 95, lowPercent: 60, intervalMs: 3_600_000, minAgeMs: 1_500 });
    // 100 turns it off; the low mark stays valid.
    expect(parse([...required, "--image-gc-high-percent", "100"]).agent.imageGc.highPercent).toBe(100);
    expect(parse([...required, "--image-gc-interval", "2.5m"]).agent.imageGc.intervalMs).toBe(150_000);
  });

  it("says what is wrong with the image GC options", () => {
    for (const bad of ["0", "101", "85.5", "high", ""]) {
      expect(() => parse([...required, "--image-gc-high-percent", bad])).toThrow(
        new RegExp(`--image-gc-high-percent takes a whole number from 1 to 100, not "${bad}"`),
      );
    }
    expect(() => parse([...required, "--image-gc-low-percent", "0"])).toThrow(
      /--image-gc-low-percent takes a whole number from 1 to 100/,
    );
    expect(() => parse([...required, "--image-gc-low-percent", "85"])).toThrow(
      /--image-gc-low-percent \(85\) must be below --image-gc-high-percent \(85\)/,
    );
    expect(() => parse([...required, "--image-gc-high-percent", "50"])).toThrow(
      /--image-gc-low-percent \(80\) must be below --image-gc-high-percent \(50\)/,
    );
    expect(() => parse(required, { SCALAR_IMAGE_GC_LOW_PERCENT: "90" })).toThrow(/must be below/);
    expect(() => parse([...required, "--image-gc-interval", "300"])).toThrow(
      /--image-gc-interval takes a duration of at least 1s with a unit \(ms, s, m, h\), e.g. 90s or 5m, not "300"/,
    );
    expect(() => parse([...required, "--image-gc-interval", "10ms"])).toThrow(/at least 1s/);
    expect(() => parse([...required, "--image-min-age=-1m"])).toThrow(/--image-min-age takes a duration/);
    expect(() => parse([...required, "--image-min-age", "2 days"])).toThrow(/--image-min-age takes a duration/);
  });

  it("declares CPU and memory for a host standing in for a bigger node", () => {
    expect(parse(required).declared).toEqual({});
    expect(parse([...required, "--cpus", "208", "--memory-mib", "1900000"]).declared).toEqual({
      cpuMilli: 208_000,
      memoryMib: 1_900_000,
    });
    expect(parse([...required, "--cpus", "4"]).declared).toEqual({ cpuMilli: 4_000 });
    expect(() => parse([...required, "--cpus", "0"])).toThrow(/--cpus takes a whole number ≥ 1/);
    expect(() => parse([...required, "--cpus", "1.5"])).toThrow(/--cpus takes a whole number/);
    expect(() => parse([...required, "--memory-mib", "32"])).toThrow(/--memory-mib takes a whole number ≥ 64/);
  });

  it("takes the address peers reach the node at, from the flag or the environment", () => {
    expect(parse([...required, "--address", "10.0.3.7"]).declared).toEqual({ address: "10.0.3.7" });
    expect(parse(required, { SCALAR_NODE_ADDRESS: "node-7.internal" }).declared).toEqual({
      address: "node-7.internal",
    });
    expect(parse([...required, "--address", "fd00::7"]).declared).toEqual({ address: "fd00::7" });
    expect(() => parse([...required, "--address", "10.0.3.7; rm -rf /"])).toThrow(
      /--address takes an IP address or a DNS name/,
    );
  });

  it("runs no ingress unless given a port", () => {
    expect(parse(required).agent).not.toHaveProperty("ingress");
    expect(parse(required, { SCALAR_INGRESS_PORT: "" }).agent).not.toHaveProperty("ingress");
  });

  it("takes the ingress's port, listen address and URL, from the flags or the environment", () => {
    expect(
      parse([
        ...required,
        "--ingress-port",
        "8443",
        "--ingress-host",
        "10.0.3.7",
        "--ingress-url",
        "https://n7.nodes.example/",
      ]).agent.ingress,
    ).toEqual({ port: 8443, host: "10.0.3.7", url: "https://n7.nodes.example" });
    expect(
      parse(required, {
        SCALAR_INGRESS_PORT: "9000",
        SCALAR_INGRESS_HOST: "127.0.0.1",
        SCALAR_INGRESS_URL: "http://127.0.0.1:9000/edge",
      }).agent.ingress,
    ).toEqual({ port: 9000, host: "127.0.0.1", url: "http://127.0.0.1:9000/edge" });
    // The flag wins over the environment.
    expect(
      parse([...required, "--ingress-port", "81", "--address", "a"], { SCALAR_INGRESS_PORT: "9000" }).agent.ingress
        ?.port,
    ).toBe(81);
  });

  it("builds the ingress URL from --address, else the detected address, listening on every address", () => {
    expect(parse([...required, "--ingress-port", "8080", "--address", "node-7.internal"]).agent.ingress).toEqual({
      port: 8080,
      host: "0.0.0.0",
      url: "http://node-7.internal:8080",
    });
    expect(parseCli([...required, "--ingress-port", "8080"], {}, "h", "192.0.2.4").agent.ingress?.url).toBe(
      "http://192.0.2.4:8080",
    );
    expect(
      parseCli([...required, "--ingress-port", "8080", "--address", "fd00::7"], {}, "h", "192.0.2.4").agent.ingress
        ?.url,
    ).toBe("http://[fd00::7]:8080");
    expect(defaultIngressUrl("fd00::7", 1)).toBe("http://[fd00::7]:1");
  });

  it("says what is wrong with the ingress options", () => {
    for (const bad of ["0", "65536", "80.5", "http", " "]) {
      expect(() => parse([...required, "--ingress-port", bad, "--address", "10.0.0.1"])).toThrow(
        new RegExp(`--ingress-port takes a port number from 1 to 65535, not "${bad}"`),
      );
    }
    expect(() => parse([...required, "--ingress-port", "8080"])).toThrow(
      /--ingress-port needs --ingress-url or --address: this host has no address/,
    );
    for (const bad of ["ftp://n7.example", "http://n7.example/?q=1", "http://u:p@n7.example", "n7.example:8080", "x"]) {
      expect(() => parse([...required, "--ingress-port", "8080", "--ingress-url", bad])).toThrow(
        /--ingress-url takes an http:\/\/ or https:\/\/ URL without query, fragment or credentials/,
      );
    }
    expect(() =>
      parse([...required, "--ingress-port", "8080", "--address", "a", "--ingress-host", "0.0.0.0; x"]),
    ).toThrow(/--ingress-host takes an IP address or a host name/);
    expect(() => parse([...required, "--ingress-url", "http://n7.example:8080"])).toThrow(
      /--ingress-host and --ingress-url go with --ingress-port/,
    );
    expect(() => parse(required, { SCALAR_INGRESS_HOST: "127.0.0.1" })).toThrow(/go with --ingress-port/);
    expect(() => parse([...required, "--ingress-port", "8080", "--address", "a"], { SCALAR_INGRESS_URL: "x" })).toThrow(
      UsageError,
    );
  });

  it("takes the engine timeout in seconds (60 unless told), from the flag or the environment, and checks it", () => {
    expect(parse(required).agent.engineTimeoutMs).toBe(60_000);
    expect(parse([...required, "--engine-timeout", "90"]).agent.engineTimeoutMs).toBe(90_000);
    expect(parse(required, { SCALAR_ENGINE_TIMEOUT_S: "30" }).agent.engineTimeoutMs).toBe(30_000);
    expect(parse([...required, "--engine-timeout", "5"], { SCALAR_ENGINE_TIMEOUT_S: "30" }).agent.engineTimeoutMs).toBe(
      5_000,
    );
    expect(parse(required, { SCALAR_ENGINE_TIMEOUT_S: "" }).agent.engineTimeoutMs).toBe(60_000);
    for (const bad of ["0", "-1", "1.5", "60s", "soon"]) {
      expect(() => parse([...required, `--engine-timeout=${bad}`])).toThrow(
        `--engine-timeout (SCALAR_ENGINE_TIMEOUT_S) takes a whole number of seconds, at least 1, not "${bad}"`,
      );
    }
    expect(() => parse(required, { SCALAR_ENGINE_TIMEOUT_S: "x" })).toThrow(UsageError);
  });

  it("takes the pull stall timeout in seconds (300 unless told), from the flag or the environment, and checks it", () => {
    expect(parse(required).agent.pullStallMs).toBe(300_000);
    expect(parse([...required, "--pull-stall-timeout", "600"]).agent.pullStallMs).toBe(600_000);
    expect(parse(required, { SCALAR_PULL_STALL_TIMEOUT_S: "120" }).agent.pullStallMs).toBe(120_000);
    expect(
      parse([...required, "--pull-stall-timeout", "1"], { SCALAR_PULL_STALL_TIMEOUT_S: "120" }).agent.pullStallMs,
    ).toBe(1_000);
    expect(parse(required, { SCALAR_PULL_STALL_TIMEOUT_S: "" }).agent.pullStallMs).toBe(300_000);
    // Apart from the engine timeout.
    expect(parse([...required, "--pull-stall-timeout", "600"]).agent.engineTimeoutMs).toBe(60_000);
    expect(parse([...required, "--engine-timeout", "90"]).agent.pullStallMs).toBe(300_000);
    for (const bad of ["0", "-1", "1.5", "300s", "5m", " "]) {
      expect(() => parse([...required, `--pull-stall-timeout=${bad}`])).toThrow(
        `--pull-stall-timeout (SCALAR_PULL_STALL_TIMEOUT_S) takes a whole number of seconds, at least 1, not "${bad}"`,
      );
    }
    expect(() => parse(required, { SCALAR_PULL_STALL_TIMEOUT_S: "x" })).toThrow(
      `--pull-stall-timeout (SCALAR_PULL_STALL_TIMEOUT_S) takes a whole number of seconds, at least 1, not "x"`,
    );
  });

  it("says what is missing or wrong", () => {
    expect(() => parse([])).toThrow(/control plane URL is missing/);
    expect(() => parse(["--api-url", "not a url", "--token", "x"])).toThrow(/not a URL/);
    expect(() => parse(["--api-url", "http://x"])).toThrow(/node token is missing/);
    expect(() => parse([...required, "--bogus"])).toThrow(UsageError);
    expect(() => parse([...required, "--log-level", "loud"])).toThrow(/log-level/);
    expect(parse(["--help"]).help).toBe(true);
  });
});

describe("the scalar-agent program", () => {
  const bin = resolve(import.meta.dirname, "bin/scalar-agent.mjs");
  const run = (...args: string[]) =>
    spawnSync(process.execPath, [bin, ...args], { encoding: "utf8", env: { PATH: process.env.PATH } });

  it("prints its usage with --help and exits 0", () => {
    const r = run("--help");
    expect(r.status).toBe(0);
    expect(r.stdout).toMatch(/^scalar-agent: runs Scalar placements/);
  });

  it("lists the ingress options in its usage", () => {
    const r = run("--help");
    for (const flag of ["--ingress-port N", "--ingress-host HOST", "--ingress-url URL"])
      expect(r.stdout).toContain(flag);
    expect(r.stdout).toMatch(/SCALAR_INGRESS_PORT/);
    expect(r.stdout).toMatch(/--engine-timeout S .*\n(.*\n)*.*SCALAR_ENGINE_TIMEOUT_S; default 60\)/);
    expect(r.stdout).toMatch(/--pull-stall-timeout S .*\n(.*\n)*.*SCALAR_PULL_STALL_TIMEOUT_S; default 300\)/);
  });

  it("exits 2 with the reason when the configuration is incomplete", () => {
    const r = run("--api-url", "http://127.0.0.1:9");
    expect(r.status).toBe(2);
    expect(r.stderr).toMatch(/node token is missing/);
  });
});
