/**
 * Stripe's events and webhook deliveries, for the simulator (docs.stripe.com/api/events,
 * docs.stripe.com/api/webhook_endpoints, docs.stripe.com/webhooks).
 *
 * Every change the simulator makes to an invoice is an event (`evt_…`, `data.object` the invoice as
 * it is after the change). Each webhook endpoint enabled for the event's type (`*` for all) gets a
 * `POST` of the event's JSON with `Stripe-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256 of
 * "<t>.<body>" under the endpoint's secret>`, the scheme the SDK's `constructEventAsync` checks. A
 * delivery that does not answer 2xx is tried again after each of `retryDelaysMs` (Stripe retries for
 * up to three days; locally a few minutes), so a receiver sees an event at least once and, as with
 * Stripe, not necessarily in order.
 *
 * Signatures carry the wall clock (`Date.now`), not the simulator's: a receiver checks the
 * timestamp against its own clock (5 minutes' tolerance), and a test's simulator clock may be
 * anywhere. Only Web-standard APIs (crypto.subtle, fetch, setTimeout), so it runs in workerd too.
 */

export type SimEvent = {
  id: string;
  object: "event";
  api_version: string;
  created: number;
  data: { object: Record<string, unknown> };
  livemode: false;
  pending_webhooks: number;
  request: { id: string | null; idempotency_key: string | null };
  type: string;
};

export type SimWebhookEndpoint = {
  id: string;
  object: "webhook_endpoint";
  api_version: string | null;
  application: null;
  created: number;
  description: string | null;
  enabled_events: string[];
  livemode: false;
  metadata: Record<string, string>;
  /** Shown only when the endpoint is created (as Stripe does). */
  secret?: string;
  status: "enabled";
  url: string;
};

/** One try to deliver one event to one endpoint. */
export interface WebhookAttempt {
  event_id: string;
  type: string;
  endpoint_id: string;
  url: string;
  /** 1 for the first try. */
  attempt: number;
  /** Wall clock, epoch ms. */
  at: number;
  /** The receiver's status, or null when the request failed (refused, reset). */
  status: number | null;
  error: string | null;
}

export type Deliver = (url: string, init: RequestInit) => Promise<Response>;

export interface WebhookOptions {
  /** How a delivery is sent (default: the global `fetch`). */
  deliver?: Deliver;
  /** Waits before each retry of a delivery that failed (default 1 s, 5 s, 30 s, 2 min, 10 min). */
  retryDelaysMs?: readonly number[];
}

export const DEFAULT_RETRY_DELAYS_MS = [1_000, 5_000, 30_000, 120_000, 600_000] as const;

const hex = (bytes: ArrayBuffer) => [...new Uint8Array(bytes)].map((b) => b.toString(16).padStart(2, "0")).join("");

/** The `Stripe-Signature` header for `payload` signed with `secret` at `timestampS`. */
export async function signatureHeader(payload: string, secret: string, timestampS: number): Promise<string> {
  const enc = new TextEncoder();
  const key = await crypto.subtle.importKey("raw", enc.encode(secret), { name: "HMAC", hash: "SHA-256" }, false, [
    "sign",
  ]);
  const mac = await crypto.subtle.sign("HMAC", key, enc.encode(`${timestampS}.${payload}`));
  return `t=${timestampS},v1=${hex(mac)}`;
}

export const enabledFor = (endpoint: SimWebhookEndpoint, type: string) =>
  endpoint.enabled_events.includes("*") || endpoint.enabled_events.includes(type);

/** Sends events to endpoints, retrying failures; tracks every attempt and what is still under way. */
export class WebhookSender {
  private readonly deliver: Deliver;
  private readonly delays: readonly number[];
  private readonly inFlight = new Set<Promise<void>>();
  private readonly timers = new Set<ReturnType<typeof setTimeout>>();
  private readonly wakers = new Set<() => void>();
  private closed = false;
  readonly attempts: WebhookAttempt[] = [];

  constructor(options: WebhookOptions = {}) {
    this.deliver = options.deliver ?? ((url, init) => fetch(url, init));
    this.delays = options.retryDelaysMs ?? DEFAULT_RETRY_DELAYS_MS;
  }

  /** Starts delivering `event` to `endpoint` (with its secret); returns at once. */
  send(event: SimEvent, endpoint: SimWebhookEndpoint & { secret: string }): void {
    if (this.closed) return;
    const run = this.run(event, endpoint).finally(() => this.inFlight.delete(run));
    this.inFlight.add(run);
  }

  private async run(event: SimEvent, endpoint: SimWebhookEndpoint & { secret: string }): Promise<void> {
    const payload = JSON.stringify(event, null, 2);
    for (let attempt = 1; !this.closed; attempt++) {
      const at = Date.now();
      const record: WebhookAttempt = {
        event_id: event.id,
        type: event.type,
        endpoint_id: endpoint.id,
        url: endpoint.url,
        attempt,
        at,
        status: null,
        error: null,
      };
      try {
        const res = await this.deliver(endpoint.url, {
          method: "POST",
          headers: {
            "content-type": "application/json; charset=utf-8",
            "stripe-signature": await signatureHeader(payload, endpoint.secret, Math.floor(at / 1000)),
            "user-agent": "Stripe/1.0 (+https://stripe.com/docs/webhooks)",
          },
          body: payload,
        });
        record.status = res.status;
        // Read to the end, not cancelled: in workerd a cancelled body of a service binding's answer
        // (SELF.fetch in tests) kept the test run from ever ending.
        await res.arrayBuffer().catch(() => undefined);
      } catch (error) {
        record.error = error instanceof Error ? error.message : String(error);
      }
      this.attempts.push(record);
      if (this.attempts.length > 12_000) this.attempts.splice(0, this.attempts.length - 10_000);
      if (record.status !== null && record.status >= 200 && record.status < 300) return;
      const delay = this.delays[attempt - 1];
      if (delay === undefined) return; // given up, as Stripe does after its last retry
      await this.sleep(delay);
    }
  }

  private sleep(ms: number): Promise<void> {
    return new Promise((done) => {
      const wake = () => {
        clearTimeout(timer);
        this.timers.delete(timer);
        this.wakers.delete(wake);
        done();
      };
      const timer = setTimeout(wake, ms);
      this.timers.add(timer);
      this.wakers.add(wake);
    });
  }

  /** Resolves when no delivery is under way (every event delivered, or given up on). */
  async settle(): Promise<void> {
    while (this.inFlight.size > 0) await Promise.allSettled([...this.inFlight]);
  }

  /** Retries due later are tried now (tests: no waiting for backoff). */
  retryNow(): void {
    for (const wake of [...this.wakers]) wake();
  }

  /** Stops: no new deliveries, no more retries; pending waits end at once. */
  close(): void {
    this.closed = true;
    this.retryNow();
  }
}
