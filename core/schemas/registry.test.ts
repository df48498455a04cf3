import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { ImageRef } from "./job";
import { RegistryHost, registryOf, serverAddressOf } from "./registry";

describe("registryOf (Docker's reading of a reference)", () => {
  it.each([
    ["busybox", "docker.io"],
    ["busybox:1.36", "docker.io"],
    ["library/busybox", "docker.io"],
    ["org/app:1", "docker.io"],
    ["docker.io/org/app:1", "docker.io"],
    ["index.docker.io/org/app", "docker.io"],
    ["ghcr.io/org/app:1", "ghcr.io"],
    ["GHCR.IO/org/app:1", "ghcr.io"],
    ["127.0.0.1:5000/test/busybox:1", "127.0.0.1:5000"],
    ["localhost/app", "localhost"],
    ["localhost:5000/app@sha256:abc", "localhost:5000"],
    ["registry.example.com/a/b/c:tag", "registry.example.com"],
    ["org/app@sha256:abc", "docker.io"],
  ])("%s → %s", (image, registry) => {
    expect(registryOf(image)).toBe(registry);
  });

  it("names the host a reference starts with, else docker.io; always a host RegistryHost accepts", () => {
    // Path components without dots, so that only a host part looks like a host.
    const segment = fc.stringMatching(/^[a-z0-9]{1,4}(?:[_-][a-z0-9]{1,4}){0,2}$/);
    const host = fc.oneof(
      fc.constant("localhost"),
      fc.tuple(fc.stringMatching(/^[a-z0-9]{1,8}$/), fc.stringMatching(/^[a-z]{2,6}$/)).map(([a, b]) => `${a}.${b}`),
      fc.tuple(fc.stringMatching(/^[a-z0-9]{1,8}$/), fc.integer({ min: 1, max: 65_535 })).map(([a, p]) => `${a}:${p}`),
    );
    fc.assert(
      fc.property(
        fc.option(host, { nil: undefined }),
        fc.array(segment, { minLength: 1, maxLength: 3 }),
        fc.option(segment, { nil: undefined }),
        (h, path, tag) => {
          const ref = `${h ? `${h}/` : ""}${path.join("/")}${tag ? `:${tag}` : ""}`;
          fc.pre(ImageRef.safeParse(ref).success);
          const registry = registryOf(ref);
          expect(registry).toBe(h ? RegistryHost.parse(h) : "docker.io");
          expect(RegistryHost.parse(registry)).toBe(registry);
        },
      ),
    );
  });
});

describe("RegistryHost", () => {
  it("takes hosts with ports and folds Docker Hub's names into docker.io", () => {
    expect(RegistryHost.parse("ghcr.io")).toBe("ghcr.io");
    expect(RegistryHost.parse("registry.example.com:5000")).toBe("registry.example.com:5000");
    expect(RegistryHost.parse("index.docker.io")).toBe("docker.io");
    expect(RegistryHost.parse("registry-1.docker.io")).toBe("docker.io");
  });

  it("takes a host in any case and keeps it lower-case, as an image reference's host is read", () => {
    expect(RegistryHost.parse("Ghcr.IO")).toBe("ghcr.io");
    expect(RegistryHost.parse("Index.Docker.io")).toBe("docker.io");
    expect(RegistryHost.parse("Registry.Example.com:5000")).toBe(registryOf("Registry.Example.com:5000/app:1"));
  });

  it.each(["https://ghcr.io", "ghcr.io/org", "", "-bad.io", "ghcr.io:", "a b"])("refuses %j", (host) => {
    expect(RegistryHost.safeParse(host).success).toBe(false);
  });

  it("tells the engine Docker Hub by its v1 index address", () => {
    expect(serverAddressOf("docker.io")).toBe("https://index.docker.io/v1/");
    expect(serverAddressOf("ghcr.io")).toBe("ghcr.io");
  });
});
