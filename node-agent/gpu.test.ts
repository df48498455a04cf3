import { chmodSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { describe, expect, it } from "vitest";
import {
  DeclaredGpus,
  gpuModelFromName,
  healthFromReadings,
  inventoryFromReadings,
  NvidiaSmi,
  parseNvidiaSmiQuery,
} from "./gpu";

const fixture = (name: string) => readFileSync(resolve(import.meta.dirname, "fixtures/gpu-host", name), "utf8");
const UUID0 = "GPU-88396b0d-3bdb-acd7-b2d0-fdc9d2701331";

describe("nvidia-smi parsing", () => {
  it("reads the captured H100 output, with its header and the units inside values", () => {
    expect(parseNvidiaSmiQuery(fixture("nvidia-smi-query-h100.csv"))).toEqual([
      {
        index: 0,
        uuid: UUID0,
        name: "NVIDIA H100 80GB HBM3",
        memory_total_mib: 81559,
        memory_used_mib: 0,
        utilisation_pct: 0,
        temperature_c: 35,
        power_w: 124.69,
      },
    ]);
  });

  it("reads the same GPU in the format the agent asks for (noheader, nounits)", () => {
    const line = "0, GPU-88396b0d-3bdb-acd7-b2d0-fdc9d2701331, NVIDIA H100 80GB HBM3, 81559, 0, 0, 35, 124.69\n";
    expect(parseNvidiaSmiQuery(line)).toEqual(parseNvidiaSmiQuery(fixture("nvidia-smi-query-h100.csv")));
  });

  it("reads the 8-GPU variant in both formats alike, and a GPU answering [N/A] has no readings", () => {
    const withUnits = parseNvidiaSmiQuery(fixture("nvidia-smi-query-h100x8.csv"));
    const bare = parseNvidiaSmiQuery(fixture("nvidia-smi-query-h100x8-noheader-nounits.csv"));
    expect(bare).toEqual(withUnits);
    expect(withUnits.map((g) => g.index)).toEqual([0, 1, 2, 3, 4, 5, 6, 7]);
    expect(new Set(withUnits.map((g) => g.uuid)).size).toBe(8);
    expect(withUnits[2]).toMatchObject({
      memory_used_mib: 81000,
      utilisation_pct: 100,
      temperature_c: 67,
      power_w: 698.02,
    });
    expect(withUnits[7]).toEqual({
      index: 7,
      uuid: "GPU-88396b0d-3bdb-acd7-b2d0-fdc9d2701338",
      name: "NVIDIA H100 80GB HBM3",
      memory_total_mib: 81559,
    });
  });

  it("reads columns by their header names when they come in another order", () => {
    const csv = "name, index, temperature.gpu\nNVIDIA H200, 3, 41\n";
    expect(parseNvidiaSmiQuery(csv)).toEqual([{ index: 3, name: "NVIDIA H200", temperature_c: 41 }]);
  });

  it("refuses a line without a GPU index", () => {
    expect(() => parseNvidiaSmiQuery("0, a\nNo devices were found\n")).toThrow(/cannot read a GPU index/);
  });

  it("agrees with nvidia-smi -L on the captured host", () => {
    const listed = fixture("nvidia-smi-L-h100.txt").match(/^GPU (\d+): (.+) \(UUID: (.+)\)$/m);
    const [gpu] = parseNvidiaSmiQuery(fixture("nvidia-smi-query-h100.csv"));
    expect([String(gpu?.index), gpu?.name, gpu?.uuid]).toEqual(listed?.slice(1));
  });
});

describe("inventory and health", () => {
  const eight = parseNvidiaSmiQuery(fixture("nvidia-smi-query-h100x8.csv"));

  it("makes the node inventory: one model, every GPU with its UUID and memory", () => {
    const inv = inventoryFromReadings(eight);
    expect(inv.model).toBe("H100");
    expect(inv.gpus).toHaveLength(8);
    expect(inv.gpus[0]).toEqual({ index: 0, uuid: UUID0, name: "NVIDIA H100 80GB HBM3", memory_total_mib: 81559 });
  });

  it("knows the models Scalar sells and refuses others and mixed hosts", () => {
    expect(gpuModelFromName("NVIDIA H100 80GB HBM3")).toBe("H100");
    expect(gpuModelFromName("NVIDIA H200")).toBe("H200");
    expect(gpuModelFromName("NVIDIA A100-SXM4-80GB")).toBeNull();
    expect(() => inventoryFromReadings([{ index: 0, name: "NVIDIA A100-SXM4-80GB" }])).toThrow(/unsupported GPUs/);
    expect(() =>
      inventoryFromReadings([
        { index: 0, name: "NVIDIA H100 80GB HBM3" },
        { index: 1, name: "NVIDIA H200" },
      ]),
    ).toThrow(/one model/);
    expect(() => inventoryFromReadings([])).toThrow(/no GPU/);
  });

  it("marks a GPU unhealthy when its sensors do not answer or it is missing", () => {
    const health = healthFromReadings([0, 1, 2, 3, 4, 5, 6, 7, 8], eight);
    expect(health.filter((h) => !h.healthy).map((h) => h.index)).toEqual([7, 8]);
    expect(health[1]).toEqual({
      index: 1,
      healthy: true,
      temperature_c: 61,
      utilisation_pct: 97,
      memory_used_mib: 40961,
      memory_total_mib: 81559,
      power_w: 512.33,
    });
  });
});

describe("GPU sources", () => {
  it("runs nvidia-smi with the agent's query and parses its answer", async () => {
    const dir = mkdtempSync(join(tmpdir(), "fake-nvidia-smi-"));
    try {
      // Stands in for nvidia-smi on this GPU-less machine: checks the arguments, prints the 8-GPU capture.
      const bin = join(dir, "nvidia-smi");
      const out = resolve(import.meta.dirname, "fixtures/gpu-host/nvidia-smi-query-h100x8-noheader-nounits.csv");
      writeFileSync(
        bin,
        `#!/bin/sh\n[ "$1" = "--query-gpu=index,uuid,name,memory.total,memory.used,utilization.gpu,temperature.gpu,power.draw" ] && [ "$2" = "--format=csv,noheader,nounits" ] || { echo "bad args: $*" >&2; exit 9; }\ncat ${out}\n`,
      );
      chmodSync(bin, 0o755);
      const smi = new NvidiaSmi(bin);
      expect((await smi.inventory()).gpus).toHaveLength(8);
      expect((await smi.health()).filter((h) => h.healthy)).toHaveLength(7);

      writeFileSync(
        bin,
        "#!/bin/sh\necho 'NVIDIA-SMI has failed because it could not communicate with the driver' >&2\nexit 9\n",
      );
      expect((await smi.health()).every((h) => !h.healthy)).toBe(true);
      await expect(smi.inventory()).rejects.toThrow(/could not communicate with the driver/);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it("declares GPUs on a host without them (--gpus 8 --gpu-model H100)", async () => {
    const gpus = new DeclaredGpus(8, "H100");
    expect(await gpus.inventory()).toEqual({
      model: "H100",
      gpus: [0, 1, 2, 3, 4, 5, 6, 7].map((index) => ({ index })),
    });
    expect((await gpus.health()).every((h) => h.healthy)).toBe(true);
  });
});
