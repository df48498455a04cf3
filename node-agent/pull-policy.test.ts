import { describe, expect, it } from "vitest";
import { effectivePolicy, referenceParts } from "./pull-policy";

describe("referenceParts", () => {
  it.each([
    ["busybox", null, false],
    ["busybox:1.36", "1.36", false],
    ["library/busybox:latest", "latest", false],
    ["127.0.0.1:5000/test/busybox", null, false],
    ["127.0.0.1:5000/test/busybox:1", "1", false],
    ["ghcr.io/org/img@sha256:abc", null, true],
    ["ghcr.io/org/img:v2@sha256:abc", "v2", true],
    ["localhost:5000/img@sha256:abc", null, true],
  ])("%s → tag %s, digest %s", (ref, tag, digest) => {
    expect(referenceParts(ref)).toEqual({ tag, digest });
  });
});

describe("effectivePolicy", () => {
  it.each([
    // auto: pinned by digest or a fixed tag → pulled only when missing
    ["busybox:1.36", "if-not-present"],
    ["127.0.0.1:5000/test/busybox:1", "if-not-present"],
    ["ghcr.io/org/img@sha256:abc", "if-not-present"],
    ["ghcr.io/org/img:latest@sha256:abc", "if-not-present"],
    // auto: `latest` or no tag → pulled before every start
    ["busybox", "always"],
    ["busybox:latest", "always"],
    ["127.0.0.1:5000/test/busybox", "always"],
    ["127.0.0.1:5000/test/busybox:latest", "always"],
  ])("auto: %s → %s", (ref, expected) => {
    expect(effectivePolicy(ref, "auto")).toBe(expected);
  });

  it("an explicit policy holds whatever the reference", () => {
    for (const ref of ["busybox", "busybox:1.36", "img@sha256:abc"]) {
      expect(effectivePolicy(ref, "always")).toBe("always");
      expect(effectivePolicy(ref, "if-not-present")).toBe("if-not-present");
    }
  });
});
