/**
 * Everything about the simulated market that the reference leaves open ([I] in
 * /work/shared/reference/sfcompute-api.md) is a setting here, with a default that follows the
 * reference's best evidence. Change settings at construction, or at runtime with
 * `engine.configure()` / `PATCH /_sim/config`.
 */
import { type Catalog, DEFAULT_CATALOG } from "./catalog";
import { DAY_MS, MINUTE_MS } from "./clock";
import type { ErrorStyle } from "./errors";
import { DEFAULT_PRICE_CONFIG, type PriceConfig } from "./prices";
import { DEFAULT_SUPPLY_CONFIG, type SupplyConfig } from "./supply";

export interface MarketSettings {
  /** Orders are matched asynchronously this long after they are accepted, ms, uniform in [min, max] (§15.4: 50–500 ms). */
  matchDelayMs: [number, number];
  /** A DELETE takes effect this long after it is accepted, ms. */
  cancelDelayMs: [number, number];
  /** `GET /v0/orders/{id}` answers 404 for this long after the POST (§12: the CLI tolerates it). */
  orderVisibilityDelayMs: number;
  /** A new contract is `{object, id, status:"pending"}` with no shape for this long (§5.2). */
  contractPendingMs: number;
  /** Deducted from a sell's fill price (§4.5: flat $/node-h plus basis points of the total). */
  resaleFee: { flatCentsPerNodeHour: number; percentageBps: number };
  /** The same Idempotency-Key with a different body: "error" → 400 idempotency_error, "replay" → the original. */
  idempotencyMismatch: "error" | "replay";
  /** 403 `trading_engine.is_halted` on every order. */
  halted: boolean;
  maxQuantity: number;
  maxDurationMs: number;
  /** A start within this of now counts as now (§7.1: ±1 minute). */
  startToleranceMs: number;
  /** How many start times and durations a quote tries. */
  quoteMaxStarts: number;
  quoteMaxDurations: number;
  /**
   * Sells by `contract_id` on `/v0/orders` and `/v0/quote` (§16: whether SF Compute still takes them
   * is unknown; the field left its schema in Feb 2026). "reject": both answer 400.
   */
  v0Sells: "accept" | "reject";
}

export interface NodeSettings {
  /** A node reports `running` this long after its time starts (§15.8: about 60 s). */
  nodeStartDelayMs: number;
  /** Its VM goes Pending → Running after this long, ms, uniform in [min, max] (§14: up to 5–10 min). */
  bootDelayMs: [number, number];
  /** Longest node name (the CLI schema says 256; the SDK's doc comment 128). */
  nameMaxLength: number;
  /** Names unique per account among nodes not deleted (409 otherwise). */
  uniqueNames: boolean;
  /** What `/v0/vms/ssh` answers: a fixed host, or null for `<vm_id>.vms.sfcompute.dev`. */
  sshHostname: string | null;
  sshPort: number;
  /** Status of `DELETE /v1/nodes/{id}` while a VM is pending or running. */
  deleteWithActiveVmStatus: 400 | 409;
  /** VM statuses as the schema writes them ("Running") or as some docs examples do ("running"). */
  vmStatusCase: "title" | "lower";
}

export interface SimSettings {
  seed: string | number;
  catalog: Catalog;
  prices: PriceConfig;
  supply: SupplyConfig;
  market: MarketSettings;
  nodes: NodeSettings;
  errorStyle: ErrorStyle;
}

export const DEFAULT_MARKET_SETTINGS: MarketSettings = {
  matchDelayMs: [100, 300],
  cancelDelayMs: [50, 150],
  orderVisibilityDelayMs: 0,
  contractPendingMs: 0,
  resaleFee: { flatCentsPerNodeHour: 0, percentageBps: 500 },
  idempotencyMismatch: "error",
  halted: false,
  maxQuantity: 1024,
  maxDurationMs: 3 * 365 * DAY_MS,
  startToleranceMs: MINUTE_MS,
  quoteMaxStarts: 24,
  quoteMaxDurations: 4,
  v0Sells: "accept",
};

export const DEFAULT_NODE_SETTINGS: NodeSettings = {
  nodeStartDelayMs: 60_000,
  bootDelayMs: [240_000, 600_000],
  nameMaxLength: 256,
  uniqueNames: true,
  sshHostname: null,
  sshPort: 22,
  deleteWithActiveVmStatus: 409,
  vmStatusCase: "title",
};

export function defaultSettings(seed: string | number = 1): SimSettings {
  return {
    seed,
    catalog: DEFAULT_CATALOG,
    prices: { ...DEFAULT_PRICE_CONFIG },
    supply: { ...DEFAULT_SUPPLY_CONFIG },
    market: { ...DEFAULT_MARKET_SETTINGS },
    nodes: { ...DEFAULT_NODE_SETTINGS },
    errorStyle: "current",
  };
}
