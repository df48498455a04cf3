/**
 * When the agent asks the registry for an image before starting a container. `always`: on every
 * start (notices a tag pushed again, costs a registry round trip per job). `if-not-present`: only
 * when the engine has no image under that reference. `auto` (the default), as Kubernetes decides
 * for a container without an explicit policy: a digest or a tag other than `latest` is taken as
 * fixed (pulled only when missing); `:latest` or no tag at all is pulled every time.
 */
export const PULL_POLICIES = ["always", "if-not-present", "auto"] as const;
export type PullPolicy = (typeof PULL_POLICIES)[number];

/** The tag of an image reference (null when it has none) and whether it is pinned by digest. */
export function referenceParts(ref: string): { tag: string | null; digest: boolean } {
  const at = ref.indexOf("@");
  const digest = at >= 0;
  const name = digest ? ref.slice(0, at) : ref;
  // A colon before the last slash belongs to the registry's host:port, not to a tag.
  const last = name.slice(name.lastIndexOf("/") + 1);
  const colon = last.lastIndexOf(":");
  return { tag: colon >= 0 ? last.slice(colon + 1) : null, digest };
}

/**
 * The policy for one reference: `always` (pull before every start) or `if-not-present` (pull only
 * when the engine does not have it).
 */
export function effectivePolicy(ref: string, policy: PullPolicy): "always" | "if-not-present" {
  if (policy !== "auto") return policy;
  const { tag, digest } = referenceParts(ref);
  if (digest) return "if-not-present";
  return tag === null || tag === "latest" ? "always" : "if-not-present";
}
