/** The contract: the committed docs/openapi.json is what the routes produce, and /docs renders it. */
import { describe, expect, it } from "vitest";
import committed from "../../docs/openapi.json";
import { call } from "./test-support";

describe("OpenAPI", () => {
  it("serves the document the routes define, identical to docs/openapi.json (run `npm run openapi`)", async () => {
    const res = await call("GET", "/openapi.json", null);
    expect(res.status).toBe(200);
    expect(res.json).toEqual(committed);
  });

  it("documents every route of the Worker, with a security scheme and error responses", () => {
    const paths = committed.paths as Record<string, Record<string, { security?: unknown[]; responses: object }>>;
    const operations = Object.entries(paths).flatMap(([path, ops]) =>
      Object.entries(ops).map(([method, op]) => ({ path, method, op })),
    );
    expect(operations.length).toBeGreaterThanOrEqual(27);
    for (const { path, method, op } of operations) {
      expect(op.security, `${method} ${path}`).toBeDefined();
      expect(Object.keys(op.responses), `${method} ${path}`).toEqual(expect.arrayContaining(["400", "401"]));
    }
  });

  it("writes every pattern as a regular expression a client can use as it is (no flags appended)", () => {
    const patterns: string[] = [];
    const walk = (v: unknown): void => {
      if (Array.isArray(v)) v.forEach(walk);
      else if (v && typeof v === "object") {
        for (const [k, x] of Object.entries(v)) {
          if (k === "pattern" && typeof x === "string") patterns.push(x);
          else walk(x);
        }
      }
    };
    walk(committed);
    expect(patterns.length).toBeGreaterThan(5);
    for (const p of patterns) {
      expect(p, p).toMatch(/^\^.*\$$/);
      expect(() => new RegExp(p)).not.toThrow();
    }
  });

  it("renders a human-readable page listing every operation", async () => {
    const res = await call("GET", "/docs", null);
    expect(res.status).toBe(200);
    expect(res.headers.get("content-type")).toContain("text/html");
    for (const path of Object.keys(committed.paths)) expect(res.text).toContain(`<code>${path}</code>`);
    expect(res.text).toContain("JobCreate");
  });
});
