/**
 * Stripe v1 parameters: `application/x-www-form-urlencoded` bodies (and GET query strings) with
 * bracket nesting — `metadata[account_id]=…`, `period[start]=…`, `expand[0]=customer` (stripe-node's
 * `stringifyRequestData`), `expand[]=customer` (curl) — parsed into a tree, then checked against a
 * small per-endpoint schema that raises Stripe's own errors (`parameter_unknown`,
 * `parameter_missing`, `parameter_invalid_integer`, …).
 */
import {
  parameterInvalid,
  parameterInvalidEmpty,
  parameterInvalidInteger,
  parameterMissing,
  parameterUnknown,
  StripeSimError,
  unsupported,
} from "./errors";

/** A parsed parameter: a string, or a nested object (arrays arrive as objects with keys "0", "1", …). */
export type FormValue = string | FormObject;
export interface FormObject {
  [key: string]: FormValue;
}

const newObject = (): FormObject => Object.create(null) as FormObject;

/** Parses a form body or query string into a tree (null-prototype objects: no `__proto__` games). */
export function parseForm(text: string, into: FormObject = newObject()): FormObject {
  for (const [rawKey, value] of new URLSearchParams(text)) {
    const match = /^([^[\]]+)((?:\[[^[\]]*\])*)$/.exec(rawKey);
    if (!match) throw parameterInvalid(rawKey, `Invalid parameter name: ${rawKey}`);
    const segments = [match[1]!, ...[...match[2]!.matchAll(/\[([^[\]]*)\]/g)].map((m) => m[1]!)];
    let node = into;
    for (let i = 0; i < segments.length; i++) {
      const segment = segments[i] === "" ? String(Object.keys(node).length) : segments[i]!;
      const name =
        segments[0] +
        segments
          .slice(1, i + 1)
          .map((x) => `[${x}]`)
          .join("");
      if (i === segments.length - 1) {
        if (typeof node[segment] === "object")
          throw parameterInvalid(name, `Invalid value for ${name}: expected a hash`);
        node[segment] = value;
        break;
      }
      const next = node[segment];
      if (typeof next === "string") throw parameterInvalid(name, `Invalid hash: ${name} was also given a plain value`);
      if (next === undefined) node[segment] = newObject();
      node = node[segment] as FormObject;
    }
  }
  return into;
}

/** A stable text for a parameter tree (keys sorted): what idempotency compares. */
export function canonical(value: FormValue): string {
  if (typeof value === "string") return JSON.stringify(value);
  const keys = Object.keys(value).sort();
  return `{${keys.map((k) => `${JSON.stringify(k)}:${canonical(value[k]!)}`).join(",")}}`;
}

/** A plain (prototype-ful) deep copy, for logs and tests. */
export function plain(value: FormObject): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(value)) out[k] = typeof v === "string" ? v : plain(v);
  return out;
}

export type Spec =
  | { kind: "string"; required?: boolean; emptyable?: boolean; maxLength?: number }
  | { kind: "id"; required?: boolean }
  | { kind: "integer"; required?: boolean; min?: number; max?: number }
  | { kind: "boolean" }
  | { kind: "enum"; values: readonly string[] }
  | { kind: "currency"; required?: boolean }
  /** A decimal string with at most 12 decimal places, e.g. `unit_amount_decimal`. */
  | { kind: "decimal" }
  | { kind: "metadata" }
  | { kind: "object"; fields: Schema; emptyable?: boolean }
  | { kind: "strings" }
  /** A real Stripe parameter that the simulator does not model. */
  | { kind: "unsupported" };

export type Schema = Record<string, Spec>;

const nameOf = (prefix: string, key: string) => (prefix ? `${prefix}[${key}]` : key);

/**
 * Checks `params` against `schema` and returns the coerced values (integers as numbers, booleans,
 * lower-cased currencies, metadata as string maps; `null` for an emptied emptyable value).
 * Unknown parameters are reported first, then each field in schema order.
 */
export function validate(params: FormObject, schema: Schema, where: string, prefix = ""): Record<string, unknown> {
  for (const key of Object.keys(params)) {
    const spec = schema[key];
    if (!spec) throw parameterUnknown(nameOf(prefix, key));
    if (spec.kind === "unsupported")
      throw unsupported(nameOf(prefix, key), `the parameter \`${nameOf(prefix, key)}\` of ${where}`);
  }
  const out: Record<string, unknown> = {};
  for (const [key, spec] of Object.entries(schema)) {
    const name = nameOf(prefix, key);
    const raw = params[key];
    if (raw === undefined) {
      if ("required" in spec && spec.required) throw parameterMissing(name);
      continue;
    }
    out[key] = coerce(raw, spec, name, where);
  }
  return out;
}

const DECIMAL = /^-?\d+(\.\d{1,12})?$/;

