/** `npm run db:migrate`: migrate DATABASE_URL, or the local embedded database. */
import { DatabaseStartError } from "./embedded";
import { openDevDatabase } from "./local";
import { migrate } from "./migrate";

try {
  const db = await openDevDatabase();
  try {
    const target = new URL(db.url);
    console.log(`migrating ${target.host}${target.pathname}`);
    const result = await migrate(db.url, { log: (line) => console.log(`  ${line}`) });
    console.log(
      `auth shim ${result.shim}; ${result.applied.length} migration(s) applied, ${result.skipped.length} already applied`,
    );
  } finally {
    await db.stop();
  }
} catch (error) {
  console.error(error instanceof DatabaseStartError ? error.message : error);
  process.exit(1);
}
