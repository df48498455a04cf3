/**
 * Records → JSON exactly as the reference documents them: v0 times as ISO strings and prices as
 * integer cents for the whole block (§5.1–5.3); v1 times as epoch seconds and prices as cents per
 * node-hour (§5.4).
 */
import type { Account } from "./accounts";
import type { ZoneSpec } from "./catalog";
import type { ContractRecord, Market, OrderRecord, QuoteResult } from "./market";
import type { NodeRecord, VmRecord } from "./nodes";
import { toWire } from "./shape";
import type { SupplyBook } from "./supply";

const iso = (ms: number) => new Date(ms).toISOString();
const isoOrNull = (ms: number | null) => (ms === null ? null : iso(ms));
const seconds = (ms: number) => Math.floor(ms / 1000);
const secondsOrNull = (ms: number | null) => (ms === null ? null : seconds(ms));

export function orderJson(order: OrderRecord): Record<string, unknown> {
  return {
    object: "order",
    id: order.id,
    side: order.side,
    status: order.status,
    instance_type: order.instanceType,
    quantity: order.quantity,
    start_at: iso(order.startAt),
    end_at: iso(order.endAt),
    price: order.price,
    flags: { ...order.flags },
    executed: order.executed,
    executed_at: isoOrNull(order.executedAt),
    execution_price: order.executionPrice,
    cancelled: order.cancelled,
    cancelled_at: isoOrNull(order.cancelledAt),
    rejected: order.rejected,
    rejected_reason: order.rejectedReason,
    colocate_with: order.colocateWith,
    cluster: order.zone,
    created_at: iso(order.createdAt),
    duration: seconds(order.endAt - order.startAt),
  };
}

export function contractJson(market: Market, contract: ContractRecord, now: number): Record<string, unknown> {
  if (now < contract.activeAt) return { object: "contract", id: contract.id, status: "pending" };
  return {
    object: "contract",
    id: contract.id,
    status: "active",
    created_at: iso(contract.createdAt),
    instance_type: contract.instanceType,
    shape: toWire(contract.shape),
    state: market.contractState(contract),
    is_node: contract.isNode,
    cluster_id: null,
    zone: contract.zone,
    colocate_with: contract.colocateWith,
    procurement_id: contract.procurementId,
  };
}

export function quoteJson(result: QuoteResult): Record<string, unknown> {
  const q = result.quote;
  if (!q) return { object: "quote", side: result.side, quote: null, no_quote_reason: result.noQuoteReason };
  const window = {
    price: q.price,
    quantity: q.quantity,
    start_at: q.startNow ? "NOW" : iso(q.start),
    end_at: iso(q.end),
  };
  return {
    object: "quote",
    side: result.side,
    quote:
      result.side === "buy"
        ? { ...window, instance_type: q.instanceType, zone: q.zone }
        : { ...window, contract_id: q.contractId, instance_type: q.instanceType, zone: q.zone },
    no_quote_reason: null,
  };
}

function vmJson(vm: VmRecord, lower: boolean): Record<string, unknown> {
  return {
    object: "vm",
    id: vm.id,
    status: lower ? vm.status.toLowerCase() : vm.status,
    created_at: seconds(vm.createdAt),
    updated_at: seconds(vm.updatedAt),
    start_at: secondsOrNull(vm.startAt),
    end_at: secondsOrNull(vm.endAt),
    image_id: vm.imageId,
    zone: vm.zone,
  };
}

export function nodeJson(node: NodeRecord, vmStatusCase: "title" | "lower" = "title"): Record<string, unknown> {
  const lower = vmStatusCase === "lower";
  const current = node.vms[node.vms.length - 1];
  return {
    object: "node",
    id: node.id,
    name: node.name,
    zone: node.zone,
    gpu_type: node.gpuType,
    owner: node.accountId,
    status: node.status,
    created_at: seconds(node.createdAt),
    updated_at: seconds(node.updatedAt),
    start_at: seconds(node.startAt),
    end_at: node.nodeType === "reserved" ? secondsOrNull(node.endAt) : null,
    deleted_at: secondsOrNull(node.deletedAt),
    procurement_id: node.procurementId,
    max_price_per_node_hour: node.maxPricePerNodeHour,
    node_type: node.nodeType,
    vms: { object: "list", data: node.vms.map((vm) => vmJson(vm, lower)) },
    current_vm: current ? vmJson(current, lower) : null,
  };
}

export function sshJson(vm: VmRecord, hostname: string | null, port: number): Record<string, unknown> {
  const ready = vm.keysUpdatedAt !== null;
  return {
    ssh_hostname: hostname ?? `${vm.id}.vms.sfcompute.dev`,
    ssh_port: port,
    ssh_host_keys: ready ? [{ key_type: "ssh-ed25519", base64_encoded_key: hostKey(vm.hostKeySeed) }] : [],
    last_successful_key_update: ready ? seconds(vm.keysUpdatedAt!) : null,
    last_attempted_key_update: ready ? seconds(vm.keysUpdatedAt!) : null,
  };
}

/** An OpenSSH ed25519 public key blob (type name + 32 key bytes), derived from the VM's seed. */
function hostKey(seed: string): string {
  const name = "ssh-ed25519";
  const bytes: number[] = [0, 0, 0, name.length, ...[...name].map((c) => c.charCodeAt(0)), 0, 0, 0, 32];
  for (let i = 0; i < 32; i++) bytes.push(seed.charCodeAt(i % seed.length) ^ (i * 37));
  return btoa(String.fromCharCode(...bytes.map((b) => b & 0xff)));
}

export function zoneJson(zone: ZoneSpec, supply: SupplyBook, now: number): Record<string, unknown> {
  return {
    object: "zone",
    name: zone.name,
    display_name: zone.display_name,
    available_capacity: supply.freeRuns(zone, now, 48, now).map((r) => ({
      start_timestamp: seconds(r.start),
      end_timestamp: seconds(r.end),
      quantity: r.quantity,
    })),
    region: zone.region,
    hardware_type: zone.hardware_type,
    interconnect_type: zone.interconnect_type,
    delivery_type: zone.delivery_type,
  };
}

export function balancesJson(account: Account): Record<string, unknown> {
  return {
    object: "balances",
    available_balance_cents: account.availableCents,
    current_balance_cents: account.balanceCents,
    current_overage_cents: 0,
    overage_limit_cents: 0,
    updated_at: seconds(account.updatedAt),
  };
}

export function legacyBalanceJson(account: Account): Record<string, unknown> {
  return {
    object: "balance",
    available: { amount: account.availableCents, currency: "usd" },
    reserved: { amount: account.heldCents, currency: "usd" },
  };
}

export const list = (data: unknown[], hasMore = false) => ({ object: "list", data, has_more: hasMore });
