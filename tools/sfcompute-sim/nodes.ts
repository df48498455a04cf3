/**
 * The v1 Nodes API (reference §4.3, §5.4, §10, §15.8). A node is one 8-GPU machine running one VM,
 * backed by a one-node contract (`is_node: true`) bought on the same market as v0 orders.
 *
 * Everything a node does follows from its contract's coverage: while the contract covers now the
 * node has a VM (Pending, then Running after the boot delay) and reports `running` once the start
 * delay has passed; when coverage ends a reserved node is `terminated` and an auto-reserved one
 * `awaitingcapacity` until its procurement buys the next hour. So extensions, resales and expiry
 * need no special cases: they change the shape, and the node reconciles against it.
 */
import type { Account } from "./accounts";
import type { ZoneSpec } from "./catalog";
import { ceilTo, HOUR_MS } from "./clock";
import { invalid, notFound, SimError } from "./errors";
import type { Kernel } from "./kernel";
import type { ContractRecord, Market } from "./market";
import { nextCoverage, quantityAt, shapeEnd } from "./shape";

export type NodeStatus =
  | "pending"
  | "awaitingcapacity"
  | "running"
  | "released"
  | "terminated"
  | "deleted"
  | "failed"
  | "unknown";
export type VmStatus = "Pending" | "Running" | "Destroyed" | "NodeFailure" | "Unspecified";
export type NodeType = "autoreserved" | "reserved";

export interface VmRecord {
  id: string;
  nodeId: string;
  status: VmStatus;
  createdAt: number;
  updatedAt: number;
  startAt: number | null;
  endAt: number | null;
  imageId: string | null;
  zone: string;
  keysUpdatedAt: number | null;
  hostKeySeed: string;
}

export interface NodeRecord {
  id: string;
  name: string;
  accountId: string;
  zone: string | null;
  gpuType: "H100" | "H200";
  nodeType: NodeType;
  status: NodeStatus;
  createdAt: number;
  updatedAt: number;
  startAt: number;
  /** Requested end (reserved); the contract's end once bought. */
  endAt: number | null;
  deletedAt: number | null;
  maxPricePerNodeHour: number;
  procurementId: string | null;
  contractId: string | null;
  vms: VmRecord[];
  imageId: string | null;
  cloudInitUserData: string | null;
}

/** `POST /v1/nodes` after JSON parsing; times in epoch seconds as on the wire. */
export interface CreateNodesInput {
  desired_count: number;
  max_price_per_node_hour: number;
  zone?: string;
  any_zone?: boolean;
  start_at?: number;
  end_at?: number | null;
  node_type?: NodeType | null;
  names?: string[];
  cloud_init_user_data?: string;
  image_id?: string;
}

const GONE: ReadonlySet<NodeStatus> = new Set(["released", "terminated", "deleted", "failed"]);
const isActiveVm = (vm: VmRecord) => vm.status === "Pending" || vm.status === "Running";

export class NodeFleet {
  readonly nodes = new Map<string, NodeRecord>();
  /** The next reconcile already scheduled per node, so repeated reconciles add no duplicate timers. */
  private readonly wakeAt = new Map<string, number>();

  constructor(
    private readonly k: Kernel,
    private readonly market: Market,
    private readonly accountOf: (id: string) => Account,
  ) {
    market.onContractChanged = (contract) => {
      for (const node of this.nodes.values()) if (node.contractId === contract.id) this.reconcile(node);
    };
  }

  private get settings() {
    return this.k.settings.nodes;
  }

  private vmZones(): ZoneSpec[] {
    return this.k.settings.catalog.zones.filter((z) => z.delivery_type === "VM");
  }

