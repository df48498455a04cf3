/**
 * SF Compute's response shapes (reference §5, §4.2, §4.3), validated with zod so a change on their
 * side fails loudly at the edge instead of as a NaN in the autoscaler. Status enums take every value
 * any source has shown (§6.1); VM statuses are accepted in either case (§5.4). Money comes out as
 * the branded unit types of ./units.
 */
import { z } from "zod";
import type { BlockCents, Cents, CentsPerNodeHour, EpochSeconds } from "./units";

const blockCents = z
  .number()
  .int()
  .transform((n) => n as BlockCents);
const cents = z
  .number()
  .int()
  .transform((n) => n as Cents);
const nodeHourCents = z
  .number()
  .int()
  .transform((n) => n as CentsPerNodeHour);
const epoch = z
  .number()
  .int()
  .transform((n) => n as EpochSeconds);

export const ORDER_STATUSES = [
  "pending",
  "open",
  "filled",
  "cancelled",
  "rejected",
  "expired",
  "partially_filled",
] as const;
export const OrderStatus = z.enum(ORDER_STATUSES);
export type OrderStatus = z.infer<typeof OrderStatus>;
export const FINAL_ORDER_STATUSES: ReadonlySet<OrderStatus> = new Set(["filled", "cancelled", "rejected", "expired"]);

export const OrderFlags = z.object({
  ioc: z.boolean().optional(),
  post_only: z.boolean().optional(),
  market: z.boolean().optional(),
  prorate: z.boolean().optional(),
});
export type OrderFlags = z.infer<typeof OrderFlags>;

export const Order = z.object({
  object: z.literal("order"),
  id: z.string(),
  side: z.enum(["buy", "sell"]),
  status: OrderStatus,
  instance_type: z.string(),
  quantity: z.number().int(),
  start_at: z.string(),
  end_at: z.string(),
  /** Cents for the whole block. */
  price: blockCents,
  flags: OrderFlags.nullish(),
  executed: z.boolean(),
  executed_at: z.string().nullish(),
  execution_price: blockCents.nullish(),
  cancelled: z.boolean(),
  cancelled_at: z.string().nullish(),
  rejected: z.boolean().nullish(),
  rejected_reason: z.string().nullish(),
  colocate_with: z.array(z.string()).nullish(),
  cluster: z.string().nullish(),
  created_at: z.string(),
  duration: z.number().nullish(),
});
export type Order = z.infer<typeof Order>;

export const CreatedOrder = z.object({
  object: z.literal("order"),
  status: OrderStatus,
  id: z.string(),
  idempotency_key: z.string().nullish(),
});
export type CreatedOrder = z.infer<typeof CreatedOrder>;

export const PendingAck = z.object({ object: z.literal("pending") });

export const ContractShape = z.object({
  intervals: z.array(z.string()),
  quantities: z.array(z.number().int().nonnegative()),
});

/** A contract with its shape: `active`, or `pending` in the full form (reference §5.2). */
export const ShapedContract = z.object({
  object: z.literal("contract"),
  id: z.string(),
  status: z.enum(["active", "pending"]),
  created_at: z.string(),
  instance_type: z.string(),
  shape: ContractShape,
  state: z.enum(["Upcoming", "Active", "Expired"]),
  is_node: z.boolean().nullish(),
  cluster_id: z.string().nullish(),
  zone: z.string().nullish(),
  colocate_with: z.array(z.string()).nullish(),
  procurement_id: z.string().nullish(),
});
/**
 * A contract just created may come back with no shape yet (an older CLI type, reference §5.2).
 * Tried after the shaped form, so a shaped pending contract keeps its shape.
 */
export const PendingContract = z.object({
  object: z.literal("contract"),
  id: z.string(),
  status: z.literal("pending"),
});
export const Contract = z.union([ShapedContract, PendingContract]);
export type ShapedContract = z.infer<typeof ShapedContract>;
export type Contract = z.infer<typeof Contract>;

export const NO_QUOTE_REASONS = [
  "no_matching_clusters",
  "no_availability",
  "bid_price_too_low",
  "ask_price_too_high",
  "internal_solver_error",
] as const;

