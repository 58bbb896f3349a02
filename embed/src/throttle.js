// Throttle levels (what "low", "medium" and "high" mean in workers and CPU share) and the duty
// cycle arithmetic that enforces them. Pure: the runner feeds it measured busy times and sleeps
// for the rests it returns.

export const LEVELS = Object.freeze(["low", "medium", "high"]);
export const DEFAULT_LEVEL = "low";

const SHARES = Object.freeze({ low: 0.25, medium: 0.5, high: 1 });

// How the browser works at `level` on a machine with `cores` logical cores.
//  - workers: Web Workers computing at once. "high" may use every core but one (the page keeps
//    one for itself); low uses one.
//  - duty: fraction of wall time each worker may compute; the rest it sleeps.
//  - depth: tasks handed to one worker at once. At full duty the next task already waits inside
//    the worker, so no message round trip separates two tasks; when throttled the worker must be
//    idle between tasks anyway, so one at a time keeps the rests exact.
//  - slots: tasks the browser asks the server to hold for it (the `hello` frame): what the workers
//    hold plus one more each waiting in the runner, so the next task is always already here.
export function plan(level, cores) {
  if (!LEVELS.includes(level)) level = DEFAULT_LEVEL;
  const spare = Number.isInteger(cores) && cores > 1 ? cores - 1 : 1;
  const workers = level === "high" ? spare : level === "medium" ? Math.max(1, Math.floor(spare / 2)) : 1;
  const duty = SHARES[level];
  const depth = duty >= 1 ? 2 : 1;
  return { level, workers, duty, depth, slots: Math.min(256, workers * (depth + 1)) };
}

// Keeps one worker's compute time at `duty` of wall time: after each task, `rest(busyMs)` says how
// long to sleep before the next. Short rests accumulate until they reach `quantum` ms, so tiny
// tasks do not each pay a timer (whose real delay is a few ms at best); the average still holds.
export class DutyCycle {
  constructor(duty, quantum = 50) {
    this.duty = Math.min(1, Math.max(0.01, Number(duty) || 1));
    this.quantum = quantum;
    this.debt = 0;
  }

  rest(busyMs) {
    if (this.duty >= 1 || !(busyMs > 0)) return 0;
    this.debt += (busyMs * (1 - this.duty)) / this.duty;
    if (this.debt < this.quantum) return 0;
    const rest = this.debt;
    this.debt = 0;
    return rest;
  }
}
