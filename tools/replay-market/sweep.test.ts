import { execFile } from "node:child_process";
import { fileURLToPath } from "node:url";
import { promisify } from "node:util";
import { describe, expect, it } from "vitest";

const FIXTURE = fileURLToPath(new URL("./fixtures/philly-h720-723.csv", import.meta.url));
const root = fileURLToPath(new URL("../..", import.meta.url));
const run = promisify(execFile);

describe("replay:sweep", () => {
  it("runs each setting on every window and seed against one reactive run each, and summarises them", async () => {
    const { stdout, stderr } = await run(
      "npx",
      [
        "tsx",
        "tools/replay-market/sweep.ts",
        "--jobs",
        FIXTURE,
        "--windows",
        "720",
        "--seeds",
        "1,2",
        "--hours",
        "3",
        "--tune",
        "default={}",
        "--tune",
        'wide={"config":{"fast":{"minHeadroomGpus":32}}}',
      ],
      { cwd: root, env: { ...process.env, REPLAY_ONLY: "", REPLAY_TUNE: "" } },
    );
    // Two reactive runs and four Scalar runs, with progress on stderr.
    expect(stderr).toContain("[6/6,");
    const result = JSON.parse(stdout);
    expect(result.runs).toHaveLength(4);
    expect(Object.keys(result.settings)).toEqual(["default", "wide"]);
    for (const name of ["default", "wide"]) {
      const mine = result.runs.filter((r: { setting: string }) => r.setting === name);
      expect(mine.map((r: { seed: number }) => r.seed).sort()).toEqual([1, 2]);
      expect(result.settings[name].runs_with_warnings).toBe(0);
      for (const r of mine) {
        expect(r.warnings).toEqual([]);
        const vs = (r.scalar.spend_usd / r.reactive_spend_usd - 1) * 100;
        expect(r.spend_vs_reactive_pct).toBeCloseTo(vs, 1);
      }
      const vs = mine.map((r: { spend_vs_reactive_pct: number }) => r.spend_vs_reactive_pct);
      const s = result.settings[name].spend_vs_reactive_pct;
      expect(s.mean).toBeCloseTo((vs[0] + vs[1]) / 2, 1);
      expect([s.best, s.worst]).toEqual([Math.min(...vs), Math.max(...vs)]);
    }
    // The same reactive run is the reference of both settings; four nodes of headroom cost more.
    const bySeed = (name: string, seed: number) =>
      result.runs.find((r: { setting: string; seed: number }) => r.setting === name && r.seed === seed);
    expect(bySeed("wide", 1).reactive_spend_usd).toBe(bySeed("default", 1).reactive_spend_usd);
    expect(bySeed("wide", 1).scalar.spend_usd).toBeGreaterThan(bySeed("default", 1).scalar.spend_usd);
    // The defaults are the replay's own run.
    const single = JSON.parse(
      (
        await run(
          "npx",
          ["tsx", "tools/replay-market/cli.ts", "--jobs", FIXTURE, "--from-hour", "720", "--hours", "3", "--seed", "1"],
          { cwd: root, env: { ...process.env, REPLAY_ONLY: "", REPLAY_TUNE: "" } },
        )
      ).stdout,
    );
    expect(bySeed("default", 1).scalar).toEqual(single.scalar);
    expect(bySeed("default", 1).reactive_spend_usd).toBe(single.reactive.spend_usd);
  }, 120_000);

  it("refuses a setting that is not NAME=JSON", async () => {
    await expect(
      run("npx", ["tsx", "tools/replay-market/sweep.ts", "--jobs", FIXTURE, "--tune", "lindy={bad"], { cwd: root }),
    ).rejects.toMatchObject({ code: 2, stderr: expect.stringContaining("not JSON") });
    await expect(run("npx", ["tsx", "tools/replay-market/sweep.ts"], { cwd: root })).rejects.toMatchObject({
      code: 2,
      stderr: expect.stringContaining("usage: npm run replay:sweep"),
    });
  }, 60_000);
});
