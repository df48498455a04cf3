/** The object's SQLite schema, one entry per version. Append; never edit an applied entry. */
export const SCHEMA: readonly string[] = [
  `create table meta (key text primary key, value text not null);
   create table nodes (id text primary key, data text not null);`,
];
