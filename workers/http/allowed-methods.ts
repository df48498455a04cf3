/**
 * Which methods a path has routes for, so a request with another method is told `405` and `Allow`
 * rather than that the path does not exist. Matched by Hono's own pattern router over the app's
 * registered routes (middleware, registered for every method, excluded).
 */
import { PatternRouter } from "hono/router/pattern-router";

export function allowedMethods(routes: readonly { method: string; path: string }[]): (path: string) => string[] {
  const router = new PatternRouter<true>();
  const methods = new Set<string>();
  for (const r of routes) {
    if (r.method === "ALL") continue;
    router.add(r.method, r.path, true);
    methods.add(r.method);
  }
  return (path) => {
    const allowed = [...methods].filter((m) => router.match(m, path)[0].length > 0);
    if (allowed.includes("GET") && !allowed.includes("HEAD")) allowed.push("HEAD");
    return allowed.sort();
  };
}