  create(account: Account, input: CreateNodesInput): NodeRecord[] {
    if (account.frozen) throw new SimError(403, "forbidden", "Account is frozen", "account.frozen");
    const count = input.desired_count;
    if (!Number.isInteger(count) || count < 1 || count > this.k.settings.market.maxQuantity) {
      throw invalid(
        `desired_count must be an integer between 1 and ${this.k.settings.market.maxQuantity}`,
        "desired_count",
      );
    }
    const maxPrice = input.max_price_per_node_hour;
    if (!Number.isInteger(maxPrice) || maxPrice < 0) {
      throw invalid(
        "max_price_per_node_hour must be a non-negative integer (cents per node-hour)",
        "max_price_per_node_hour",
      );
    }
    const hasEnd = input.end_at !== undefined && input.end_at !== null;
    const nodeType: NodeType = input.node_type ?? (hasEnd ? "reserved" : "autoreserved");
    if (nodeType === "reserved" && !hasEnd) throw invalid("end_at is required for reserved nodes", "end_at");
    if (nodeType === "autoreserved" && hasEnd) throw invalid("end_at is not allowed for auto-reserved nodes", "end_at");

    let zone: ZoneSpec | null = null;
    if (input.zone !== undefined) {
      zone = this.k.catalog.zones.get(input.zone) ?? null;
      if (!zone) throw invalid(`Unknown zone: ${input.zone}`, "zone", "zone.not_found");
      if (zone.delivery_type !== "VM") throw invalid(`Zone ${zone.name} does not deliver VMs`, "zone");
    } else if (nodeType === "autoreserved" && !input.any_zone) {
      throw invalid("zone is required for auto-reserved nodes unless any_zone is true", "zone");
    }

    const { start } = this.market.resolveStart(
      input.start_at === undefined ? "NOW" : checkEpochSeconds(input.start_at, "start_at") * 1000,
    );
    let end: number | null = null;
    if (hasEnd) {
      end = checkEpochSeconds(input.end_at as number, "end_at") * 1000;
      this.market.checkEnd(start, end);
    }

    const names = this.checkNames(account, input.names, count);
    if (input.cloud_init_user_data !== undefined && !/^[A-Za-z0-9+/]*={0,2}$/.test(input.cloud_init_user_data)) {
      throw invalid("cloud_init_user_data must be base64", "cloud_init_user_data");
    }

    // The purchase happens after the 201; the most it can cost must be there now (402 otherwise).
    const firstEnd = end ?? ceilTo(start + 1, HOUR_MS) + HOUR_MS;
    const ceiling = Math.ceil((maxPrice * count * (firstEnd - start)) / HOUR_MS);
    if (account.availableCents < ceiling) {
      throw new SimError(402, "payment_required", "Insufficient balance", "balance.insufficient");
    }

    const now = this.k.now();
    const gpuType = zone?.hardware_type ?? "H100";
    const procurementId = nodeType === "autoreserved" ? this.k.id("proc_") : null;
    const created: NodeRecord[] = [];
    for (let i = 0; i < count; i++) {
      const id = this.k.id("n_");
      const node: NodeRecord = {
        id,
        name: names?.[i] ?? id,
        accountId: account.id,
        zone: zone?.name ?? null,
        gpuType,
        nodeType,
        status: "pending",
        createdAt: now,
        updatedAt: now,
        startAt: start,
        endAt: end,
        deletedAt: null,
        maxPricePerNodeHour: maxPrice,
        procurementId,
        contractId: null,
        vms: [],
        imageId: input.image_id ?? null,
        cloudInitUserData: input.cloud_init_user_data ?? null,
      };
      this.nodes.set(id, node);
      created.push(node);
      this.k.events.emit(now, "node.status", {
        node_id: id,
        name: node.name,
        status: "pending",
        previous_status: null,
      });
    }
    this.k.at(now + this.k.delay(this.k.settings.market.matchDelayMs), `buy nodes ${created[0]!.id}`, () =>
      this.purchase(account, created, zone, start, firstEnd),
    );
    return created;
  }

  private checkNames(account: Account, names: string[] | undefined, count: number): string[] | undefined {
    if (names === undefined) return undefined;
    if (!Array.isArray(names) || names.length !== count) {
      throw invalid("names must list one name per node (desired_count)", "names");
    }
    const seen = new Set<string>();
    for (const name of names) {
      if (typeof name !== "string" || name.length === 0 || name.length > this.settings.nameMaxLength) {
        throw invalid(`Node names must be 1 to ${this.settings.nameMaxLength} characters`, "names");
      }
      if (name.startsWith("vm_") || name.startsWith("n_")) {
        throw invalid(`Node names cannot begin with 'vm_' or 'n_': ${name}`, "names");
      }
      if (/^\d+$/.test(name)) throw invalid(`Node names cannot be numeric: ${name}`, "names");
      if (seen.has(name)) throw invalid(`Duplicate node name: ${name}`, "names");
      seen.add(name);
      if (this.settings.uniqueNames && this.byName(account, name)) {
        throw new SimError(409, "conflict", `A node named ${name} already exists`, "node.name_taken", "names");
      }
    }
    return names;
  }

