/**
 * What the simulated market sells: zones (names as in the reference §3) and the instance types
 * ("tickers") they deliver. Each zone serves exactly one ticker; capacities are the zone's whole
 * fleet in nodes of 8 GPUs, of which a seeded background demand uses a part.
 */
export type Region = "NorthAmerica" | "AsiaPacific" | "EuropeMiddleEastAfrica";
export type HardwareType = "H100" | "H200";

export interface ZoneSpec {
  name: string;
  display_name: string;
  region: Region;
  hardware_type: HardwareType;
  interconnect_type: "Infiniband" | "None";
  delivery_type: "K8s" | "VM";
  /** The v0 ticker this zone's capacity is sold under. */
  instance_type: string;
  /** Nodes in the zone. */
  capacity_nodes: number;
}

export interface InstanceTypeSpec {
  ticker: string;
  hardware_type: HardwareType;
  /** Price level for 1 node × 24 h at a neutral market, cents per GPU-hour (reference §13.1 anchors). */
  base_cents_per_gpu_hour: number;
}

export interface Catalog {
  zones: ZoneSpec[];
  instanceTypes: InstanceTypeSpec[];
}

export const DEFAULT_CATALOG: Catalog = {
  instanceTypes: [
    // "$2.05 per GPU hour" for a 1-day 8-GPU block (sf buy -d 1d --quote).
    { ticker: "h100v", hardware_type: "H100", base_cents_per_gpu_hour: 205 },
    { ticker: "h100i", hardware_type: "H100", base_cents_per_gpu_hour: 215 },
    { ticker: "h200ki", hardware_type: "H200", base_cents_per_gpu_hour: 275 },
  ],
  zones: [
    {
      name: "hayesvalley",
      display_name: "Hayes Valley",
      region: "NorthAmerica",
      hardware_type: "H100",
      interconnect_type: "Infiniband",
      delivery_type: "VM",
      instance_type: "h100v",
      capacity_nodes: 128,
    },
    {
      name: "fishermanswharf",
      display_name: "Fisherman's Wharf",
      region: "NorthAmerica",
      hardware_type: "H100",
      interconnect_type: "None",
      delivery_type: "VM",
      instance_type: "h100v",
      capacity_nodes: 64,
    },
    {
      name: "marina",
      display_name: "Marina",
      region: "NorthAmerica",
      hardware_type: "H100",
      interconnect_type: "Infiniband",
      delivery_type: "K8s",
      instance_type: "h100i",
      capacity_nodes: 64,
    },
    {
      name: "richmond",
      display_name: "Richmond",
      region: "NorthAmerica",
      hardware_type: "H200",
      interconnect_type: "Infiniband",
      delivery_type: "K8s",
      instance_type: "h200ki",
      capacity_nodes: 48,
    },
  ],
};

export class CatalogIndex {
  readonly zones: Map<string, ZoneSpec>;
  readonly instanceTypes: Map<string, InstanceTypeSpec>;

  constructor(readonly catalog: Catalog) {
    this.zones = new Map(catalog.zones.map((z) => [z.name, z]));
    this.instanceTypes = new Map(catalog.instanceTypes.map((t) => [t.ticker, t]));
    for (const zone of catalog.zones) {
      if (!this.instanceTypes.has(zone.instance_type)) {
        throw new Error(`zone ${zone.name} sells unknown instance type ${zone.instance_type}`);
      }
    }
  }

  zonesFor(ticker: string): ZoneSpec[] {
    return this.catalog.zones.filter((z) => z.instance_type === ticker);
  }

  instanceTypeOf(zone: ZoneSpec): InstanceTypeSpec {
    return this.instanceTypes.get(zone.instance_type)!;
  }
}
