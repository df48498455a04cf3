/** What the token issuer's global setup provides to the `workers` tests (vitest `inject`). */
import type { JWK } from "jose";

declare module "vitest" {
  export interface ProvidedContext {
    supabaseUrl: string;
    issuerKeys: { kid: string; privateJwk: JWK };
  }
}
