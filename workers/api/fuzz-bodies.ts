/**
 * Random and mutated requests for the fuzz test, generated from the OpenAPI document's JSON
 * schemas with a seeded generator (same seed, same requests), so a failure can be replayed.
 */
type Schema = Record<string, unknown>;

/** mulberry32: small, seedable, good enough to spread test inputs. */
export function prng(seed: number) {
  let a = seed >>> 0;
  const next = () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
  return {
    next,
    int: (lo: number, hi: number) => lo + Math.floor(next() * (hi - lo + 1)),
    pick: <T>(items: readonly T[]): T => items[Math.floor(next() * items.length)]!,
    chance: (p: number) => next() < p,
  };
}
export type Rng = ReturnType<typeof prng>;

/** Values of the wrong kind, boundary numbers and hostile strings. */
const WEIRD: unknown[] = [
  null,
  true,
  false,
  0,
  -1,
  1.5,
  -0.000001,
  2 ** 31,
  Number.MAX_SAFE_INTEGER + 2,
  1e308,
  "",
  " ",
  "0",
  "true",
  "null",
  "💥\u0000\u202e",
  "../../etc/passwd",
  "'; drop table jobs; --",
  "x".repeat(5000),
  [],
  [null],
  {},
  { $ne: 1 },
  JSON.parse('{"__proto__": {"admin": true}}'),
];

export class BodyGenerator {
  constructor(
    private readonly components: Record<string, Schema>,
    private readonly rng: Rng,
  ) {}

  resolve(schema: Schema): Schema {
    let s = schema;
    for (let i = 0; i < 10 && typeof s.$ref === "string"; i++) {
      s = this.components[(s.$ref as string).split("/").pop()!] ?? {};
    }
    return s;
  }

  /** A value that often satisfies the schema (examples, defaults, bounds). */
  valid(schema: Schema, depth = 0): unknown {
    const s = this.resolve(schema);
    const r = this.rng;
    if (depth > 6) return null;
    for (const key of ["anyOf", "oneOf"]) {
      if (Array.isArray(s[key])) return this.valid(r.pick(s[key] as Schema[]), depth + 1);
    }
    if (Array.isArray(s.enum)) return r.pick(s.enum as unknown[]);
    if ("const" in s) return s.const;
    if (s.example !== undefined && r.chance(0.5)) return s.example;
    if (s.default !== undefined && r.chance(0.3)) return s.default;
    const types = Array.isArray(s.type) ? (s.type as string[]) : [String(s.type ?? "object")];
    const type = r.pick(types.filter((t) => t !== "null").length ? types.filter((t) => t !== "null") : types);
    switch (type) {
      case "object": {
        const out: Record<string, unknown> = {};
        const props = (s.properties ?? {}) as Record<string, Schema>;
        const required = new Set((s.required as string[]) ?? []);
        for (const [name, p] of Object.entries(props)) {
          if (required.has(name) || r.chance(0.5)) out[name] = this.valid(p, depth + 1);
        }
        if (s.additionalProperties && typeof s.additionalProperties === "object") {
          for (let i = r.int(0, 2); i > 0; i--)
            out[r.pick(["team", "run", "a.b/c", "x"])] = this.valid(s.additionalProperties as Schema, depth + 1);
        }
        return out;
      }
      case "array": {
        const max = Math.min(Number(s.maxItems ?? 3), 3);
        const min = Math.min(Number(s.minItems ?? 0), max);
        return Array.from({ length: r.int(min, max) }, () => this.valid((s.items ?? {}) as Schema, depth + 1));
      }
      case "integer":
      case "number": {
        const lo = Number(s.minimum ?? s.exclusiveMinimum ?? -5);
        const hi = Number(s.maximum ?? s.exclusiveMaximum ?? 100);
        const v = r.pick([lo, hi, r.int(Math.max(lo, -1000), Math.min(hi, 100_000)), 1, 8, 16]);
        return type === "integer" ? Math.trunc(v) : v;
      }
      case "boolean":
        return r.chance(0.5);
      case "string": {
        if (s.format === "uuid") return crypto.randomUUID();
        if (s.format === "date-time") return new Date(Date.now() + r.int(-1e9, 1e9)).toISOString();
        const len = r.int(Number(s.minLength ?? 1), Math.min(Number(s.maxLength ?? 24), 24));
        return r.pick(["busybox", "us-west-1", "H100", "jobs:read", "sh", "/health", "svc-a", "a".repeat(len)]);
      }
      default:
        return null;
    }
  }

  /** A valid-ish value with one or more things broken. */
  mutated(schema: Schema): unknown {
    const r = this.rng;
    const value = this.valid(schema);
    const rounds = r.int(1, 3);
    let out = value;
    for (let i = 0; i < rounds; i++) out = this.mutateOnce(out);
    return out;
  }

  private mutateOnce(value: unknown): unknown {
    const r = this.rng;
    if (value === null || typeof value !== "object" || r.chance(0.1)) return r.pick(WEIRD);
    if (Array.isArray(value)) {
      const copy = [...value];
      const op = r.int(0, 3);
      if (op === 0 && copy.length) copy[r.int(0, copy.length - 1)] = this.mutateOnce(copy[r.int(0, copy.length - 1)]);
      else if (op === 1) copy.push(r.pick(WEIRD));
      else if (op === 2) copy.splice(0, copy.length, ...Array.from({ length: r.int(0, 600) }, () => r.pick(WEIRD)));
      else copy.push(...copy);
      return copy;
    }
    const copy: Record<string, unknown> = { ...(value as Record<string, unknown>) };
    const keys = Object.keys(copy);
    const op = r.int(0, 3);
    if (op === 0 && keys.length) delete copy[r.pick(keys)];
    else if (op === 1) copy[r.pick(["unknown_field", "__proto__", "constructor", "Gpu_Count", ""])] = r.pick(WEIRD);
    else if (keys.length) {
      const k = r.pick(keys);
      copy[k] = r.chance(0.5) ? r.pick(WEIRD) : this.mutateOnce(copy[k]);
    }
    return copy;
  }

  /** Bytes that are not the JSON they claim to be, or not JSON at all. */
  rawBody(schema: Schema): string {
    const r = this.rng;
    const json = JSON.stringify(this.valid(schema));
    switch (r.int(0, 5)) {
      case 0:
        return json.slice(0, r.int(0, Math.max(0, json.length - 1)));
      case 1:
        return `${json}${r.pick(["}", "]", ",", "garbage", "\u0000"])}`;
      case 2:
        return Array.from({ length: r.int(1, 200) }, () => String.fromCharCode(r.int(0, 0xffff))).join("");
      case 3:
        return `${"[".repeat(r.int(100, 5000))}`;
      case 4:
        return json.replace(/"/g, "'");
      default:
        return "";
    }
  }
}
