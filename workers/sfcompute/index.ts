/** SF Compute: the client, its units and errors, and the market monitoring. */
export * from "./client";
export * from "./errors";
export * from "./journal";
export * from "./monitor";
export * from "./retry";
export * from "./schemas";
export * from "./units";
