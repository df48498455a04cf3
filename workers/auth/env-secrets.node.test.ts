import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { ApiError } from "../http/errors";
import { keyringOf, newKeyEntry, open, openEnv, SecretKeyError, seal, sealEnv } from "./env-secrets";

const ACCOUNT = "6f1c2a8e-0000-4000-8000-000000000001";
const OTHER_ACCOUNT = "6f1c2a8e-0000-4000-8000-000000000002";
const ring = (keys: string) => keyringOf({ ENV_SECRETS_KEYS: keys })!;

describe("sealing secret environment values", () => {
  it("opens what it sealed, for the same account and name only", async () => {
    const keys = { ENV_SECRETS_KEYS: newKeyEntry("k1") };
    const stored = await sealEnv(keys, ACCOUNT, [
      { name: "MODE", value: "train", secret: false },
      { name: "HF_TOKEN", value: "hf_very_secret_value", secret: true },
    ]);
    expect(stored[0]).toEqual({ name: "MODE", secret: false, value: "train" });
    expect(stored[1]).toMatchObject({ name: "HF_TOKEN", secret: true });
    expect(stored[1]).not.toHaveProperty("value");
    expect(JSON.stringify(stored)).not.toContain("hf_very_secret_value");
    expect((stored[1] as { sealed: string }).sealed).toMatch(/^v1\.k1\.[A-Za-z0-9_-]{16}\.[A-Za-z0-9_-]+$/);
    expect(await openEnv(keys, ACCOUNT, stored)).toEqual([
      { name: "MODE", value: "train" },
      { name: "HF_TOKEN", value: "hf_very_secret_value" },
    ]);
    // Moved to another account's row, or renamed: it does not open.
    await expect(openEnv(keys, OTHER_ACCOUNT, stored)).rejects.toThrow(SecretKeyError);
    await expect(openEnv(keys, ACCOUNT, [{ ...stored[1], name: "OTHER" }])).rejects.toThrow(/does not open/);
    // Each seal draws a fresh IV: the same value never looks the same twice.
    const again = await sealEnv(keys, ACCOUNT, [{ name: "HF_TOKEN", value: "hf_very_secret_value", secret: true }]);
    expect(again[0]).not.toEqual(stored[1]);
  });

  it("round-trips any text, and refuses any altered byte (property)", async () => {
    const keyring = await ring(newKeyEntry("p"));
    await fc.assert(
      fc.asyncProperty(fc.string({ unit: "grapheme", maxLength: 200 }), fc.nat(), async (value, at) => {
        const sealed = await seal(keyring, ACCOUNT, "V", value);
        expect(await open(keyring, ACCOUNT, "V", sealed)).toBe(value);
        const data = sealed.split(".")[3]!;
        const i = at % (data.length - 1); // not the last character: some of its bits may be padding
        const flipped = data[i] === "A" ? "B" : "A";
        const altered = `${sealed.slice(0, sealed.length - data.length + i)}${flipped}${data.slice(i + 1)}`;
        if (altered !== sealed) await expect(open(keyring, ACCOUNT, "V", altered)).rejects.toThrow(SecretKeyError);
      }),
      { numRuns: 60 },
    );
  });

  it("rotates: the first key seals, every listed key opens, a dropped key says which", async () => {
    const old = newKeyEntry("old");
    const sealedOld = await seal(await ring(old), ACCOUNT, "T", "v");
    const rotated = await ring(`${newKeyEntry("new")},${old}`);
    expect(rotated.sealWith.id).toBe("new");
    expect(await open(rotated, ACCOUNT, "T", sealedOld)).toBe("v");
    expect((await seal(rotated, ACCOUNT, "T", "v")).startsWith("v1.new.")).toBe(true);
    await expect(open(await ring(newKeyEntry("new")), ACCOUNT, "T", sealedOld)).rejects.toThrow(
      /sealed with key old, which ENV_SECRETS_KEYS lacks/,
    );
  });

  it("refuses to store a secret without a key, and needs none without secrets", async () => {
    const plain = [{ name: "A", value: "1", secret: false }];
    expect(await sealEnv({}, ACCOUNT, plain)).toEqual([{ name: "A", secret: false, value: "1" }]);
    const secret = [{ name: "S", value: "x", secret: true }];
    for (const keys of [{}, { ENV_SECRETS_KEYS: "" }, { ENV_SECRETS_KEYS: "k1:short" }]) {
      const error = await sealEnv(keys, ACCOUNT, secret).catch((e: unknown) => e);
      expect(error).toBeInstanceOf(ApiError);
      expect(error).toMatchObject({ status: 503, code: "secrets_unavailable" });
    }
  });

  it("names what is wrong with a malformed ENV_SECRETS_KEYS", async () => {
    const key = newKeyEntry("a").split(":")[1];
    for (const [value, message] of [
      ["nokey", /id:base64key/],
      [`bad id!:${key}`, /id:base64key/],
      ["a:AAAA", /32 bytes/],
      [`a:${key},a:${key}`, /appears twice/],
      [`a:${key}:x`, /id:base64key/],
    ] as const) {
      await expect(ring(value)).rejects.toThrow(message);
    }
    expect(keyringOf({})).toBeNull();
  });

  it("opens entries stored before sealing existed, and lists without secrets need no key", async () => {
    const legacy = [
      { name: "A", secret: false, value: "1" },
      { name: "S", secret: true, value: "stored in the clear before" },
    ];
    expect(await openEnv({}, ACCOUNT, legacy)).toEqual([
      { name: "A", value: "1" },
      { name: "S", value: "stored in the clear before" },
    ]);
    expect(await openEnv({}, ACCOUNT, null)).toEqual([]);
    const sealed = await sealEnv({ ENV_SECRETS_KEYS: newKeyEntry("k") }, ACCOUNT, [
      { name: "S", value: "x", secret: true },
    ]);
    await expect(openEnv({}, ACCOUNT, sealed)).rejects.toThrow(/ENV_SECRETS_KEYS is not set/);
  });
});
