/**
 * The reconcile plan: compare what should run (the desired placements) with what runs (containers
 * carrying our labels, and the runs the agent is driving), and list the steps: removes, updates
 * and adds. Pure: the agent applies it (the removes' stops begun, the updates at once, the adds
 * once the stops are done, so that a cancel never waits behind a slow stop). The order frees resources only within one
 * reconcile: a placement new to the agent process starts as soon as the long poll brings it, before
 * any reconcile (agent.ts, `launchNew`); an orphan keeps running for the orphan grace; and nothing
 * here checks a new placement's GPUs against containers still running. What guards a node that
 * was lost: heartbeats list every running container of ours in `running`, orphans included, and
 * the control plane takes the node back only once none is outside its runs.
 */
import type { Placement } from "../core/schemas";
import type { ContainerState } from "./docker/engine";

/** A container in this state still holds its resources (GPUs): it runs, or may run again. */
export function holdsResources(state: ContainerState): boolean {
  return state === "running" || state === "restarting" || state === "paused";
}

export interface ActualContainer {
  id: string;
  placementId: string;
  state: ContainerState;
}

export interface PlanInput {
  /** Null until the agent has a desired set (fresh data folder, control plane not reached yet): touch nothing. */
  desired: Placement[] | null;
  containers: ActualContainer[];
  /**
   * Placements the agent is driving, and whether it is already retiring them (a retiring run, or a
   * container being retired without one, stops and removes its container by itself: stops that
   * fail are tried again there).
   */
  runs: ReadonlyMap<string, "active" | "retiring">;
  /** Placements with a state record in the data folder. */
  known: readonly string[];
  /** Placements whose outcome is already reported: never launched again. */
  finished: ReadonlySet<string>;
  /**
   * Of those, the ones reported failed. A container of theirs is a leftover (a create or start the
   * engine answered after the agent gave up on it): never adopted, and retired without the orphan
   * grace once the placement leaves the desired set.
   */
  failed: ReadonlySet<string>;
  /** When each running container without a placement was first seen so (on the clock of `now`). */
  orphanSince: ReadonlyMap<string, number>;
  /** A monotonic reading (`Clock.monotonic`): the grace is a duration, which a wall-clock step must not cut short. */
  now: number;
  orphanGraceMs: number;
}

export type RemoveStep =
  /** Stop (if running) and remove its container once its log is shipped. */
  | { kind: "retire"; placementId: string; containerId: string; why: "finished" | "failed" | "orphan" }
  /** A run with no container yet (pulling) whose placement is gone: stop before creating anything. */
  | { kind: "abandon"; placementId: string };
export type UpdateStep =
  /** A run exists: hand it the placement (cancel, new deadline). */
  | { kind: "update"; placement: Placement }
  /** A container exists but no run (agent restarted): follow it again, start nothing. */
  | { kind: "adopt"; placement: Placement; containerId: string };
export type AddStep = { kind: "launch"; placement: Placement };

export interface Plan {
  removes: RemoveStep[];
  updates: UpdateStep[];
  adds: AddStep[];
  orphanSince: Map<string, number>;
  /** State records of placements nothing refers to any more. */
  forget: string[];
}

export function planReconcile(input: PlanInput): Plan {
  const plan: Plan = { removes: [], updates: [], adds: [], orphanSince: new Map(), forget: [] };
  if (input.desired === null) {
    plan.orphanSince = new Map(input.orphanSince);
    return plan;
  }
  const desired = new Map(input.desired.map((p) => [p.placement_id, p]));
  const containers = new Map<string, ActualContainer>();
  for (const c of input.containers) if (!containers.has(c.placementId)) containers.set(c.placementId, c);
  const ids = new Set([...desired.keys(), ...containers.keys(), ...input.runs.keys(), ...input.known]);

  for (const id of [...ids].sort()) {
    const placement = desired.get(id);
    const container = containers.get(id);
    const run = input.runs.get(id);
    if (!placement) {
      if (run === "retiring") continue;
      // A container still being created or started (listed `created`) is retired like a finished
      // one: its run starts nothing more, and stops it should its start go through.
      if (container && input.failed.has(id)) {
        plan.removes.push({ kind: "retire", placementId: id, containerId: container.id, why: "failed" });
      } else if (container && holdsResources(container.state)) {
        // Running without a placement: maybe a control plane glitch, so wait before killing real work.
        const since = input.orphanSince.get(id) ?? input.now;
        if (input.now - since >= input.orphanGraceMs) {
          plan.removes.push({ kind: "retire", placementId: id, containerId: container.id, why: "orphan" });
        } else {
          plan.orphanSince.set(id, since);
        }
      } else if (container) {
        plan.removes.push({ kind: "retire", placementId: id, containerId: container.id, why: "finished" });
      } else if (run === "active") {
        plan.removes.push({ kind: "abandon", placementId: id });
      } else if (!run) {
        plan.forget.push(id);
      }
      continue;
    }
    if (run === "active") plan.updates.push({ kind: "update", placement });
    else if (run === "retiring") continue;
    // Reported failed: its container is not followed (it would report a start after the failure).
    else if (container && input.failed.has(id)) continue;
    else if (container) plan.updates.push({ kind: "adopt", placement, containerId: container.id });
    else if (!input.finished.has(id)) plan.adds.push({ kind: "launch", placement });
  }
  return plan;
}
