/**
 * Fault injection, per test: rules matched by method and path, each applying to a number of
 * requests. `latency` delays the answer; `error` answers a 5xx without doing anything; `timeout`
 * never answers and does nothing; `lose_response` does the work (the order is committed, the node
 * created) and then loses the answer, by resetting the connection or by hanging until the client
 * gives up. The last is the case idempotency keys exist for.
 */
export type FaultAction = "latency" | "error" | "timeout" | "lose_response";

export interface FaultRule {
  action: FaultAction;
  /** e.g. "POST"; any method when absent. */
  method?: string;
  /** An exact path, or a prefix ending in "*" (e.g. "/v1/nodes*"); any path when absent. */
  path?: string;
  /** How many matching requests it applies to (default 1; Infinity for all). */
  times?: number;
  /** Let this many matching requests through first. */
  skip?: number;
  latencyMs?: number;
  /** For `error` (default 503). */
  status?: number;
  /** For `lose_response`: reset the connection (default) or hang. */
  lose?: "reset" | "hang";
}

interface ActiveRule extends Required<Pick<FaultRule, "action">> {
  id: number;
  rule: FaultRule;
  remaining: number;
  skip: number;
}

export class FaultInjector {
  private rules: ActiveRule[] = [];
  private seq = 0;

  add(rule: FaultRule): number {
    if (!["latency", "error", "timeout", "lose_response"].includes(rule.action)) {
      throw new Error(`unknown fault action ${String(rule.action)}`);
    }
    const id = ++this.seq;
    this.rules.push({ id, action: rule.action, rule, remaining: rule.times ?? 1, skip: rule.skip ?? 0 });
    return id;
  }

  clear(): void {
    this.rules = [];
  }

  list(): (FaultRule & { id: number; remaining: number })[] {
    return this.rules.map((r) => ({ ...r.rule, id: r.id, remaining: r.remaining }));
  }

  /** The rules that fire for this request (consuming one use of each). */
  take(method: string, path: string): FaultRule[] {
    const fired: FaultRule[] = [];
    for (const r of this.rules) {
      if (r.remaining <= 0) continue;
      if (r.rule.method && r.rule.method.toUpperCase() !== method.toUpperCase()) continue;
      if (r.rule.path && !pathMatches(r.rule.path, path)) continue;
      if (r.skip > 0) {
        r.skip--;
        continue;
      }
      r.remaining--;
      fired.push(r.rule);
    }
    this.rules = this.rules.filter((r) => r.remaining > 0);
    return fired;
  }
}

function pathMatches(pattern: string, path: string): boolean {
  return pattern.endsWith("*") ? path.startsWith(pattern.slice(0, -1)) : path === pattern;
}

/** Thrown (in-process) or turned into a reset connection (over HTTP) when a response is lost. */
export class LostResponseError extends TypeError {
  constructor(readonly why: string) {
    super("fetch failed", { cause: new Error(`sfcompute-sim: ${why}`) });
    this.name = "TypeError";
  }
}
