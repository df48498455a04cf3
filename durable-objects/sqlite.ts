/**
 * The one way Durable Object code reaches its SQLite: every value bound as a parameter, rows typed
 * by the caller, and the schema created once and upgraded by version.
 */
export type SqlValue = string | number | null | ArrayBuffer;

export class ObjectSql {
  constructor(private readonly storage: DurableObjectStorage) {}

  all<Row extends Record<string, SqlValue>>(query: string, ...params: SqlValue[]): Row[] {
    return this.storage.sql.exec<Row>(query, ...params).toArray();
  }

  one<Row extends Record<string, SqlValue>>(query: string, ...params: SqlValue[]): Row | undefined {
    const rows = this.all<Row>(query, ...params);
    return rows[0];
  }

  run(query: string, ...params: SqlValue[]): number {
    return this.storage.sql.exec(query, ...params).rowsWritten;
  }

  /** Apply `migrations[v]` for every version above the stored one; each step in a transaction. */
  ensureSchema(migrations: readonly string[]): number {
    this.storage.sql.exec("create table if not exists _schema (version integer not null)");
    const row = this.one<{ version: number }>("select version from _schema");
    let version = row?.version ?? 0;
    if (!row) this.run("insert into _schema (version) values (0)");
    while (version < migrations.length) {
      const step = migrations[version] as string;
      this.storage.transactionSync(() => {
        this.storage.sql.exec(step);
        this.run("update _schema set version = ?", version + 1);
      });
      version += 1;
    }
    return version;
  }
}
