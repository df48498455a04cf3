/** The replay on hand-made traces with known answers, and on the shipped samples of real traces. */
import { resolve } from "node:path";
import { describe, expect, it } from "vitest";
import { POLICIES } from "../../core/scheduler";
import { fleetOf, percentile, replayDynamic, replayStatic } from "./simulate";
import { parseCsv, readCsv, toJobs, toNodes } from "./trace";

const fixtures = resolve(import.meta.dirname, "fixtures");
const jobs = (csv: string) => toJobs(parseCsv(csv));

describe("trace formats", () => {
  it("reads the replay format, Philly's and Alibaba's", () => {
    expect(
      jobs("id,submit_s,gpus,duration_s,cpu_milli,memory_mib,gpu_models,tier\nj1,5,2,60,4000,8192,H100|H200,fast\n"),
    ).toEqual([
      {
        id: "j1",
        submit_s: 5,
        gpus: 2,
        duration_s: 60,
        cpu_milli: 4000,
        memory_mib: 8192,
        gpu_models: ["H100", "H200"],
        tier: "fast",
        account: "default",
      },
    ]);
    expect(
      jobs(
        "job_id,submit_s,num_gpus,duration_s,vc,submit_time_utc_orig\nphilly-1,7,4,100,6214e9,2017-09-07 03:58:57\n",
      )[0],
    ).toEqual({
      id: "philly-1",
      submit_s: 7,
      gpus: 4,
      duration_s: 100,
      cpu_milli: null,
      memory_mib: null,
      gpu_models: [],
      tier: null,
      account: "6214e9",
    });
    const pods = jobs(
      "name,cpu_milli,memory_mib,num_gpu,gpu_milli,gpu_spec,qos,pod_phase,creation_time,deletion_time,scheduled_time\n" +
        "p0,12000,16384,1,460,,LS,Running,0,100,10\np1,1000,1024,0,0,,BE,Running,0,5,0\np2,6000,2048,2,1000,V100M16|V100M32,BE,Failed,3,,3\n",
    );
    // p0: a 0.46 GPU share takes a whole GPU; p1 (CPU only) is dropped; p2 has no deletion time: it
    // runs to the snapshot's end (100, the latest time in the file): 100 − 3 = 97.
    expect(pods.map((p) => [p.id, p.gpus, p.duration_s, p.tier, p.gpu_models])).toEqual([
      ["p0", 1, 90, "fast", []],
      ["p2", 2, 97, "flex", ["V100M16", "V100M32"]],
    ]);
    expect(toNodes(parseCsv("sn,cpu_milli,memory_mib,gpu,model\nn0,64000,262144,2,P100\n"))).toEqual([
      { id: "n0", gpus: 2, gpu_model: "P100", cpu_milli: 64000, memory_mib: 262144 },
    ]);
  });
});

