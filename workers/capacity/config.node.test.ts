/** The capacity knobs of the Worker's environment: overrides, and loud errors for bad values. */
import { describe, expect, it } from "vitest";
import { estimateDemand } from "../../core/autoscaler/demand";
import {
  CAPACITY_CONFIG,
  CapacityConfigError,
  capacityClock,
  capacityConfigFromEnv,
  DEMAND_WINDOW,
  nodeIngressFromEnv,
} from "./config";

describe("CAPACITY_FAST_HEADROOM_GPUS", () => {
  it("keeps the policy's own headroom when unset or empty", () => {
    expect(capacityConfigFromEnv({})).toBe(CAPACITY_CONFIG);
    expect(capacityConfigFromEnv({ CAPACITY_FAST_HEADROOM_GPUS: " " })).toBe(CAPACITY_CONFIG);
  });

  it("overrides only the Fast headroom", () => {
    const zero = capacityConfigFromEnv({ CAPACITY_FAST_HEADROOM_GPUS: "0" });
    expect(zero.fast).toEqual({ ...CAPACITY_CONFIG.fast, minHeadroomGpus: 0 });
    expect(zero.flex).toBe(CAPACITY_CONFIG.flex);
    expect(capacityConfigFromEnv({ CAPACITY_FAST_HEADROOM_GPUS: "16" }).fast.minHeadroomGpus).toBe(16);
    expect(CAPACITY_CONFIG.fast.minHeadroomGpus).toBe(8); // the shared constant is untouched
  });

  it.each(["-1", "1.5", "eight", "1e3", "0x10", "1025"])("refuses %s", (raw) => {
    expect(() => capacityConfigFromEnv({ CAPACITY_FAST_HEADROOM_GPUS: raw })).toThrow(CapacityConfigError);
    expect(() => capacityConfigFromEnv({ CAPACITY_FAST_HEADROOM_GPUS: raw })).toThrow(/whole number of GPUs/);
  });
});

describe("CAPACITY_SELL_BACK", () => {
  it("keeps selling back when unset or empty", () => {
    expect(capacityConfigFromEnv({ CAPACITY_SELL_BACK: "" })).toBe(CAPACITY_CONFIG);
    expect(CAPACITY_CONFIG.sellBack.enabled).toBeUndefined(); // the policy's default: on
  });

  it("switches only sell-back on or off, beside the other knobs", () => {
    const off = capacityConfigFromEnv({ CAPACITY_SELL_BACK: "off", CAPACITY_FAST_HEADROOM_GPUS: "0" });
    expect(off.sellBack).toEqual({ ...CAPACITY_CONFIG.sellBack, enabled: false });
    expect(off.fast.minHeadroomGpus).toBe(0);
    expect(off.flex).toBe(CAPACITY_CONFIG.flex);
    const on = capacityConfigFromEnv({ CAPACITY_SELL_BACK: " on " }, off);
    expect(on.sellBack.enabled).toBe(true);
  });

  it.each(["OFF", "no", "false", "0", "disabled"])("refuses %s", (raw) => {
    expect(() => capacityConfigFromEnv({ CAPACITY_SELL_BACK: raw })).toThrow(CapacityConfigError);
    expect(() => capacityConfigFromEnv({ CAPACITY_SELL_BACK: raw })).toThrow(/"on" or "off"/);
  });
});

describe("CAPACITY_CLOCK", () => {
  let wall = 1_000_000;
  const clock = () => wall;

  it("is the wall clock by default", () => {
    expect(capacityClock({}, 5_000_000, clock)).toBe(clock);
    expect(capacityClock({ CAPACITY_CLOCK: "wall" }, undefined, clock)).toBe(clock);
  });

  it("with trigger, starts at the trigger's time and runs on with the wall clock", () => {
    wall = 1_000_000;
    const now = capacityClock({ CAPACITY_CLOCK: "trigger" }, 4_600_000, clock);
    expect(now()).toBe(4_600_000);
    wall += 2_500;
    expect(now()).toBe(4_602_500);
  });

  it("refuses an unknown mode, or trigger without a trigger time", () => {
    expect(() => capacityClock({ CAPACITY_CLOCK: "virtual" }, 1, clock)).toThrow(/"wall" or "trigger"/);
    expect(() => capacityClock({ CAPACITY_CLOCK: "trigger" }, undefined, clock)).toThrow(/scheduledTime/);
  });
});

describe("DEMAND_WINDOW", () => {
  const now = 10 * 3_600_000;
  const fast = (gpus: number, agoMs: number) => ({ at: now - agoMs, tier: "fast" as const, gpus });
  const rate = (arrivals: ReturnType<typeof fast>[]) =>
    estimateDemand({ arrivals, concurrency: [] }, now, DEMAND_WINDOW).fastGpusAtRecentRate;

  it("asks for one big Fast job's nodes once, and for one or two small jobs as they are: no stream yet", () => {
    expect(rate([fast(16, 30_000)])).toBe(16);
    expect(rate([fast(1, 30_000)])).toBe(1);
    expect(rate([fast(1, 30_000), fast(2, 60_000)])).toBe(3);
  });

  it("projects three or more small Fast jobs in the last burst over the headroom window", () => {
    const three = [fast(1, 30_000), fast(1, 60_000), fast(1, 90_000)];
    expect(rate(three)).toBe(Math.ceil((3 * DEMAND_WINDOW.windowMs) / DEMAND_WINDOW.burstMs));
  });
});

describe("INGRESS_URL_TEMPLATE and INGRESS_PORT", () => {
  it("give bought nodes no ingress without a template", () => {
    expect(nodeIngressFromEnv({})).toBeNull();
    expect(nodeIngressFromEnv({ INGRESS_PORT: "9000" })).toBeNull();
  });

  it("give each node its own URL and the port (default 8090)", () => {
    const of = nodeIngressFromEnv({ INGRESS_URL_TEMPLATE: "https://{node_id}.nodes.example.com" })!;
    expect(of("cap-1a2b-0")).toEqual({ ingress_port: 8090, ingress_url: "https://cap-1a2b-0.nodes.example.com" });
    const tunnel = nodeIngressFromEnv({
      INGRESS_URL_TEMPLATE: "https://edge.example.com/n/{node_id}",
      INGRESS_PORT: "9000",
    })!;
    expect(tunnel("n1")).toEqual({ ingress_port: 9000, ingress_url: "https://edge.example.com/n/n1" });
  });

  it.each([
    [{ INGRESS_URL_TEMPLATE: "https://nodes.example.com" }, /must contain \{node_id\}/],
    [{ INGRESS_URL_TEMPLATE: "ftp://{node_id}.example.com" }, /http\(s\) URL/],
    [{ INGRESS_URL_TEMPLATE: "https://{node_id}.example.com/?a=1" }, /without query/],
    [{ INGRESS_URL_TEMPLATE: "https://{node_id}.example.com", INGRESS_PORT: "0" }, /INGRESS_PORT must be/],
    [{ INGRESS_PORT: "http" }, /INGRESS_PORT must be/],
  ])("refuses %o", (env, message) => {
    expect(() => nodeIngressFromEnv(env)).toThrow(CapacityConfigError);
    expect(() => nodeIngressFromEnv(env)).toThrow(message);
  });
});
