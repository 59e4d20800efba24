// Which VM a VM-scoped command works on: the one rule (lib/config/resolve.ts chooseVm), the folder it looks at
// (the command's DIR, or the host's current directory through runner.host), and the pick list when no rule decides:
// a numbered question on a terminal (runner.ask), exit 2 listing the candidates without one.
import { resolve } from "node:path";
import type { StoreDoc, Vm } from "../config/model.ts";
import { chooseVm, resolveVm, type VmChoice } from "../config/resolve.ts";
import { UsageError } from "../errors.ts";
import { log } from "../log.ts";
import type { Runner } from "../run.ts";

export interface Target { vm: Vm; chosen: VmChoice }

/** The folder a command is about, resolved: DIR when given (relative to the host's cwd), else the cwd. null: unknown. */
export function targetFolder(runner: Runner, dir?: string): string | null {
  const host = runner.host;
  let cwd: string;
  try {
    cwd = host.cwd();
  } catch {
    return null; // the current directory was removed
  }
  const abs = dir === undefined ? cwd : resolve(cwd, dir);
  return host.realpath(abs) ?? abs;
}

/** The VM's name and the rule that chose it; asks on a terminal when several VMs are candidates. */
export async function chooseTarget(runner: Runner, doc: StoreDoc, o: { name?: string; dir?: string; what: string }): Promise<VmChoice> {
  const c = chooseVm(doc, { name: o.name, folder: targetFolder(runner, o.dir) });
  if ("name" in c) return c;
  const list = c.candidates.map((n, i) => `  ${i + 1}) ${n}`).join("\n");
  if (!runner.interactive) {
    throw new UsageError(`${o.what}: which VM?`, `${c.why}: ${c.candidates.join(", ")}`, "pass --vm NAME");
  }
  for (;;) {
    const a = await runner.ask(`${o.what}: which VM?`, `Which VM? (${c.why})\n${list}\nNumber or name (empty: cancel): `, "pass --vm NAME", { eof: "" });
    if (a === "") throw new UsageError(`${o.what}: which VM?`, "no VM picked", "pass --vm NAME");
    const byNumber = /^\d+$/.test(a) ? c.candidates[Number(a) - 1] : undefined;
    const name = byNumber ?? c.candidates.find((n) => n === a);
    if (name) return { name, rule: "picked", why: "picked from the list" };
    log.warn(`${JSON.stringify(a)} is not one of the numbers or names above`);
  }
}

/** chooseTarget, then the VM with its defaults applied. */
export async function targetVm(runner: Runner, doc: StoreDoc, o: { name?: string; dir?: string; what: string }): Promise<Target> {
  const chosen = await chooseTarget(runner, doc, o);
  return { vm: resolveVm(doc, chosen.name), chosen };
}
