// Host-side mounts of shared folders: the export root as a shared mount, read-only and read-write binds,
// what virtiofsd sees, and releasing every mount under a VM directory.
import { join } from "node:path";
import { exportRoot, shareToken, stageRoot, within } from "./names.ts";
import type { AttachmentDoc, Vm } from "../config/model.ts";
import type { Host } from "../host.ts";
import { type Runner } from "../run.ts";
import { AivmError, EXIT } from "../errors.ts";
import { log } from "../log.ts";
import { Action } from "../steps.ts";
import { shellQuote } from "../shell.ts";

export interface MountEntry { target: string; root: string; options: string; optional: string; fstype: string; source: string }

function unescapeMount(s: string): string {
  return s.replace(/\\([0-7]{3})/g, (_m, o: string) => String.fromCharCode(parseInt(o, 8)));
}

/** /proc/self/mountinfo by mount point (the last mount on a path wins, as the kernel shows it). */
export function parseMountinfo(text: string): Map<string, MountEntry> {
  const map = new Map<string, MountEntry>();
  for (const line of text.split("\n")) {
    const parts = line.split(" - ");
    if (parts.length < 2) continue;
    const a = parts[0]!.split(" ");
    const b = parts[1]!.split(" ");
    if (a.length < 6) continue;
    map.set(unescapeMount(a[4]!), { target: unescapeMount(a[4]!), root: unescapeMount(a[3]!), options: a[5]!, optional: a.slice(6).join(" "), fstype: b[0] ?? "", source: unescapeMount(b[1] ?? "") });
  }
  return map;
}

export function readMounts(host: Host): Map<string, MountEntry> {
  return parseMountinfo(host.readFile("/proc/self/mountinfo") ?? "");
}

const isRo = (m: MountEntry) => m.options.split(",").includes("ro");

/** Same file (device and inode)? */
export type SameFile = (a: string, b: string) => boolean;

export const sameFile = (host: Host): SameFile => (a, b) => {
  const x = host.stat(a);
  const y = host.stat(b);
  return !!x && !!y && x.dev === y.dev && x.ino === y.ino;
};

/**
 * The export root as a shared mount point (a bind onto itself, made shared), so binds added under it later reach
 * virtiofsd's own mount namespace (its copy is a slave of this one). Must happen before the VM starts.
 */
export function exportMountPlan(vm: Vm, mounts: Map<string, MountEntry>): Action[] {
  const exp = exportRoot(vm);
  const m = mounts.get(exp);
  const actions: Action[] = [];
  if (!m) actions.push({ kind: "run", argv: ["mount", "--bind", exp, exp], privileged: true });
  if (!m || !/\bshared:\d+/.test(m.optional)) actions.push({ kind: "run", argv: ["mount", "--make-shared", exp], privileged: true });
  return actions;
}

/**
 * Bind the folder onto <export>/<token>. Read-only binds are made and remounted ro in the stage directory first and
 * only then bound into the export: a remount does not propagate to other mount namespaces, but a new bind copies
 * the ro flag, so virtiofsd's copy is read-only from its first moment.
 * `null`: the right bind is already there. A wrong mount on the target is replaced.
 */
export function hostBindPlan(vm: Vm, att: AttachmentDoc, mounts: Map<string, MountEntry>, same: SameFile): Action[] | null {
  const target = join(exportRoot(vm), shareToken(att.host_path));
  const m = mounts.get(target);
  if (m && same(target, att.host_path) && isRo(m) === (att.access === "ro")) return null;
  const actions: Action[] = [];
  if (m) actions.push({ kind: "run", argv: ["umount", target], privileged: true });
  actions.push({ kind: "run", argv: ["mkdir", "-p", target], privileged: true });
  if (att.access === "ro") {
    const stage = join(stageRoot(vm), shareToken(att.host_path));
    actions.push(
      { kind: "run", argv: ["mkdir", "-p", stage], privileged: true },
      { kind: "run", argv: ["mount", "--bind", att.host_path, stage], privileged: true },
      { kind: "run", argv: ["mount", "-o", "remount,bind,ro", stage], privileged: true },
      { kind: "run", argv: ["mount", "--bind", stage, target], privileged: true },
      { kind: "run", argv: ["umount", stage], privileged: true },
      { kind: "run", argv: ["rmdir", stage], privileged: true },
    );
  } else {
    actions.push({ kind: "run", argv: ["mount", "--bind", att.host_path, target], privileged: true });
  }
  return actions;
}

/** The pids of the virtiofsd processes serving this VM's export root (from /proc; empty when none or not visible). */
export function virtiofsdPids(host: Host, vm: Vm, proc = "/proc"): number[] {
  const want = `source=${exportRoot(vm)}`;
  const pids: number[] = [];
  for (const d of host.readDir(proc) ?? []) {
    if (!/^\d+$/.test(d)) continue;
    const cmd = host.readFile(join(proc, d, "cmdline"))?.split("\0") ?? [];
    if (cmd[0]?.endsWith("virtiofsd") && cmd.some((a) => a === want || a.endsWith(want) || a.includes(`${want},`))) pids.push(Number(d));
  }
  return pids;
}

