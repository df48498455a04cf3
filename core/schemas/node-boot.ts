/**
 * How a node bought on the market learns to become a Scalar node: the capacity manager passes this
 * as the node's `cloud_init_user_data` (base64 of a shell script, which cloud-init runs at first
 * boot). The script exports the agent's settings and starts it; locally, the launcher plays the
 * VM's part and reads the same settings back to start an agent process.
 */
import { z } from "zod";
import { IngressUrl } from "./agent";
import { GpuModel } from "./common";

export const NodeBootConfig = z.object({
  /** Base URL of the Scalar API the agent talks to. */
  api_url: z.string().url(),
  /** The node's agent token (shown once when minted; stored hashed in Postgres). */
  node_token: z.string().min(16).max(256),
  node_id: z.string().min(1).max(128),
  region: z.string().min(1).max(64),
  zone: z.string().min(1).max(64),
  gpu_model: GpuModel,
  /**
   * The agent's ingress to its endpoint replicas (node-agent/README.md, "Ingress"): the port it
   * listens on and the URL the control plane reaches it by. Absent: no ingress, no endpoint traffic.
   */
  ingress_port: z.coerce.number().int().min(1).max(65_535).optional(),
  ingress_url: IngressUrl.optional(),
});
export type NodeBootConfig = z.infer<typeof NodeBootConfig>;

const MARKER = "# scalar-node-boot v1";
const KEYS: Record<keyof NodeBootConfig, string> = {
  api_url: "SCALAR_API_URL",
  node_token: "SCALAR_NODE_TOKEN",
  node_id: "SCALAR_NODE_ID",
  region: "SCALAR_REGION",
  zone: "SCALAR_ZONE",
  gpu_model: "SCALAR_GPU_MODEL",
  ingress_port: "SCALAR_INGRESS_PORT",
  ingress_url: "SCALAR_INGRESS_URL",
};

/** Values are single-quoted for the shell; our values never contain a quote (checked). */
function quote(value: string): string {
  if (value.includes("'") || value.includes("\n"))
    throw new Error("node boot values may not contain quotes or newlines");
  return `'${value}'`;
}

/** The user-data script (plain text; base64-encode it for `cloud_init_user_data`). */
export function renderNodeBootScript(config: NodeBootConfig): string {
  const c = NodeBootConfig.parse(config);
  const lines = ["#!/bin/sh", MARKER, "set -eu"];
  for (const [field, env] of Object.entries(KEYS) as [keyof NodeBootConfig, string][]) {
    if (c[field] !== undefined) lines.push(`export ${env}=${quote(String(c[field]))}`);
  }
  lines.push(
    "mkdir -p /etc/scalar /var/lib/scalar-agent",
    `printf '%s' "$SCALAR_NODE_TOKEN" > /etc/scalar/node-token && chmod 600 /etc/scalar/node-token`,
    "env | grep '^SCALAR_' | grep -v NODE_TOKEN > /etc/scalar/agent.env",
    "systemctl enable --now scalar-agent",
    "",
  );
  return lines.join("\n");
}

/** Reads the settings back from a user-data script; null when it is not one of ours. */
export function parseNodeBootScript(script: string): NodeBootConfig | null {
  if (!script.includes(MARKER)) return null;
  const values: Record<string, string> = {};
  for (const line of script.split("\n")) {
    const m = /^export (SCALAR_[A-Z_]+)='([^']*)'$/.exec(line.trim());
    if (m) values[m[1] as string] = m[2] as string;
  }
  const raw = Object.fromEntries(Object.entries(KEYS).map(([field, env]) => [field, values[env]]));
  const parsed = NodeBootConfig.safeParse(raw);
  return parsed.success ? parsed.data : null;
}

export function encodeUserData(script: string): string {
  return btoa(script);
}

export function decodeUserData(base64: string): string {
  return atob(base64);
}
