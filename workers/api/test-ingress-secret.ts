/** The workerd tests' INGRESS_SECRET (vitest.config.ts binds it; test-ingress.ts checks keys with it). No imports: the config loads it. */
export const TEST_INGRESS_SECRET = "test-ingress-secret-0123456789abcdef";
