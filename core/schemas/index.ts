export * from "./agent";
export * from "./common";
export * from "./job";
export * from "./node-boot";
export * from "./registry";
