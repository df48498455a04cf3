/** `npm run db:start`: just the embedded Postgres, migrated, in the foreground (Ctrl-C stops it). */
import { DatabaseStartError } from "./embedded";
import { openDevDatabase } from "./local";
import { migrate } from "./migrate";

try {
  const db = await openDevDatabase((line) => process.stdout.write(line));
  const result = await migrate(db.url);
  console.log(`\nPostgres ready: ${db.url}\n(${result.applied.length} migrations applied). Ctrl-C stops it.`);
  const stop = async () => {
    await db.stop();
    process.exit(0);
  };
  process.on("SIGINT", stop);
  process.on("SIGTERM", stop);
  if (!db.started) {
    console.log("(it was already running, or DATABASE_URL is set: nothing to keep alive here)");
    process.exit(0);
  }
  setInterval(() => {}, 1 << 30);
} catch (error) {
  console.error(error instanceof DatabaseStartError ? error.message : error);
  process.exit(1);
}
