/** The bin-packer: pure and deterministic. See docs/scheduler.md for the pipeline. */
export * from "./backfill";
export * from "./filter";
export * from "./fleet";
export * from "./gpus";
export * from "./model";
export * from "./need";
export * from "./plan";
export * from "./policies";
export * from "./queue";
export * from "./reasons";
export * from "./score";
export * from "./select";
