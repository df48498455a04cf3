import { describe, expect, it } from "vitest";
import { engineMessage, logTimestampToSince, pullErrorCode } from "./dockerode-engine";

describe("dockerode engine helpers", () => {
  it("sorts pull failures by the engine's answers (platform-facts a.6)", () => {
    expect(pullErrorCode(400, "invalid reference format: repository name must be lowercase")).toBe("invalid_reference");
    expect(pullErrorCode(404, "manifest for 127.0.0.1:5000/test/busybox:nope not found: manifest unknown")).toBe(
      "image_not_found",
    );
    expect(pullErrorCode(500, 'Get "http://127.0.0.1:1/v2/": dial tcp 127.0.0.1:1: connect: connection refused')).toBe(
      "registry_unreachable",
    );
    expect(
      pullErrorCode(500, 'Get "https://registry-1.docker.io/v2/": dial tcp: lookup registry-1.docker.io: no such host'),
    ).toBe("registry_unreachable");
    expect(pullErrorCode(undefined, "pull access denied for x, repository does not exist")).toBe("image_not_found");
    // What this engine answered for a registry behind basic auth (docker-registry with htpasswd),
    // which the pull used to sort as an engine fault and retry three times.
    expect(
      pullErrorCode(500, 'Head "http://127.0.0.1:5001/v2/test/busybox/manifests/1": no basic auth credentials'),
    ).toBe("image_unauthorized");
    expect(pullErrorCode(401, "unauthorized: authentication required")).toBe("image_unauthorized");
    expect(pullErrorCode(500, "write /var/lib/docker/tmp: no space left on device")).toBe("engine");
  });

  it("strips dockerode's HTTP prefix from engine messages", () => {
    expect(engineMessage({ message: "(HTTP code 404) unexpected - manifest unknown " })).toBe("manifest unknown");
    expect(engineMessage({ message: "x", json: { message: "from json" } })).toBe("from json");
  });

  it("turns a log entry timestamp into the logs API's since value, nanoseconds kept", () => {
    expect(logTimestampToSince("2026-11-26T01:40:01.445388526Z")).toBe("1795657201.445388526");
    expect(logTimestampToSince("2026-11-26T01:40:01.4Z")).toBe("1795657201.400000000");
    expect(logTimestampToSince("2026-11-26T01:40:01Z")).toBe("1795657201.000000000");
    expect(() => logTimestampToSince("yesterday")).toThrow();
  });
});
