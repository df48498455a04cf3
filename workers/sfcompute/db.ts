/**
 * The database handle the market code takes: drizzle over postgres.js with Scalar's schema (the
 * same as `Db` of ../db/client, named here so Node-side tests need none of the Worker's bindings).
 */
import type { PostgresJsDatabase } from "drizzle-orm/postgres-js";
import type * as schema from "../db/schema";

export type MarketDb = PostgresJsDatabase<typeof schema>;
