import { describe, expect, it } from "vitest";
import { Placement } from "../core/schemas";
import { containerName, containerSpec, LABELS } from "./container-spec";
import { EngineError } from "./docker/engine";
import { cpuPercent } from "./metrics";
import { pullFailureReason, pullRetryable, signalOf, startFailureReason } from "./placement-run";

const base = Placement.parse({
  placement_id: "pl_01J/abc",
  job_id: "job_1",
  attempt: 2,
  image: "registry.example/team/train:v3",
  command: ["python", "train.py"],
  args: ["--epochs", "3"],
  env: [
    { name: "WANDB_MODE", value: "offline" },
    { name: "NVIDIA_VISIBLE_DEVICES", value: "all" },
  ],
  gpu_indices: [6, 1, 3],
  cpu_milli: 16_000,
  memory_mib: 131_072,
  kill_deadline: 1_900_000_000_000,
  desired: "running",
});

describe("container spec", () => {
  it("turns a placement into a container: limits, GPUs, labels, command and environment", () => {
    const spec = containerSpec(base, { agentName: "node-a", nodeId: "n-9", pidsLimit: 4096 });
    expect(spec).toEqual({
      name: "scalar-pl_01J-abc",
      image: "registry.example/team/train:v3",
      entrypoint: ["python", "train.py"],
      cmd: ["--epochs", "3"],
      env: [
        "WANDB_MODE=offline",
        "SCALAR_PLACEMENT_ID=pl_01J/abc",
        "SCALAR_JOB_ID=job_1",
        "SCALAR_ATTEMPT=2",
        "SCALAR_NODE_RANK=0",
        "SCALAR_NUM_NODES=1",
      ],
      labels: {
        [LABELS.managed]: "true",
        [LABELS.agent]: "node-a",
        [LABELS.node]: "n-9",
        [LABELS.placement]: "pl_01J/abc",
        [LABELS.job]: "job_1",
        [LABELS.attempt]: "2",
      },
      memoryBytes: 131_072 * 1024 * 1024,
      nanoCpus: 16_000_000_000, // 16 CPUs
      pidsLimit: 4096,
      gpuDeviceIds: ["1", "3", "6"],
    });
  });

  it("keeps the image's entrypoint and command when the placement has none, and hides GPUs from CPU-only work", () => {
    const spec = containerSpec(
      { ...base, command: [], args: [], gpu_indices: [] },
      { agentName: "a", nodeId: "n", pidsLimit: 1 },
    );
    expect(spec).not.toHaveProperty("entrypoint");
    expect(spec).not.toHaveProperty("cmd");
    expect(spec.gpuDeviceIds).toEqual([]);
    expect(spec.env).toContain("NVIDIA_VISIBLE_DEVICES=void");
    expect(containerName("a b/c:d")).toBe("scalar-a-b-c-d");
  });

  it("gives a multi-node job's ranks rank 0's address on the hosts' network; one node gets neither", () => {
    const opts = { agentName: "a", nodeId: "n", pidsLimit: 1 };
    const single = containerSpec({ ...base, gang_master_address: "10.0.0.1" }, opts);
    expect(single).not.toHaveProperty("hostNetwork");
    expect(single.env.some((e) => e.includes("MASTER_"))).toBe(false);

    const rank1 = containerSpec({ ...base, gang_index: 1, gang_size: 2, gang_master_address: "10.0.0.1" }, opts);
    expect(rank1.hostNetwork).toBe(true);
    expect(rank1.env).toEqual(
      expect.arrayContaining([
        "SCALAR_NODE_RANK=1",
        "SCALAR_NUM_NODES=2",
        "SCALAR_MASTER_ADDR=10.0.0.1",
        "SCALAR_MASTER_PORT=29500",
        "MASTER_ADDR=10.0.0.1",
        "MASTER_PORT=29500",
      ]),
    );

    // The job's own MASTER_PORT wins; an unknown address (an older agent at rank 0) sets none.
    const own = containerSpec(
      {
        ...base,
        env: [{ name: "MASTER_PORT", value: "6000" }],
        gang_size: 2,
        gang_master_address: "10.0.0.1",
      },
      opts,
    );
    expect(own.env.filter((e) => e.startsWith("MASTER_PORT="))).toEqual(["MASTER_PORT=6000"]);
    const unknown = containerSpec({ ...base, gang_size: 2, gang_master_address: null }, opts);
    expect(unknown.hostNetwork).toBe(true);
    expect(unknown.env.some((e) => e.includes("MASTER_ADDR"))).toBe(false);
  });

  it("caps the CPU limit at the host's real cores when the node declares more", () => {
    const opts = { agentName: "a", nodeId: "n", pidsLimit: 1 };
    expect(containerSpec(base, { ...opts, maxCpuMilli: 2_000 }).nanoCpus).toBe(2_000_000_000);
    expect(containerSpec(base, { ...opts, maxCpuMilli: 64_000 }).nanoCpus).toBe(16_000_000_000);
  });
});

