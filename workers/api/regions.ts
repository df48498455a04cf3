/** `GET /v1/regions`: capacity and queue summary per region and tier, without node-level internals. */
import { createRoute, z } from "@hono/zod-openapi";
import { GpuModel, Tier } from "../../core/schemas";
import { regionsOf } from "../regions";
import { BEARER, createRouter, errors, guard, respond } from "./router";
import { schedulerOf, servedRegion } from "./scheduler";

const RegionSummary = z
  .object({
    region: z.string(),
    available: z.boolean().openapi({ description: "False when the region's scheduler did not answer." }),
    gpus: z.array(
      z.object({
        gpu_model: GpuModel,
        total: z.number().int().openapi({
          description:
            "Healthy GPUs of the region's nodes, draining ones included (their idle GPUs are neither free, held nor busy).",
        }),
        free: z.number().int().openapi({ description: "On ready nodes, running nothing and not held." }),
        held: z.number().int().openapi({
          description:
            "Held back by the capacity manager, mostly as warm Fast headroom: a Fast job starts on them at once; Flex work does not take them.",
        }),
        busy: z.number().int().openapi({ description: "Running work." }),
      }),
    ),
    queues: z.array(
      z.object({
        tier: Tier,
        queued_jobs: z.number().int(),
        queued_gpus: z.number().int(),
        oldest_wait_s: z.number().int(),
      }),
    ),
  })
  .openapi("Region");
const RegionList = z.object({ data: z.array(RegionSummary), next_cursor: z.null() }).openapi("RegionList");

export const regionsRouter = createRouter();

regionsRouter.openapi(
  createRoute({
    method: "get",
    path: "/v1/regions",
    tags: ["Account"],
    summary: "List regions",
    description: "Each region served, its GPUs by model, and its queue by tier. Filter with `region` and `tier`.",
    security: BEARER,
    middleware: guard({ account: false }),
    request: {
      query: z.strictObject({ region: z.string().max(32).optional(), tier: Tier.optional() }),
    },
    responses: {
      200: { description: "The regions.", content: { "application/json": { schema: RegionList } } },
      ...errors(),
    },
  }),
  async (c) => {
    const q = c.req.valid("query");
    const regions = q.region ? [servedRegion(c.env, q.region, "region", "query")] : regionsOf(c.env);
    const data = await Promise.all(
      regions.map(async (region) => {
        try {
          const snap = await schedulerOf(c.env, region).capacitySnapshot();
          return {
            region,
            available: true,
            gpus: snap.by_model.map((m) => ({
              gpu_model: m.gpu_model,
              total: m.total_gpus,
              free: m.free_gpus,
              held: m.reserved_gpus,
              busy: m.busy_gpus,
            })),
            queues: snap.queues
              .filter((t) => !q.tier || t.tier === q.tier)
              .map((t) => ({
                tier: t.tier,
                queued_jobs: t.queued_jobs,
                queued_gpus: t.queued_gpus,
                oldest_wait_s: Math.floor(t.oldest_wait_ms / 1000),
              })),
          };
        } catch (error) {
          c.get("log").warn("region.snapshot_failed", { region, error: String(error) });
          return { region, available: false, gpus: [], queues: [] };
        }
      }),
    );
    return respond(c, RegionList, { data, next_cursor: null }, 200);
  },
);