function coerce(raw: FormValue, spec: Spec, name: string, where: string): unknown {
  const text = () => {
    if (typeof raw !== "string") throw parameterInvalid(name, `Invalid ${name}: expected a string, got a hash`);
    return raw;
  };
  switch (spec.kind) {
    case "string": {
      const s = text();
      if (s === "") {
        if (spec.emptyable) return null;
        throw parameterInvalidEmpty(name);
      }
      if (spec.maxLength !== undefined && s.length > spec.maxLength)
        throw parameterInvalid(name, `Invalid ${name}: must be at most ${spec.maxLength} characters`);
      return s;
    }
    case "id": {
      const s = text();
      if (s === "") throw parameterInvalidEmpty(name);
      return s;
    }
    case "integer": {
      const s = text();
      if (s === "") throw parameterInvalidEmpty(name);
      const n = Number(s);
      if (!/^-?\d+$/.test(s) || !Number.isSafeInteger(n)) throw parameterInvalidInteger(name, s);
      if (spec.min !== undefined && n < spec.min)
        throw parameterInvalid(name, `This value must be greater than or equal to ${spec.min}.`);
      if (spec.max !== undefined && n > spec.max)
        throw parameterInvalid(name, `This value must be less than or equal to ${spec.max}.`);
      return n;
    }
    case "boolean": {
      const s = text();
      if (s !== "true" && s !== "false") throw parameterInvalid(name, `Invalid boolean: ${s}`);
      return s === "true";
    }
    case "enum": {
      const s = text();
      if (!spec.values.includes(s)) {
        const list =
          spec.values.length === 2
            ? spec.values.join(" or ")
            : `${spec.values.slice(0, -1).join(", ")}, or ${spec.values.at(-1)}`;
        throw parameterInvalid(name, `Invalid ${name}: must be one of ${list}`);
      }
      return s;
    }
    case "currency": {
      const s = text();
      if (s === "") throw parameterInvalidEmpty(name);
      if (!/^[a-zA-Z]{3}$/.test(s)) throw parameterInvalid(name, `Invalid currency: ${s.toLowerCase()}.`);
      return s.toLowerCase();
    }
    case "decimal": {
      const s = text();
      if (!DECIMAL.test(s)) throw parameterInvalid(name, `Invalid decimal: ${s}`);
      return normalizeDecimal(s);
    }
    case "metadata":
      return metadata(raw, name);
    case "object": {
      if (raw === "") {
        if (spec.emptyable) return null;
        throw parameterInvalidEmpty(name);
      }
      if (typeof raw === "string") throw parameterInvalid(name, `Invalid object: ${name} must be a hash`);
      return validate(raw, spec.fields, where, name);
    }
    case "strings": {
      if (typeof raw === "string") throw parameterInvalid(name, `Invalid array: ${name} must be an array`);
      return Object.keys(raw)
        .sort((a, b) => Number(a) - Number(b))
        .map((k) => {
          const v = raw[k]!;
          if (typeof v !== "string" || !/^\d+$/.test(k))
            throw parameterInvalid(name, `Invalid array: ${name} must be an array of strings`);
          return v;
        });
    }
    case "unsupported":
      throw unsupported(name, `the parameter \`${name}\` of ${where}`);
  }
}

/**
 * Metadata: up to 50 keys of at most 40 characters, string values of at most 500. An empty value
 * (`metadata[k]=`) asks to unset that key and is kept as "" for the caller; `metadata=` (unset all)
 * gives null.
 */
function metadata(raw: FormValue, name: string): Record<string, string> | null {
  if (raw === "") return null;
  if (typeof raw === "string") throw parameterInvalid(name, `Invalid object: ${name} must be a hash`);
  const out: Record<string, string> = {};
  const keys = Object.keys(raw);
  if (keys.length > 50) throw parameterInvalid(name, "Metadata can have up to 50 keys.");
  for (const key of keys) {
    const value = raw[key]!;
    const param = `${name}[${key}]`;
    if (typeof value !== "string")
      throw parameterInvalid(param, `Invalid value for ${param}: metadata values must be strings`);
    if (key.length > 40)
      throw parameterInvalid(
        param,
        `Metadata keys can have up to 40 characters, but you passed in a key that is ${key.length} characters.`,
      );
    if (value.length > 500)
      throw parameterInvalid(
        param,
        `Metadata values can have up to 500 characters, but you passed in a value that is ${value.length} characters.`,
      );
    out[key] = value;
  }
  return out;
}

/** "12.500" → "12.5", "3.0" → "3", "-0" → "0". */
export function normalizeDecimal(s: string): string {
  let out = s.includes(".") ? s.replace(/0+$/, "").replace(/\.$/, "") : s;
  out = out.replace(/^(-?)0+(?=\d)/, "$1");
  return out === "-0" ? "0" : out;
}

const SCALE = 12;
const toScaled = (s: string): bigint => {
  const negative = s.startsWith("-");
  const [whole, frac = ""] = (negative ? s.slice(1) : s).split(".");
  const n = BigInt(whole! + frac.padEnd(SCALE, "0"));
  return negative ? -n : n;
};

/** round(a × b) for decimal strings, to an integer, halves away from zero. */
export function multiplyRound(a: string, b: string): number {
  const product = toScaled(a) * toScaled(b); // scaled by 10^24
  const unit = 10n ** BigInt(2 * SCALE);
  const negative = product < 0n;
  const abs = negative ? -product : product;
  let q = abs / unit;
  if ((abs % unit) * 2n >= unit) q += 1n;
  const n = Number(negative ? -q : q);
  if (!Number.isSafeInteger(n))
    throw new StripeSimError(400, { type: "invalid_request_error", message: "Amount too large." });
  return n;
}
