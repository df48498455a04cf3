/** Where the object reads the time. Production uses the wall clock; tests install one they advance. */
export interface Clock {
  now(): number;
}

export const wallClock: Clock = { now: () => Date.now() };
