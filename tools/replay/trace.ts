/**
 * Reading job and node traces for the replay and the benchmark. The replay's own format, plus the
 * raw files of the two public traces we use, recognised by their header:
 *
 *   jobs  id,submit_s,gpus,duration_s[,cpu_milli,memory_mib,gpu_models,tier][,account] (replay format)
 *         job_id,submit_s,num_gpus,duration_s,vc,submit_time_utc_orig          (Philly, as shipped)
 *         name,cpu_milli,memory_mib,num_gpu,gpu_milli,gpu_spec,qos,…           (Alibaba pods.csv)
 *   nodes id,gpus,gpu_model[,cpu_milli,memory_mib]                              (replay format)
 *         sn,cpu_milli,memory_mib,gpu,model                                    (Alibaba gpu_nodes.csv)
 *
 * Philly's `vc` (virtual cluster) becomes the account, so the queue's fairness between accounts
 * applies to it. Alibaba pods: a fractional-GPU pod (gpu_milli < 1000) takes one whole GPU (Scalar does not share
 * GPUs), CPU-only pods (num_gpu 0) are dropped, qos LS/Guaranteed → fast, BE/Burstable → flex,
 * and the duration is deletion − scheduled time (a pod without a deletion time runs to the
 * snapshot's end, the latest time in the file).
 */
import { readFileSync } from "node:fs";
import type { Tier } from "../../core/scheduler";

export interface TraceJob {
  id: string;
  submit_s: number;
  gpus: number;
  duration_s: number;
  cpu_milli: number | null;
  memory_mib: number | null;
  gpu_models: string[];
  tier: Tier | null;
  account: string;
}

export interface TraceNode {
  id: string;
  gpus: number;
  gpu_model: string;
  cpu_milli: number | null;
  memory_mib: number | null;
}

export function readCsv(path: string): Record<string, string>[] {
  return parseCsv(readFileSync(path, "utf8"));
}

/** Plain comma-separated values with a header line; no quoted fields in these traces. */
export function parseCsv(text: string): Record<string, string>[] {
  const lines = text.split(/\r?\n/).filter((l) => l.trim() !== "");
  const header = (lines.shift() ?? "").split(",").map((h) => h.trim());
  return lines.map((line) => {
    const cells = line.split(",");
    return Object.fromEntries(header.map((h, i) => [h, (cells[i] ?? "").trim()]));
  });
}

const num = (s: string | undefined): number | null => (s === undefined || s === "" ? null : Number(s));

export function toJobs(rows: Record<string, string>[]): TraceJob[] {
  const first = rows[0] ?? {};
  if ("num_gpus" in first) {
    return rows.map((r) => ({
      id: r.job_id!,
      submit_s: Number(r.submit_s),
      gpus: Number(r.num_gpus),
      duration_s: Number(r.duration_s),
      cpu_milli: null,
      memory_mib: null,
      gpu_models: [],
      tier: null,
      account: r.vc || "default",
    }));
  }
  if ("num_gpu" in first) {
    // A pod still running when the snapshot was taken has no deletion time: it runs to the end.
    const snapshotEnd = rows.reduce(
      (m, r) => Math.max(m, num(r.deletion_time) ?? 0, num(r.creation_time) ?? 0, num(r.scheduled_time) ?? 0),
      0,
    );
    return rows
      .filter((r) => Number(r.num_gpu) > 0)
      .map((r) => {
        const scheduled = num(r.scheduled_time) ?? Number(r.creation_time);
        return {
          id: r.name!,
          submit_s: Number(r.creation_time),
          gpus: Number(r.num_gpu),
          duration_s: Math.max(0, (num(r.deletion_time) ?? snapshotEnd) - scheduled),
          cpu_milli: num(r.cpu_milli),
          memory_mib: num(r.memory_mib),
          gpu_models: splitModels(r.gpu_spec),
          tier: r.qos === "LS" || r.qos === "Guaranteed" ? ("fast" as const) : ("flex" as const),
          account: "default",
        };
      });
  }
  return rows.map((r) => ({
    id: r.id!,
    submit_s: Number(r.submit_s),
    gpus: Number(r.gpus),
    duration_s: Number(r.duration_s),
    cpu_milli: num(r.cpu_milli),
    memory_mib: num(r.memory_mib),
    gpu_models: splitModels(r.gpu_models),
    tier: r.tier === "fast" || r.tier === "flex" ? r.tier : null,
    account: r.account || "default",
  }));
}

export function toNodes(rows: Record<string, string>[]): TraceNode[] {
  if ("sn" in (rows[0] ?? {})) {
    return rows.map((r) => ({
      id: r.sn!,
      gpus: Number(r.gpu),
      gpu_model: r.model!,
      cpu_milli: num(r.cpu_milli),
      memory_mib: num(r.memory_mib),
    }));
  }
  return rows.map((r) => ({
    id: r.id!,
    gpus: Number(r.gpus),
    gpu_model: r.gpu_model!,
    cpu_milli: num(r.cpu_milli),
    memory_mib: num(r.memory_mib),
  }));
}

function splitModels(s: string | undefined): string[] {
  return (s ?? "")
    .split("|")
    .map((m) => m.trim())
    .filter(Boolean);
}

/** The share of each GPU count among a trace's jobs. */
export function gpuMix(jobs: readonly TraceJob[]): Map<number, number> {
  const mix = new Map<number, number>();
  for (const j of jobs) mix.set(j.gpus, (mix.get(j.gpus) ?? 0) + 1);
  return new Map([...mix].sort((a, b) => a[0] - b[0]));
}
