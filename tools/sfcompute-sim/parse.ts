/**
 * Wire input → engine input. Type errors become 400 `invalid_request_error` naming the field; the
 * market's own rules (alignment, balance, holdings) are checked by the engine.
 */
import { invalid } from "./errors";
import type { ContractFilter, OrderInput, QuoteInput } from "./market";
import type { CreateNodesInput, NodeType } from "./nodes";

type Body = Record<string, unknown>;

export function asBody(value: unknown): Body {
  if (!value || typeof value !== "object" || Array.isArray(value))
    throw invalid("The request body must be a JSON object");
  return value as Body;
}

function optString(body: Body, field: string): string | undefined {
  const v = body[field];
  if (v === undefined || v === null) return undefined;
  if (typeof v !== "string") throw invalid(`${field} must be a string`, field);
  return v;
}

function number(body: Body, field: string, required: true): number;
function number(body: Body, field: string, required?: false): number | undefined;
function number(body: Body, field: string, required = false): number | undefined {
  const v = body[field];
  if (v === undefined || v === null) {
    if (required) throw invalid(`${field} is required`, field);
    return undefined;
  }
  if (typeof v !== "number" || !Number.isFinite(v)) throw invalid(`${field} must be a number`, field);
  return v;
}

function bool(body: Body, field: string): boolean | undefined {
  const v = body[field];
  if (v === undefined || v === null) return undefined;
  if (typeof v !== "boolean") throw invalid(`${field} must be a boolean`, field);
  return v;
}

function stringArray(body: Body, field: string): string[] | undefined {
  const v = body[field];
  if (v === undefined || v === null) return undefined;
  if (!Array.isArray(v) || v.some((x) => typeof x !== "string"))
    throw invalid(`${field} must be a list of strings`, field);
  return v as string[];
}

/** An ISO 8601 date-time with a time zone, as epoch ms. */
export function isoTime(value: string, field: string): number {
  if (!/^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}(:\d{2}(\.\d+)?)?(Z|[+-]\d{2}:?\d{2})$/.test(value)) {
    throw invalid(`${field} must be an ISO 8601 date-time with a time zone`, field);
  }
  const t = Date.parse(value);
  if (Number.isNaN(t)) throw invalid(`${field} is not a valid date`, field);
  return t;
}

export function nowOrIso(value: string, field: string): "NOW" | number {
  return value === "NOW" ? "NOW" : isoTime(value, field);
}

export function parseOrder(raw: unknown): OrderInput {
  const body = asBody(raw);
  const side = body.side;
  if (side !== "buy" && side !== "sell") throw invalid("side must be 'buy' or 'sell'", "side");
  const start = optString(body, "start_at");
  if (start === undefined) throw invalid("start_at is required ('NOW' or an ISO 8601 date-time)", "start_at");
  const end = optString(body, "end_at");
  if (end === undefined) throw invalid("end_at is required (an ISO 8601 date-time on the hour)", "end_at");
  const flagsRaw = body.flags;
  let flags: OrderInput["flags"];
  if (flagsRaw !== undefined && flagsRaw !== null) {
    const f = asBody(flagsRaw);
    flags = {
      ioc: bool(f, "ioc"),
      post_only: bool(f, "post_only"),
      market: bool(f, "market"),
      prorate: bool(f, "prorate"),
    };
  }
  return {
    side,
    quantity: number(body, "quantity", true),
    price: number(body, "price", true),
    start_at: nowOrIso(start, "start_at"),
    end_at: isoTime(end, "end_at"),
    flags,
    instance_type: optString(body, "instance_type"),
    cluster: optString(body, "cluster"),
    colocate_with: stringArray(body, "colocate_with"),
    contract_id: optString(body, "contract_id"),
  };
}

