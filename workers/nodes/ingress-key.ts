/**
 * The key the control plane shows a node's ingress (INGRESS.keyHeader): HMAC-SHA256 of the node id
 * under the Worker secret INGRESS_SECRET, hex. Derived, not stored: the agent learns it at
 * registration, the invoke route computes it per request, and rotating INGRESS_SECRET changes every
 * node's key at its next registration. One node's key opens only that node's ingress.
 */
declare global {
  namespace Cloudflare {
    interface Env {
      /** A Worker secret (not in wrangler.toml): node ingress keys derive from it; unset, no endpoint traffic. */
      INGRESS_SECRET?: string;
    }
  }
}

export interface IngressSecretEnv {
  INGRESS_SECRET?: string;
}

const encoder = new TextEncoder();
const keys = new Map<string, Promise<CryptoKey>>();

/** The node's ingress key; null when the deployment has no INGRESS_SECRET (no endpoint traffic). */
export async function ingressKey(env: IngressSecretEnv, nodeId: string): Promise<string | null> {
  const secret = env.INGRESS_SECRET?.trim();
  if (!secret) return null;
  let key = keys.get(secret);
  if (!key) {
    key = crypto.subtle.importKey("raw", encoder.encode(secret), { name: "HMAC", hash: "SHA-256" }, false, ["sign"]);
    keys.set(secret, key);
  }
  const mac = await crypto.subtle.sign("HMAC", await key, encoder.encode(`scalar-ingress:${nodeId}`));
  return [...new Uint8Array(mac)].map((b) => b.toString(16).padStart(2, "0")).join("");
}
