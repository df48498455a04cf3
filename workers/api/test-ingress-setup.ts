/** Global setup of the `workers` project: the fake node ingress of test-ingress.ts, its URL provided as `ingressUrl`. */
import type { TestProject } from "vitest/node";
import { startTestIngress } from "./test-ingress";

declare module "vitest" {
  export interface ProvidedContext {
    ingressUrl: string;
  }
}

export default async function setup(project: TestProject) {
  const ingress = await startTestIngress();
  project.provide("ingressUrl", ingress.url);
  return () => ingress.close();
}
