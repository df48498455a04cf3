import fc from "fast-check";
import { describe, expect, it } from "vitest";
import type { AgentNode } from "./agent-node";
import { NodeTokenCache } from "./token-cache";

const node = (id: string): AgentNode => ({
  id,
  region: "us-west-1",
  zone: "z",
  gpuModel: "H100",
  gpuCount: 8,
  cpuMilli: 64_000,
  memoryMib: 512_000,
  state: "ready",
  blockId: null,
});

describe("NodeTokenCache", () => {
  it("answers a verification for ttl ms, then asks again", () => {
    const cache = new NodeTokenCache(10_000);
    cache.set("h1", node("n1"), 1_000);
    expect(cache.get("h1", 1_000)?.id).toBe("n1");
    expect(cache.get("h1", 10_999)?.id).toBe("n1");
    expect(cache.get("h1", 11_000)).toBeNull();
    // The expired entry is gone, not just hidden.
    expect(cache.size).toBe(0);
    expect(cache.get("other", 1_000)).toBeNull();
  });

  it("forgets every token of a node at once (rotation, revocation)", () => {
    const cache = new NodeTokenCache(10_000);
    cache.set("old", node("n1"), 0);
    cache.set("new", node("n1"), 0);
    cache.set("h2", node("n2"), 0);
    cache.forgetNode("n1");
    expect(cache.get("old", 1)).toBeNull();
    expect(cache.get("new", 1)).toBeNull();
    expect(cache.get("h2", 1)?.id).toBe("n2");
  });

  it("keeps an answer no later than notAfter (a credential's own expiry)", () => {
    const cache = new NodeTokenCache(10_000);
    cache.set("h1", node("n1"), 0, 2_500);
    expect(cache.get("h1", 2_499)?.id).toBe("n1");
    expect(cache.get("h1", 2_500)).toBeNull();
    cache.set("h2", node("n2"), 0, 60_000);
    expect(cache.get("h2", 10_000)).toBeNull();
  });

  it("a verification set again starts a new window", () => {
    const cache = new NodeTokenCache(10_000);
    cache.set("h1", node("n1"), 0);
    cache.set("h1", node("n1"), 5_000);
    expect(cache.get("h1", 14_999)?.id).toBe("n1");
  });

  it("never holds more than its bound, dropping the least recently set", () => {
    fc.assert(
      fc.property(
        fc.array(fc.integer({ min: 0, max: 30 }), { maxLength: 200 }),
        fc.integer({ min: 1, max: 8 }),
        (keys, max) => {
          const cache = new NodeTokenCache(1_000_000, max);
          for (const [t, k] of keys.entries()) cache.set(`h${k}`, node(`n${k}`), t);
          expect(cache.size).toBeLessThanOrEqual(max);
          // The last `max` distinct keys set are the ones kept.
          const recent = [...new Set([...keys].reverse())].slice(0, max);
          for (const k of recent) expect(cache.get(`h${k}`, keys.length)?.id).toBe(`n${k}`);
        },
      ),
    );
  });
});