describe("dynamic replay", () => {
  it("runs a trace in virtual time: waits, utilisation and makespan add up", () => {
    // One 8-GPU node. A holds it 0–100 s; B (4) and C (4) both wait for it and start at 100.
    const trace = jobs("id,submit_s,gpus,duration_s\nA,0,8,100\nB,10,4,50\nC,20,4,10\n");
    const r = replayDynamic(trace, fleetOf(1), "scalar");
    // waits 0, 90, 80 → sorted [0, 80, 90]: p50 = 80, p99 = 90
    expect(r).toMatchObject({ jobs: 3, placed: 3, wait_p50_s: 80, wait_p99_s: 90, makespan_s: 150 });
    // (8×100 + 4×50 + 4×10) GPU-s / (8 GPUs × 150 s) = 1040 / 1200
    expect(r.gpu_utilisation).toBeCloseTo(1040 / 1200, 4);
  });

  it("backfills a short job past a blocked head, never one that would delay it", () => {
    // A holds 6 of 8 GPUs until 100. B (8) is the head, reserved for 100. C (2 GPUs, 50 s) ends
    // by 52 and starts at once; D (2 GPUs, 200 s) would hold 2 GPUs past 100, so it waits for B.
    const trace = jobs("id,submit_s,gpus,duration_s\nA,0,6,100\nB,1,8,10\nC,2,2,50\nD,3,2,200\n");
    const r = replayDynamic(trace, fleetOf(1), "scalar");
    // waits: A 0, B 99, C 0, D 107 (starts when B ends at 110)
    expect(r).toMatchObject({ placed: 4, backfilled: 1, wait_p50_s: 0, wait_p99_s: 107, makespan_s: 310 });
  });

  it("reports jobs that can never run on the fleet, with the reason", () => {
    const trace = jobs("id,submit_s,gpus,duration_s\nok,0,1,10\ntwelve,0,12,10\nbig,0,32,10\n");
    const r = replayDynamic(trace, fleetOf(2), "first-fit");
    expect(r.placed).toBe(1);
    expect(r.unplaceable).toEqual({
      count: 2,
      reasons: {
        "invalid GPU count (1 to 8, or a multiple of 8 up to 64)": 1,
        "2/2 nodes; needs 4 nodes with 8 free GPUs in one zone": 1,
      },
    });
  });

  it("replays the Philly sample under every policy", () => {
    const trace = toJobs(readCsv(resolve(fixtures, "philly-sample.csv")));
    for (const policy of POLICIES) {
      const r = replayDynamic(trace, fleetOf(2), policy);
      expect(r.policy).toBe(policy);
      expect(r.placed + r.unplaceable.count).toBe(trace.length);
      expect(r.gpu_utilisation).toBeGreaterThan(0);
      expect(r.gpu_utilisation).toBeLessThanOrEqual(1);
      expect(r.wait_p99_s).toBeGreaterThanOrEqual(r.wait_p50_s!);
    }
  });
});

describe("static replay", () => {
  it("offers jobs until the GPUs offered reach the fleet's total, skipping what does not fit", () => {
    const nodes = fleetOf([
      { id: "a", gpus: 8, gpu_model: "H100", cpu_milli: null, memory_mib: null },
      { id: "b", gpus: 2, gpu_model: "H100", cpu_milli: null, memory_mib: null },
    ]);
    const trace = jobs("id,submit_s,gpus,duration_s\nj1,0,1,1\nj2,0,8,1\nj3,0,2,1\nj4,0,4,1\n");
    // Scalar puts the 1-GPU job on the 2-GPU node (fuller after), keeping a whole node for j2;
    // j3 then finds no 2 GPUs; offered 1 + 8 + 2 = 11 ≥ 10, so j4 is never offered. 9 / 10.
    expect(replayStatic(trace, nodes, "scalar")).toMatchObject({
      jobs: 3,
      placed: 2,
      skipped: 1,
      gpu_allocation_ratio: 0.9,
    });
    // First fit puts j1 on a, so j2 (8) fits nowhere; j3 takes b. (1 + 2) / 10.
    expect(replayStatic(trace, nodes, "first-fit")).toMatchObject({
      jobs: 3,
      placed: 2,
      skipped: 1,
      gpu_allocation_ratio: 0.3,
    });
  });

  it("packs the Alibaba sample with CPU and memory constraints", () => {
    const trace = toJobs(readCsv(resolve(fixtures, "alibaba-pods-sample.csv")));
    const nodes = fleetOf(toNodes(readCsv(resolve(fixtures, "alibaba-gpu-nodes-sample.csv"))));
    for (const policy of POLICIES) {
      const r = replayStatic(trace, nodes, policy);
      expect(r.placed + r.skipped).toBe(r.jobs);
      expect(r.gpu_allocation_ratio).toBeGreaterThan(0.5);
      expect(r.gpu_allocation_ratio).toBeLessThanOrEqual(1);
    }
  });
});

describe("percentile", () => {
  it("is nearest-rank", () => {
    expect(percentile([], 50)).toBeNull();
    expect(percentile([1, 2, 3, 4], 50)).toBe(2);
    expect(percentile([1, 2, 3, 4], 99)).toBe(4);
  });
});