export const Quote = z.object({
  object: z.literal("quote"),
  side: z.enum(["buy", "sell"]),
  quote: z
    .object({
      /** Cents for the whole block. */
      price: blockCents,
      quantity: z.number().int(),
      start_at: z.string(),
      end_at: z.string(),
      instance_type: z.string().nullish(),
      zone: z.string().nullish(),
      contract_id: z.string().nullish(),
    })
    .nullish(),
  no_quote_reason: z.union([z.enum(NO_QUOTE_REASONS), z.string()]).nullish(),
});
export type Quote = z.infer<typeof Quote>;

export const Balances = z.object({
  object: z.literal("balances"),
  available_balance_cents: cents,
  current_balance_cents: cents,
  current_overage_cents: cents,
  overage_limit_cents: cents,
  updated_at: epoch,
});
export type Balances = z.infer<typeof Balances>;

const Money = z.object({ amount: cents, currency: z.string() });
export const LegacyBalance = z.object({ object: z.literal("balance"), available: Money, reserved: Money });
export type LegacyBalance = z.infer<typeof LegacyBalance>;

export const Zone = z.object({
  object: z.string(),
  name: z.string(),
  display_name: z.string().nullish(),
  available_capacity: z.array(
    z.object({ start_timestamp: epoch, end_timestamp: epoch, quantity: z.number().int().nonnegative() }),
  ),
  region: z.string(),
  hardware_type: z.enum(["H100", "H200"]),
  interconnect_type: z.string(),
  delivery_type: z.enum(["K8s", "VM"]),
});
export type Zone = z.infer<typeof Zone>;

export const VM_STATUSES = ["Pending", "Running", "Destroyed", "NodeFailure", "Unspecified"] as const;
const VmStatus = z.preprocess((v) => {
  if (typeof v !== "string") return v;
  return VM_STATUSES.find((s) => s.toLowerCase() === v.toLowerCase()) ?? v;
}, z.enum(VM_STATUSES));

export const Vm = z.object({
  object: z.string(),
  id: z.string(),
  status: VmStatus,
  created_at: epoch,
  updated_at: epoch,
  start_at: epoch.nullable(),
  end_at: epoch.nullable(),
  image_id: z.string().nullish(),
  zone: z.string(),
});
export type Vm = z.infer<typeof Vm>;

export const NODE_STATUSES = [
  "pending",
  "awaitingcapacity",
  "running",
  "released",
  "terminated",
  "deleted",
  "failed",
  "unknown",
] as const;
export const NodeStatus = z.enum(NODE_STATUSES);
export type NodeStatus = z.infer<typeof NodeStatus>;

export const Node = z.object({
  object: z.string(),
  id: z.string(),
  name: z.string(),
  zone: z.string().nullish(),
  gpu_type: z.enum(["H100", "H200"]),
  owner: z.string(),
  status: NodeStatus,
  created_at: epoch.nullish(),
  updated_at: epoch.nullish(),
  start_at: epoch.nullish(),
  end_at: epoch.nullish(),
  deleted_at: epoch.nullish(),
  procurement_id: z.string().nullish(),
  max_price_per_node_hour: nodeHourCents.nullish(),
  node_type: z.enum(["autoreserved", "reserved"]),
  vms: z.object({ object: z.string(), data: z.array(Vm) }).nullish(),
  current_vm: Vm.nullish(),
});
export type Node = z.infer<typeof Node>;

export const VmSsh = z.object({
  ssh_hostname: z.string(),
  ssh_port: z.number().int().min(0).max(65535),
  ssh_host_keys: z.array(z.object({ key_type: z.string(), base64_encoded_key: z.string() })).nullish(),
  last_successful_key_update: epoch.nullish(),
  last_attempted_key_update: epoch.nullish(),
});
export type VmSsh = z.infer<typeof VmSsh>;

/** `{object:"list", data:[…], has_more}` (has_more is absent on some lists). */
export const listOf = <T extends z.ZodType>(item: T) =>
  z.object({ object: z.literal("list"), data: z.array(item), has_more: z.boolean().optional() });