export function parseCreateNodes(raw: unknown): CreateNodesInput {
  const body = asBody(raw);
  const nodeType = body.node_type;
  if (nodeType !== undefined && nodeType !== null && nodeType !== "reserved" && nodeType !== "autoreserved") {
    throw invalid("node_type must be 'autoreserved' or 'reserved'", "node_type");
  }
  return {
    desired_count: number(body, "desired_count", true),
    max_price_per_node_hour: number(body, "max_price_per_node_hour", true),
    zone: optString(body, "zone"),
    any_zone: bool(body, "any_zone"),
    start_at: number(body, "start_at"),
    end_at: number(body, "end_at"),
    node_type: (nodeType as NodeType | null | undefined) ?? undefined,
    names: stringArray(body, "names"),
    cloud_init_user_data: optString(body, "cloud_init_user_data"),
    image_id: optString(body, "image_id"),
  };
}

export function parseExtend(raw: unknown): { duration_seconds: number; max_price_per_node_hour: number } {
  const body = asBody(raw);
  return {
    duration_seconds: number(body, "duration_seconds", true),
    max_price_per_node_hour: number(body, "max_price_per_node_hour", true),
  };
}

export function parseRedeploy(raw: unknown): {
  image_id?: string;
  cloud_init_user_data?: string;
  override_empty?: boolean;
} {
  const body = asBody(raw ?? {});
  return {
    image_id: optString(body, "image_id"),
    cloud_init_user_data: optString(body, "cloud_init_user_data"),
    override_empty: bool(body, "override_empty"),
  };
}

// ---- query strings ----

export function queryInt(q: URLSearchParams, field: string): number | undefined {
  const v = q.get(field);
  if (v === null || v === "") return undefined;
  if (!/^-?\d+$/.test(v)) throw invalid(`${field} must be an integer`, field);
  return Number(v);
}

export function queryBool(q: URLSearchParams, field: string): boolean | undefined {
  const v = q.get(field);
  if (v === null || v === "") return undefined;
  if (v !== "true" && v !== "false") throw invalid(`${field} must be true or false`, field);
  return v === "true";
}

export function queryTime(q: URLSearchParams, field: string): "NOW" | number | undefined {
  const v = q.get(field);
  if (v === null || v === "") return undefined;
  return nowOrIso(v, field);
}

/** Repeated (`id=a&id=b`, as the Nodes SDK sends) or bracketed (`id[]=a`). */
export function queryList(q: URLSearchParams, field: string): string[] | undefined {
  const values = [...q.getAll(field), ...q.getAll(`${field}[]`)];
  return values.length > 0 ? values : undefined;
}

export function parseQuote(q: URLSearchParams): QuoteInput {
  const side = q.get("side");
  if (side !== "buy" && side !== "sell") throw invalid("side must be 'buy' or 'sell'", "side");
  const quantity = queryInt(q, "quantity");
  if (quantity === undefined) throw invalid("quantity is required (nodes, 1 to 1024)", "quantity");
  return {
    side,
    quantity,
    instance_type: q.get("instance_type") ?? undefined,
    cluster: q.get("cluster") ?? undefined,
    colocate_with: q.get("colocate_with") ?? undefined,
    contract_id: q.get("contract_id") ?? undefined,
    duration: queryInt(q, "duration"),
    min_duration: queryInt(q, "min_duration"),
    max_duration: queryInt(q, "max_duration"),
    min_start_date: queryTime(q, "min_start_date"),
    max_start_date: queryTime(q, "max_start_date"),
  };
}

export function parseContractFilter(q: URLSearchParams): ContractFilter {
  const start = q.get("active_within_interval_start");
  const end = q.get("active_within_interval_end");
  if ((start === null) !== (end === null)) {
    throw invalid(
      "active_within_interval_start and active_within_interval_end must be given together",
      start === null ? "active_within_interval_start" : "active_within_interval_end",
    );
  }
  const state = q.get("state") ?? undefined;
  if (state !== undefined && !["All", "Upcoming", "Active", "Expired"].includes(state)) {
    throw invalid("state must be one of All, Upcoming, Active, Expired", "state");
  }
  return {
    instance_type: q.get("instance_type") ?? undefined,
    active_within_interval_start: start === null ? undefined : isoTime(start, "active_within_interval_start"),
    active_within_interval_end: end === null ? undefined : isoTime(end, "active_within_interval_end"),
    state: state as ContractFilter["state"],
    include_nodes: queryBool(q, "include_nodes"),
    include_procurements: queryBool(q, "include_procurements"),
  };
}