/**
 * Does the running virtiofsd see the folder at <export>/<token>? It lives in its own mount namespace: a bind made
 * after it started reaches it only when the export root was a shared mount before it started. null: cannot tell.
 */
export function virtiofsdSees(host: Host, vm: Vm, att: AttachmentDoc, proc = "/proc"): boolean | null {
  const pids = virtiofsdPids(host, vm, proc);
  if (!pids.length) return null;
  const seen = host.stat(join(proc, String(pids[pids.length - 1]), "root", shareToken(att.host_path)));
  const mine = host.stat(att.host_path);
  if (!seen || !mine) return seen ? null : false;
  return seen.dev === mine.dev && seen.ino === mine.ino;
}

/** Undo the host bind: unmount (if mounted) and remove the empty mount point. */
export function hostUnbindPlan(vm: Vm, att: AttachmentDoc, mounts: Map<string, MountEntry>, exists: (p: string) => boolean): Action[] {
  const target = join(exportRoot(vm), shareToken(att.host_path));
  const actions: Action[] = [];
  if (mounts.has(target)) actions.push({ kind: "run", argv: ["umount", target], privileged: true });
  if (exists(target)) actions.push({ kind: "run", argv: ["rmdir", target], privileged: true });
  return actions;
}

export async function runActions(runner: Runner, actions: Action[], what: string): Promise<void> {
  for (const a of actions) {
    if (a.kind === "run") await runner.exec(a.argv, { privileged: a.privileged, what });
  }
}

/** Every mount point under dir (deepest first), from a mount table. */
export function mountsUnder(dir: string, mounts: Map<string, MountEntry>): string[] {
  return [...mounts.keys()].filter((t) => within(t, dir)).sort((a, b) => b.split("/").length - a.split("/").length || b.length - a.length);
}

/**
 * Before vm.dir is removed: unmount the folder binds and the export root, so a recursive delete can never reach
 * into a host folder. Refuses (exit 1) when anything stays mounted.
 */
export async function releaseVmMounts(runner: Runner, vm: Vm, read = () => readMounts(runner.host)): Promise<void> {
  for (const t of mountsUnder(vm.dir, read())) await runner.exec(["umount", t], { privileged: true, what: `unmount ${t}` });
  if (runner.dryRun) return;
  const left = mountsUnder(vm.dir, read());
  if (left.length) throw new AivmError(`vm ${vm.name}`, `still mounted under ${vm.dir}: ${left.join(", ")}; not removing it`, EXIT.FAILED, "unmount them (umount -l), then retry");
}

/** Make the export root a shared mount (idempotent). Called before the VM starts. */
export async function ensureExportMount(runner: Runner, vm: Vm, mounts = readMounts(runner.host)): Promise<boolean> {
  const actions = exportMountPlan(vm, mounts);
  if (!runner.host.exists(exportRoot(vm))) await runner.exec(["install", "-d", "-m", "0755", exportRoot(vm)], { what: "create the export root" });
  await runActions(runner, actions, `share: export root ${exportRoot(vm)}`);
  return actions.length > 0;
}

export async function ensureHostBind(runner: Runner, vm: Vm, att: AttachmentDoc, mounts = readMounts(runner.host)): Promise<"bound" | "unchanged"> {
  const plan = hostBindPlan(vm, att, mounts, sameFile(runner.host));
  if (!plan) return "unchanged";
  await runActions(runner, plan, `share: bind ${att.host_path}`);
  return "bound";
}

/**
 * Before a VM starts (vm up, aivm up, code, ssh): the export root as a shared mount and the host binds of its saved
 * shared-root attachments (gone after a host reboot). Failures warn; they do not block the start.
 */
export async function restoreHostBinds(runner: Runner, vm: Vm): Promise<string[]> {
  const restored: string[] = [];
  if (!runner.host.exists(exportRoot(vm))) return restored; // a VM made before shared-root existed has no export root
  try {
    await ensureExportMount(runner, vm);
  } catch (e) {
    log.warn(`share: could not prepare ${exportRoot(vm)}: ${(e as Error).message}`);
    return restored;
  }
  const mounts = readMounts(runner.host);
  for (const att of vm.attachments.filter((a) => a.mode === "shared-root")) {
    if (!runner.host.exists(att.host_path)) {
      log.warn(`share: ${att.host_path} is gone; not restoring it (aivm share detach ${shellQuote(att.host_path)})`);
      continue;
    }
    try {
      if ((await ensureHostBind(runner, vm, att, mounts)) === "bound") restored.push(att.host_path);
    } catch (e) {
      log.warn(`share: could not restore ${att.host_path}: ${(e as Error).message}`);
    }
  }
  return restored;
}
