/**
 * The database handle the market code takes: drizzle over postgres.js (the same as `Db` of
 * ../db/client, named here so Node-side tests need none of the Worker's bindings).
 */
import type { PostgresJsDatabase } from "drizzle-orm/postgres-js";

export type MarketDb = PostgresJsDatabase;
