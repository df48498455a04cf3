export * from "./agent";
export * from "./common";
export * from "./job";
