import { z } from "zod";

/** GPU models Scalar sells. SF Compute delivers 8-GPU H100 and H200 nodes. */
export const GPU_MODELS = ["H100", "H200"] as const;
export const GpuModel = z.enum(GPU_MODELS);
export type GpuModel = z.infer<typeof GpuModel>;

/** Fast starts in seconds on warm capacity; Flex waits for cheap capacity. */
export const TIERS = ["fast", "flex"] as const;
export const Tier = z.enum(TIERS);
export type Tier = z.infer<typeof Tier>;

/** A node is one 8-GPU machine (SF Compute's unit). */
export const GPUS_PER_NODE = 8;

export const Region = z.string().regex(/^[a-z][a-z0-9-]{1,31}$/, "a region name such as us-west-1");
export type Region = z.infer<typeof Region>;

/** Epoch milliseconds: every instant that crosses a process boundary. */
/**
 * Milliseconds since the epoch, up to the end of year 9999 (UTC): later instants are not 4-digit
 * ISO years (`+275760-09-13T…` at the last a Date holds), which Postgres does not read, and past
 * 8.64e15 not even dates.
 */
export const EpochMs = z.number().int().nonnegative().max(253_402_300_799_999);

/** The one error body every Scalar HTTP route returns. */
export const ErrorEnvelope = z.object({
  error: z.object({
    code: z.string(),
    message: z.string(),
    details: z.unknown().optional(),
    request_id: z.string(),
  }),
});
export type ErrorEnvelope = z.infer<typeof ErrorEnvelope>;
