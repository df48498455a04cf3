// No imports: the Worker's body limit reads it before @hono/zod-openapi has extended zod, and
// loading the schemas (plain zod) that early would leave them without `.openapi`.
/**
 * The largest request body (bytes, as sent) the control plane takes on its `/v1/*` routes, the agent
 * routes included (all but an endpoint's invoke route); a larger one is refused with 413
 * `payload_too_large`. The Worker enforces it (workers/http/body.ts) and the agent sizes its batches
 * under it (node-agent/control-plane.ts AGENT_BATCH_BYTES).
 */
export const MAX_REQUEST_BODY_BYTES = 256 * 1024;