  private purchase(account: Account, nodes: NodeRecord[], zone: ZoneSpec | null, start: number, end: number): void {
    const live = nodes.filter((n) => n.status === "pending");
    if (live.length === 0) return;
    const first = live[0]!;
    const zones = zone ? [zone] : this.vmZones();
    const bought = this.buy(account, zones, start, end, live.length, first.maxPricePerNodeHour, first.procurementId);
    if (!bought) {
      for (const node of live) this.setStatus(node, first.nodeType === "autoreserved" ? "awaitingcapacity" : "failed");
      return;
    }
    live.forEach((node, i) => {
      node.contractId = bought[i]!.id;
      node.zone = bought[i]!.zone;
      node.gpuType = this.k.catalog.zones.get(node.zone)!.hardware_type;
      if (node.nodeType === "reserved") node.endAt = end;
      this.reconcile(node);
    });
  }

  /** Buys `count` one-node contracts over [start, end) at no more than `maxPerNodeHour`, or returns null. */
  private buy(
    account: Account,
    zones: ZoneSpec[],
    start: number,
    end: number,
    count: number,
    maxPerNodeHour: number,
    procurementId: string | null,
  ): ContractRecord[] | null {
    const priced = this.market.cheapestBuy(zones, start, end, count);
    if (!priced || priced.total > Math.floor((maxPerNodeHour * count * (end - start)) / HOUR_MS + 1e-9)) return null;
    if (account.availableCents < priced.total) return null;
    account.charge(this.k.now(), priced.total, `nodes:${start}`);
    const share = Math.floor(priced.total / count);
    return Array.from({ length: count }, (_, i) =>
      this.market.createContract(
        account,
        { ...priced, quantity: 1, total: i === 0 ? priced.total - share * (count - 1) : share },
        { isNode: true, procurementId },
      ),
    );
  }

  /** Brings a node's VM and status in line with its contract's coverage now, and wakes at its next change. */
  reconcile(node: NodeRecord): void {
    if (GONE.has(node.status)) return;
    const now = this.k.now();
    const contract = node.contractId ? this.market.contracts.get(node.contractId) : undefined;
    if (!contract) return; // the purchase is still to come
    const covered = quantityAt(contract.shape, now) > 0;
    const vm = node.vms.find(isActiveVm);
    if (covered && !vm) this.bootVm(node);
    if (!covered) {
      if (vm) this.setVmStatus(vm, "Destroyed");
      const upcoming = nextCoverage(contract.shape, now);
      if (node.nodeType === "autoreserved") {
        if (node.status !== "pending" || !upcoming) this.setStatus(node, "awaitingcapacity");
      } else {
        this.setStatus(node, upcoming ? "pending" : "terminated");
      }
    }
    if (node.nodeType === "reserved") node.endAt = shapeEnd(contract.shape);
    const next = contract.shape.find((b) => b.t > now);
    if (next && this.wakeAt.get(node.id) !== next.t) {
      this.wakeAt.set(node.id, next.t);
      this.k.at(next.t, `reconcile ${node.id}`, () => this.reconcile(node));
    }
  }

