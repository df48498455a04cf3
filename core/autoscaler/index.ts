export * from "./demand";
export * from "./market-time";
export * from "./policy";
export * from "./types";
