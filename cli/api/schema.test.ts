import { readFileSync } from "node:fs";
import { describe, expect, it } from "vitest";
import { renderSchemaTypes, TYPES_FILE } from "./generate";

describe("cli/api/schema.ts", () => {
  it("is what openapi-typescript generates from docs/openapi.json (else: npm run cli:types)", async () => {
    expect(readFileSync(TYPES_FILE, "utf8") === (await renderSchemaTypes())).toBe(true);
  });
});