  private bootVm(node: NodeRecord): VmRecord {
    const now = this.k.now();
    const vm: VmRecord = {
      id: this.k.id("vm_"),
      nodeId: node.id,
      status: "Pending",
      createdAt: now,
      updatedAt: now,
      startAt: now,
      endAt: null,
      imageId: node.imageId,
      zone: node.zone ?? "",
      keysUpdatedAt: null,
      hostKeySeed: this.k.id("key_"),
    };
    node.vms.push(vm);
    node.updatedAt = now;
    this.k.events.emit(now, "vm.status", { node_id: node.id, vm_id: vm.id, status: "Pending", previous_status: null });
    const boot = this.k.delay(this.settings.bootDelayMs);
    this.k.at(now + Math.min(this.settings.nodeStartDelayMs, boot), `node running ${node.id}`, () => {
      if (vm.status === "Pending" || vm.status === "Running") this.setStatus(node, "running");
    });
    this.k.at(now + boot, `boot ${vm.id}`, () => {
      if (vm.status !== "Pending") return;
      vm.keysUpdatedAt = this.k.now();
      this.setVmStatus(vm, "Running");
    });
    return vm;
  }

  private setStatus(node: NodeRecord, status: NodeStatus): void {
    if (node.status === status) return;
    const previous = node.status;
    node.status = status;
    node.updatedAt = this.k.now();
    this.k.events.emit(this.k.now(), "node.status", {
      node_id: node.id,
      name: node.name,
      status,
      previous_status: previous,
    });
  }

  private setVmStatus(vm: VmRecord, status: VmStatus): void {
    if (vm.status === status) return;
    const previous = vm.status;
    vm.status = status;
    vm.updatedAt = this.k.now();
    if (status === "Destroyed") vm.endAt = this.k.now();
    this.k.events.emit(this.k.now(), "vm.status", {
      node_id: vm.nodeId,
      vm_id: vm.id,
      status,
      previous_status: previous,
    });
  }

  /** Each hour, auto-reserved nodes buy the current and the next hour if they lack them (a procurement). */
  onHour(hour: number): void {
    for (const node of this.nodes.values()) {
      if (node.nodeType !== "autoreserved" || GONE.has(node.status)) continue;
      const account = this.accountOf(node.accountId);
      for (const slot of [hour, hour + HOUR_MS]) {
        const contract = node.contractId ? this.market.contracts.get(node.contractId) : undefined;
        if (contract && quantityAt(contract.shape, slot) > 0) continue;
        const zones = node.zone ? [this.k.catalog.zones.get(node.zone)!] : this.vmZones();
        if (contract) {
          const priced = this.market.priceBuy(zones[0]!, slot, slot + HOUR_MS, 1);
          if (!priced || priced.total > node.maxPricePerNodeHour || account.availableCents < priced.total) break;
          account.charge(this.k.now(), priced.total, `renew:${node.id}`);
          this.market.growContract(contract, slot, slot + HOUR_MS, 1);
        } else {
          const bought = this.buy(
            account,
            zones,
            slot,
            slot + HOUR_MS,
            1,
            node.maxPricePerNodeHour,
            node.procurementId,
          );
          if (!bought) break;
          node.contractId = bought[0]!.id;
          node.zone = bought[0]!.zone;
          node.gpuType = this.k.catalog.zones.get(node.zone)!.hardware_type;
        }
      }
      this.reconcile(node);
    }
  }

  // ---- lookups and the other endpoints ----

  private byName(account: Account, name: string): NodeRecord | undefined {
    let found: NodeRecord | undefined;
    for (const node of this.nodes.values()) {
      if (node.accountId === account.id && node.name === name && node.status !== "deleted") found = node;
    }
    return found;
  }

  get(account: Account, idOrName: string): NodeRecord {
    const byId = this.nodes.get(idOrName);
    const node = byId && byId.accountId === account.id ? byId : this.byName(account, idOrName);
    if (!node) throw notFound(`Node not found: ${idOrName}`, "node.not_found");
    return node;
  }

  list(account: Account, filter: { ids?: string[]; names?: string[]; type?: NodeType }): NodeRecord[] {
    return [...this.nodes.values()].filter(
      (n) =>
        n.accountId === account.id &&
        (!filter.ids || filter.ids.includes(n.id)) &&
        (!filter.names || filter.names.includes(n.name)) &&
        (!filter.type || n.nodeType === filter.type),
    );
  }

