#!/usr/bin/env node
// `npx scalar-agent` in a clone (the root package.json's bin): runs the agent's TypeScript through
// tsx, registered in this process as tools/bootstrap.mjs does for `npm start`.
import { register } from "tsx/esm/api";

register();
await import("../main.ts");
