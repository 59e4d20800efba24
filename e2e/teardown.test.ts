// A real-VM run tears its lab down on every exit: SIGTERM (a CI timeout), SIGINT (Ctrl-C) and SIGHUP tear it down
// at once; what a SIGKILLed run leaves is reaped by the next run's start.
import { afterAll, describe, expect, test } from "bun:test";
import { mkdtempSync, existsSync, readdirSync, rmSync } from "node:fs";
import { join } from "node:path";
import { alive, BUN, LABS_DIR, nsPids, preflight, priv, reapStaleLabs, ROOT, sh, systemLibvirtdAnswers } from "./harness.ts";

const enabled = process.env.AIVM_E2E === "1";
const missing = enabled ? preflight() : [];
const canRun = enabled && missing.length === 0 && !(await systemLibvirtdAnswers());
if (enabled && !canRun) {
  if (process.env.CI === "true") test("e2e teardown preflight", () => { throw new Error(`e2e teardown: cannot run here: ${missing.join(", ") || "a system libvirtd is running"} (CI=true: the suite may not skip)`); });
  else console.error(`e2e teardown: skipped: ${missing.join(", ") || "a system libvirtd is running"}`);
}

const runDir = canRun ? mkdtempSync("/var/tmp/aivm-e2e-teardown-") : "";
afterAll(() => { if (runDir) rmSync(runDir, { recursive: true, force: true }); });

async function startChild(tag: string): Promise<{ p: ReturnType<typeof Bun.spawn>; ns: string }> {
  const p = Bun.spawn([BUN, join(ROOT, "e2e/lab-child.ts"), runDir, tag], { stdout: "pipe", stderr: "inherit" });
  const reader = (p.stdout as ReadableStream<Uint8Array>).getReader();
  const { value } = await reader.read();
  const m = /ready (\S+)/.exec(new TextDecoder().decode(value));
  if (!m) throw new Error("the lab child did not start");
  return { p, ns: m[1]! };
}

const netnsExists = async (ns: string) => (await sh(priv(["ip", "netns", "list"]))).stdout.split("\n").some((l) => l.split(" ")[0] === ns);

describe.if(canRun)("e2e lab teardown", () => {
  for (const sig of ["SIGTERM", "SIGINT", "SIGHUP"] as const) {
    test(`${sig}: the lab's daemons and namespaces are gone when the run exits`, async () => {
      const { p, ns } = await startChild(`td${sig.slice(3, 6).toLowerCase()}${process.pid % 1000}`);
      const pids = await nsPids(ns);
      expect(pids.length).toBeGreaterThan(0); // virtlogd, libvirtd
      p.kill(sig);
      expect(await p.exited).not.toBe(0);
      expect(await netnsExists(ns)).toBe(false);
      for (const pid of pids) expect(alive(pid)).toBe(false);
      expect(existsSync(join(LABS_DIR, `${ns}.json`))).toBe(false);
    }, 120_000);
  }

  test("SIGKILL: the next run reaps what it left (daemons, namespaces, its record)", async () => {
    const { p, ns } = await startChild(`tdkill${process.pid % 1000}`);
    const pids = await nsPids(ns);
    p.kill("SIGKILL");
    await p.exited;
    expect(await netnsExists(ns)).toBe(true); // left behind
    expect(existsSync(join(LABS_DIR, `${ns}.json`))).toBe(true);
    expect(await reapStaleLabs()).toContain(ns);
    expect(await netnsExists(ns)).toBe(false);
    for (const pid of pids) expect(alive(pid)).toBe(false);
    expect(existsSync(LABS_DIR) ? readdirSync(LABS_DIR).filter((f) => f.startsWith(ns)) : []).toEqual([]);
  }, 120_000);
});
