/** `scalar regions`: GPUs by model and the queue by tier, per region. */
import { ok, type Region } from "../api/client";
import { type CommandSpec, choiceOption, stringOption } from "../args";
import { type Context, printJson } from "../context";
import { EXIT } from "../errors";
import { table } from "../output";
import { TIERS } from "./workload";

export function regionsTable(regions: Region[]): string {
  const rows: string[][] = [];
  for (const r of regions) {
    const queue = TIERS.map((tier) => {
      const q = r.queues.find((x) => x.tier === tier);
      return `${tier} ${q?.queued_jobs ?? 0}`;
    }).join(", ");
    const gpus = r.gpus.length > 0 ? r.gpus : [null];
    for (const g of gpus) {
      rows.push([
        r.region,
        r.available ? "yes" : "no",
        g?.gpu_model ?? "-",
        String(g?.total ?? 0),
        String(g?.free ?? 0),
        String(g?.held ?? 0),
        String(g?.busy ?? 0),
        queue,
      ]);
    }
  }
  return table(["REGION", "AVAILABLE", "GPU", "TOTAL", "FREE", "HELD", "BUSY", "QUEUED JOBS"], rows);
}

export const regions: CommandSpec<Context> = {
  words: ["regions"],
  summary: "regions: GPUs by model (total, free, held for Fast, busy) and queued jobs by tier",
  usage: "[--region R] [--tier fast|flex]",
  positionals: { min: 0, max: 0 },
  options: {
    region: { type: "string", value: "R", description: "only this region" },
    tier: { type: "string", value: "fast|flex", description: "only this tier's queue" },
  },
  examples: ["scalar regions", "scalar regions --json"],
  async run(ctx, { values }) {
    const region = stringOption(values, "region");
    const tier = choiceOption(values, "tier", TIERS);
    const conn = ctx.connection();
    const list = await ok(
      conn,
      conn.api.GET("/v1/regions", { params: { query: { ...(region ? { region } : {}), ...(tier ? { tier } : {}) } } }),
    );
    if (ctx.json) printJson(ctx, list);
    else if (list.data.length === 0) ctx.io.stderr("no regions\n");
    else ctx.io.stdout(regionsTable(list.data));
    return EXIT.ok;
  },
};
