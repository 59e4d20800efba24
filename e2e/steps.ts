// What every e2e suite shares: ordered steps, and a runner for the compiled binary placed in the lab.
import { test } from "bun:test";
import { sh, type Out } from "./harness.ts";

/** Ordered steps: after a failure, the later steps fail at once, naming the step that broke. */
export function orderedSteps(): { step: (name: string, fn: () => Promise<void>, timeoutMs?: number) => void; state: { failed: string | null } } {
  const state = { failed: null as string | null };
  const step = (name: string, fn: () => Promise<void>, timeoutMs = 30 * 60_000) =>
    test(name, async () => {
      if (state.failed) throw new Error(`not run: step "${state.failed}" failed`);
      try {
        await fn();
      } catch (e) {
        state.failed = name;
        throw e;
      }
    }, timeoutMs);
  return { step, state };
}

export interface RunOpts { timeoutMs?: number; live?: boolean }

/** `run` never throws on a non-zero exit; `ok` throws with the last lines of the command's output. */
export function binaryRunner(argvFor: (args: string[]) => string[]): { run: (args: string[], o?: RunOpts) => Promise<Out>; ok: (args: string[], o?: RunOpts) => Promise<Out> } {
  const run = (args: string[], o: RunOpts = {}) => sh(argvFor(args), { timeoutMs: o.timeoutMs ?? 10 * 60_000, live: o.live });
  const ok = async (args: string[], o: RunOpts = {}) => {
    const r = await run(args, o);
    if (r.code !== 0) throw new Error(`aivm ${args.join(" ")} exited ${r.code}:\n${(r.stderr || r.stdout).trim().split("\n").slice(-10).join("\n")}`);
    return r;
  };
  return { run, ok };
}
