/**
 * The drizzle schema, one file per area under `schema/` (drizzle-kit reads them all; see
 * drizzle.config.ts). Add an area's tables in its own file and export it here.
 */

export * from "./schema/api";
export * from "./schema/capacity";
export * from "./schema/core";
export * from "./schema/market";
export * from "./schema/scheduler";
