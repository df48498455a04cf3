import { defineConfig } from "drizzle-kit";

// `npm run db:generate` writes a new migration from the schema. Hand-written SQL (triggers, RLS,
// views) goes in `npx drizzle-kit generate --custom --name <what>` files, in the same sequence.
export default defineConfig({
  dialect: "postgresql",
  schema: "./workers/db/schema/*.ts",
  out: "./migrations",
  schemaFilter: ["public"],
  migrations: { prefix: "timestamp" },
  strict: true,
});