  extend(
    account: Account,
    idOrName: string,
    input: { duration_seconds: number; max_price_per_node_hour: number },
  ): NodeRecord {
    const node = this.get(account, idOrName);
    const d = input.duration_seconds;
    if (!Number.isInteger(d) || d < 3600 || d % 3600 !== 0) {
      throw invalid("duration_seconds must be at least 3600 and a multiple of 3600", "duration_seconds");
    }
    const max = input.max_price_per_node_hour;
    if (!Number.isInteger(max) || max < 0) {
      throw invalid(
        "max_price_per_node_hour must be a non-negative integer (cents per node-hour)",
        "max_price_per_node_hour",
      );
    }
    if (node.nodeType !== "reserved") throw invalid("Only reserved nodes can be extended", "node_type");
    if (GONE.has(node.status)) throw invalid(`Node cannot be extended: it is ${node.status}`, "status");
    const contract = node.contractId ? this.market.contracts.get(node.contractId) : undefined;
    if (!contract) throw invalid("Node cannot be extended before its purchase completes", "status");
    const start = shapeEnd(contract.shape)!;
    const end = start + d * 1000;
    const zone = this.k.catalog.zones.get(contract.zone)!;
    const priced = this.market.priceBuy(zone, start, end, 1);
    if (!priced)
      throw new SimError(422, "unprocessable_entity", "Extension failed due to capacity", "node.extend_capacity");
    if (priced.total > max * (d / 3600)) {
      throw new SimError(
        422,
        "unprocessable_entity",
        "Extension failed: the market price is above max_price_per_node_hour",
        "node.extend_price",
      );
    }
    if (account.availableCents < priced.total) {
      throw new SimError(402, "payment_required", "Insufficient balance", "balance.insufficient");
    }
    account.charge(this.k.now(), priced.total, `extend:${node.id}`);
    this.market.growContract(contract, start, end, 1);
    node.updatedAt = this.k.now();
    return node;
  }

  release(account: Account, idOrName: string): NodeRecord {
    const node = this.get(account, idOrName);
    if (node.nodeType !== "autoreserved") throw invalid("Only auto-reserved nodes can be released", "node_type");
    if (GONE.has(node.status)) throw invalid(`Node already ${node.status}`, "status");
    for (const vm of node.vms) if (isActiveVm(vm)) this.setVmStatus(vm, "Destroyed");
    this.setStatus(node, "released");
    return node;
  }

  delete(account: Account, idOrName: string): void {
    const node = this.get(account, idOrName);
    if (node.vms.some(isActiveVm)) {
      const status = this.settings.deleteWithActiveVmStatus;
      throw new SimError(
        status,
        status === 409 ? "conflict" : "invalid_request_error",
        "The node cannot be deleted if it has active or pending VMs",
        "node.has_active_vms",
      );
    }
    node.deletedAt = this.k.now();
    this.setStatus(node, "deleted");
  }

  redeploy(
    account: Account,
    idOrName: string,
    input: { image_id?: string; cloud_init_user_data?: string; override_empty?: boolean },
  ): NodeRecord {
    const node = this.get(account, idOrName);
    const vm = node.vms.find(isActiveVm);
    if (!vm || GONE.has(node.status)) throw invalid("Node has no VM to redeploy", "status");
    const inherit = !input.override_empty;
    node.imageId = input.image_id ?? (inherit ? node.imageId : null);
    node.cloudInitUserData = input.cloud_init_user_data ?? (inherit ? node.cloudInitUserData : null);
    this.setVmStatus(vm, "Destroyed");
    this.bootVm(node);
    return node;
  }

  vm(account: Account, vmId: string): { node: NodeRecord; vm: VmRecord } {
    for (const node of this.nodes.values()) {
      if (node.accountId !== account.id) continue;
      const vm = node.vms.find((v) => v.id === vmId);
      if (vm) return { node, vm };
    }
    throw notFound(`VM not found: ${vmId}`, "vm.not_found");
  }
}

function checkEpochSeconds(value: number, field: string): number {
  if (!Number.isInteger(value) || value < 0) throw invalid(`${field} must be a Unix timestamp in seconds`, field);
  // Milliseconds sent by mistake would be a date tens of thousands of years away.
  if (value > 1e11) throw invalid(`${field} must be a Unix timestamp in seconds, not milliseconds`, field);
  return value;
}
