/**
 * An endpoint replica's readiness: `GET http://<container>:<port><path>` from the node, answered
 * 2xx or 3xx within the timeout (redirects are not followed: a 3xx is the server answering).
 */
import type { Placement } from "../core/schemas";

export type HealthCheck = NonNullable<Placement["health_check"]>;

export async function probeReady(address: string, check: HealthCheck, timeoutMs = 2_000): Promise<boolean> {
  const host = address.includes(":") ? `[${address}]` : address;
  try {
    const res = await fetch(`http://${host}:${check.port}${check.path}`, {
      redirect: "manual",
      signal: AbortSignal.timeout(timeoutMs),
    });
    await res.body?.cancel();
    return res.status >= 200 && res.status < 400;
  } catch {
    return false; // refused, reset, timed out: not ready
  }
}
