/** What the agent routes know of the node whose token they verified. */
export interface AgentNode {
  id: string;
  region: string;
  zone: string;
  gpuModel: string;
  gpuCount: number;
  cpuMilli: number;
  memoryMib: number;
  state: string;
  blockId: string | null;
}
