/** One Fast job run to its end: the load test's warm-up, so the image is in the engine's cache. */
import { randomUUID } from "node:crypto";
import { LOAD_JOB_RESOURCES } from "./generator";
import { errorCode, httpClient, jsonOf } from "./http";

const TERMINAL = new Set(["succeeded", "failed", "cancelled"]);

export async function runOneJob(opts: {
  apiUrl: string;
  apiKey: string;
  image: string;
  timeoutMs?: number;
}): Promise<{ jobId: string; status: string; ms: number }> {
  const client = httpClient(opts.apiUrl, { maxSockets: 1 });
  const headers = { authorization: `Bearer ${opts.apiKey}` };
  const started = performance.now();
  const giveUpAt = started + (opts.timeoutMs ?? 180_000);
  try {
    const r = await client.request("POST", "/v1/jobs", {
      headers: { ...headers, "idempotency-key": `load-warm-up-${randomUUID()}` },
      body: { image: opts.image, command: ["true"], ...LOAD_JOB_RESOURCES, max_attempts: 1 },
    });
    const job = r.status === 202 ? jsonOf<{ id: string }>(r) : undefined;
    if (!job) throw new Error(`warm-up submission answered ${r.status} ${errorCode(r) ?? r.text.slice(0, 200)}`);
    for (;;) {
      const g = await client.request("GET", `/v1/jobs/${job.id}`, { headers });
      const status = jsonOf<{ status: string }>(g)?.status;
      if (status && TERMINAL.has(status)) return { jobId: job.id, status, ms: performance.now() - started };
      if (performance.now() > giveUpAt) throw new Error(`warm-up job ${job.id} still ${status ?? "unknown"}`);
      await new Promise((resolve) => setTimeout(resolve, 250));
    }
  } finally {
    client.close();
  }
}