describe("exit and failure reports", () => {
  it("names the signal behind an exit code above 128", () => {
    expect(signalOf(137)).toBe("SIGKILL");
    expect(signalOf(143)).toBe("SIGTERM");
    expect(signalOf(3)).toBeUndefined();
    expect(signalOf(0)).toBeUndefined();
  });

  it("says why a pull or a start failed", () => {
    expect(pullFailureReason("x:1", new EngineError("image_not_found", "manifest unknown"))).toBe(
      "image pull failed: x:1 not found (manifest unknown)",
    );
    expect(pullFailureReason("X", new EngineError("invalid_reference", "must be lowercase"))).toMatch(
      /invalid image name/,
    );
    expect(pullFailureReason("x", new EngineError("registry_unreachable", "connection refused"))).toMatch(
      /registry unreachable/,
    );
    expect(pullFailureReason("r/x:1", new EngineError("image_unauthorized", "no basic auth credentials"))).toBe(
      "image pull failed: r/x:1 needs registry credentials (no basic auth credentials); the account can add them with `scalar registries add docker.io`",
    );
    expect(
      pullFailureReason("ghcr.io/o/x:1", new EngineError("image_unauthorized", "unauthorized"), { username: "u" }),
    ).toBe(
      "image pull failed: the registry refused the account's credentials for ghcr.io (user u) for ghcr.io/o/x:1 (unauthorized); update them with `scalar registries add ghcr.io`",
    );
    // Another attempt fails the same way only when the image is missing, unreadable or its name malformed.
    expect(pullRetryable(new EngineError("image_not_found", "manifest unknown"))).toBe(false);
    expect(pullRetryable(new EngineError("image_unauthorized", "no basic auth credentials"))).toBe(false);
    expect(pullRetryable(new EngineError("invalid_reference", "must be lowercase"))).toBe(false);
    expect(pullRetryable(new EngineError("registry_unreachable", "connection refused"))).toBe(true);
    expect(pullRetryable(new EngineError("engine", "no space left on device"))).toBe(true);
    expect(pullRetryable(new Error("socket hang up"))).toBe(true);
    expect(startFailureReason(new EngineError("gpu_unavailable", "could not select device driver"), ["0", "1"])).toBe(
      "GPU request failed: no NVIDIA container runtime on this node for GPUs 0,1 (could not select device driver)",
    );
    expect(startFailureReason(new Error("boom"), [])).toBe("container start failed: boom");
  });
});

describe("container metrics", () => {
  it("computes the CPU share between two samples, like docker stats", () => {
    const a = { cpuTotalNs: 1_000_000_000, systemCpuNs: 10_000_000_000, onlineCpus: 2 };
    // 0.5 s of CPU over 1 s of wall time on 2 CPUs (system counts 2 s) → 50 % of one CPU
    const b = { cpuTotalNs: 1_500_000_000, systemCpuNs: 12_000_000_000, onlineCpus: 2 };
    expect(cpuPercent(a, b)).toBe(50);
    expect(cpuPercent(undefined, b)).toBeUndefined();
    expect(cpuPercent(b, a)).toBeUndefined();
  });
});
