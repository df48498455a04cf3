import { describe, expect, it } from "vitest";
import { Placement } from "../core/schemas";
import { type PlanInput, planReconcile } from "./reconcile";

const placement = (id: string, over: Partial<Placement> = {}): Placement =>
  Placement.parse({
    placement_id: id,
    job_id: `j-${id}`,
    attempt: 1,
    image: "127.0.0.1:5000/test/busybox:1",
    gpu_indices: [0],
    cpu_milli: 1000,
    memory_mib: 256,
    kill_deadline: null,
    desired: "running",
    ...over,
  });

const input = (over: Partial<PlanInput>): PlanInput => ({
  desired: [],
  containers: [],
  runs: new Map(),
  known: [],
  finished: new Set(),
  failed: new Set(),
  orphanSince: new Map(),
  now: 100_000,
  orphanGraceMs: 60_000,
  ...over,
});

describe("reconcile plan", () => {
  it("touches nothing before the agent knows a desired set", () => {
    const plan = planReconcile(
      input({ desired: null, containers: [{ id: "c1", placementId: "a", state: "running" }], known: ["a"] }),
    );
    expect(plan).toMatchObject({ removes: [], updates: [], adds: [], forget: [] });
  });

  it("adds desired placements that have neither a run nor a container, unless already finished", () => {
    const plan = planReconcile(input({ desired: [placement("a"), placement("b")], finished: new Set(["b"]) }));
    expect(plan.adds).toEqual([{ kind: "launch", placement: placement("a") }]);
  });

  it("updates placements it is running and adopts containers it is not following yet", () => {
    const plan = planReconcile(
      input({
        desired: [placement("a", { desired: "stopped" }), placement("b")],
        runs: new Map([["a", "active"]]),
        containers: [
          { id: "c-a", placementId: "a", state: "running" },
          { id: "c-b", placementId: "b", state: "running" },
        ],
      }),
    );
    expect(plan.updates).toEqual([
      { kind: "update", placement: placement("a", { desired: "stopped" }) },
      { kind: "adopt", placement: placement("b"), containerId: "c-b" },
    ]);
    expect(plan.adds).toEqual([]);
  });

  it("retires finished containers whose placement left, at once", () => {
    const plan = planReconcile(
      input({
        containers: [
          { id: "c1", placementId: "gone", state: "exited" },
          { id: "c2", placementId: "never-started", state: "created" },
        ],
        runs: new Map([["gone", "active"]]),
      }),
    );
    expect(plan.removes).toEqual([
      { kind: "retire", placementId: "gone", containerId: "c1", why: "finished" },
      { kind: "retire", placementId: "never-started", containerId: "c2", why: "finished" },
    ]);
  });

  it("waits out the grace period before retiring a running container without a placement", () => {
    const containers = [{ id: "c1", placementId: "orphan", state: "running" as const }];
    const first = planReconcile(input({ containers, now: 100_000 }));
    expect(first.removes).toEqual([]);
    expect(first.orphanSince.get("orphan")).toBe(100_000);
    // 59 999 ms later: still within the 60 000 ms grace
    const later = planReconcile(input({ containers, orphanSince: first.orphanSince, now: 159_999 }));
    expect(later.removes).toEqual([]);
    const due = planReconcile(input({ containers, orphanSince: later.orphanSince, now: 160_000 }));
    expect(due.removes).toEqual([{ kind: "retire", placementId: "orphan", containerId: "c1", why: "orphan" }]);
    // The placement comes back within the grace: no longer an orphan.
    const back = planReconcile(input({ desired: [placement("orphan")], containers, orphanSince: first.orphanSince }));
    expect(back.orphanSince.size).toBe(0);
    expect(back.updates).toEqual([{ kind: "adopt", placement: placement("orphan"), containerId: "c1" }]);
  });

  it("abandons a run that has no container yet when its placement leaves, and forgets records nothing uses", () => {
    const plan = planReconcile(input({ runs: new Map([["pulling", "active"]]), known: ["pulling", "old"] }));
    expect(plan.removes).toEqual([{ kind: "abandon", placementId: "pulling" }]);
    expect(plan.forget).toEqual(["old"]);
  });

  it("never adopts the container of a placement reported failed, and retires it at once when the placement leaves", () => {
    // A start the engine answered after the agent had given up on it (engine timeout): running, unsupervised.
    const containers = [{ id: "c-late", placementId: "late", state: "running" as const }];
    const failed = { known: ["late"], finished: new Set(["late"]), failed: new Set(["late"]) };
    const desired = planReconcile(input({ desired: [placement("late")], containers, ...failed }));
    expect(desired).toMatchObject({ removes: [], updates: [], adds: [] });
    const gone = planReconcile(input({ containers, ...failed }));
    expect(gone.removes).toEqual([{ kind: "retire", placementId: "late", containerId: "c-late", why: "failed" }]);
    expect(gone.orphanSince.size).toBe(0);
  });

  it("leaves placements being retired alone", () => {
    const plan = planReconcile(
      input({
        desired: [placement("a")],
        runs: new Map([
          ["a", "retiring"],
          ["b", "retiring"],
        ]),
        containers: [{ id: "c-b", placementId: "b", state: "running" }],
      }),
    );
    expect(plan).toMatchObject({ removes: [], updates: [], adds: [], forget: [] });
  });
});
