import { describe, expect, it } from "vitest";
import { requestLogLevel, SLOW_REQUEST_MS } from "./log";

describe("requestLogLevel", () => {
  it("logs refused, failed and slow requests at info, the rest at debug", () => {
    expect(requestLogLevel(200, 3)).toBe("debug");
    expect(requestLogLevel(202, SLOW_REQUEST_MS - 1)).toBe("debug");
    expect(requestLogLevel(304, 0)).toBe("debug");
    expect(requestLogLevel(200, SLOW_REQUEST_MS)).toBe("info");
    for (const status of [400, 401, 404, 409, 429, 500, 503]) expect(requestLogLevel(status, 1)).toBe("info");
  });
});
