#!/usr/bin/env node
// `npx scalar` in a clone (the root package.json's bin): runs the CLI's TypeScript through tsx,
// registered in this process as node-agent/bin/scalar-agent.mjs does.
import { register } from "tsx/esm/api";

register();
const { main } = await import("../main.ts");
await main();
