/** Every command, in the order `scalar --help` lists them. */
import type { CommandSpec } from "../args";
import type { Context } from "../context";
import {
  endpointsCreate,
  endpointsGet,
  endpointsInvoke,
  endpointsLogs,
  endpointsLs,
  endpointsRm,
  endpointsUpdate,
} from "./endpoints";
import { jobsRun } from "./job-run";
import { jobsCancel, jobsGet, jobsLogs, jobsLs } from "./jobs";
import { keysCreate, keysLs, keysRevoke } from "./keys";
import { login, whoami } from "./login";
import { deadLettersLs, deadLettersRedrive, nodesCordon, nodesDrain, nodesLs, nodesUncordon } from "./operator";
import { regions } from "./regions";
import { registriesAdd, registriesLs, registriesRm } from "./registries";
import { invoicesGet, invoicesLs, usage } from "./usage";

export const COMMANDS: CommandSpec<Context>[] = [
  login,
  whoami,
  usage,
  invoicesLs,
  invoicesGet,
  jobsRun,
  jobsLs,
  jobsGet,
  jobsLogs,
  jobsCancel,
  endpointsCreate,
  endpointsLs,
  endpointsGet,
  endpointsUpdate,
  endpointsInvoke,
  endpointsLogs,
  endpointsRm,
  keysCreate,
  keysLs,
  keysRevoke,
  registriesAdd,
  registriesLs,
  registriesRm,
  regions,
  nodesLs,
  nodesDrain,
  nodesCordon,
  nodesUncordon,
  deadLettersLs,
  deadLettersRedrive,
];
