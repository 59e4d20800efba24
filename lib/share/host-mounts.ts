// Host-side mounts of a VM's shared folders: the export root (read-only to the guest), the folders bound into it
// (folder-bind.ts), what virtiofsd sees, restoring saved folders before a start (after the safety preflight), and
// releasing every mount under a VM directory before it is removed.
import { join } from "node:path";
import type { AttachmentDoc, Vm } from "../config/model.ts";
import { AivmError, EXIT } from "../errors.ts";
import type { Host } from "../host.ts";
import { log } from "../log.ts";
import type { Runner } from "../run.ts";
import { shellQuote } from "../shell.ts";
import type { Action } from "../steps.ts";
import { bindFolder } from "./folder-bind.ts";
import { mountsUnder, readMounts, type MountEntry } from "./mountinfo.ts";
import { exportRoot, shareRoot, shareToken, stageRoot } from "./names.ts";
import { approveSaved, type PreflightContext } from "./preflight.ts";

const priv = (...argv: string[]): Action => ({ kind: "run", argv, privileged: true });
const own = (...argv: string[]): Action => ({ kind: "run", argv });
const isRo = (m: MountEntry) => m.options.split(",").includes("ro");

export type ExportState = "ready" | "absent" | "legacy";

/**
 * ready: <vm.dir>/share bound read-only onto the export root, a shared mount (binds made later reach virtiofsd's own
 * mount namespace, a slave of this one). legacy: the export root is mounted but writable (the layout of an earlier
 * aivm: the guest could create entries in it). absent: not mounted.
 */
export function exportState(vm: Vm, mounts: Map<string, MountEntry>): ExportState {
  const m = mounts.get(exportRoot(vm));
  if (!m) return "absent";
  return isRo(m) ? "ready" : "legacy";
}

/**
 * The export root's mount: the private share directory, made read-only on a stage first and only then bound onto the
 * export root, made shared. A bind of a read-only mount is read-only from its first moment, in this namespace and in
 * every one it propagates to (virtiofsd's, a namespaced libvirtd's); a `remount,ro` after the bind would change this
 * namespace's copy only.
 */
export function exportMountPlan(vm: Vm, mounts: Map<string, MountEntry>): Action[] {
  const exp = exportRoot(vm);
  const m = mounts.get(exp);
  const actions: Action[] = [];
  if (!m) {
    const tmp = join(stageRoot(vm), ".export");
    actions.push(
      ...mountsUnder(tmp, mounts).map((t) => priv("umount", t)),
      own("install", "-d", "-m", "0700", tmp),
      priv("mount", "--bind", shareRoot(vm), tmp),
      priv("mount", "-o", "remount,bind,ro", tmp),
      priv("mount", "--bind", tmp, exp),
      priv("umount", tmp),
      own("rmdir", tmp),
    );
  }
  if (!m || !/\bshared:\d+/.test(m.optional)) actions.push(priv("mount", "--make-shared", exp));
  return actions;
}

async function run(runner: Runner, actions: Action[], what: string): Promise<void> {
  for (const a of actions) if (a.kind === "run") await runner.exec(a.argv, { privileged: a.privileged, input: a.input, what });
}

/**
 * Make the export root read-only to the guest and shared (idempotent; before the VM starts). A legacy layout is
 * replaced when the VM is not running; while it runs, the guest keeps a writable export root until its next start.
 */
export async function ensureExportMount(runner: Runner, vm: Vm, o: { running?: boolean } = {}): Promise<ExportState> {
  for (const d of [exportRoot(vm), shareRoot(vm)]) {
    if (!runner.host.exists(d)) await runner.exec(["install", "-d", "-m", "0755", d], { what: `create ${d}` });
  }
  let mounts = readMounts(runner.host);
  if (exportState(vm, mounts) === "legacy") {
    if (o.running) {
      log.warn(`${vm.name}: its export root ${exportRoot(vm)} is still writable by the guest (set up by an earlier aivm): restart the VM once (aivm vm restart) to make it read-only`);
      return "legacy";
    }
    for (const t of mountsUnder(exportRoot(vm), mounts)) await runner.exec(["umount", t], { privileged: true, what: `share: replace the export root of ${vm.name}` });
    mounts = readMounts(runner.host);
  }
  await run(runner, exportMountPlan(vm, mounts), `share: export root ${exportRoot(vm)}`);
  return "ready";
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

/**
 * Before vm.dir is removed: unmount the folder binds and the export root, so a recursive delete can never reach
 * into a host folder. Refuses (exit 1) when anything stays mounted.
 */
export async function releaseVmMounts(runner: Runner, vm: Vm, read = () => readMounts(runner.host)): Promise<void> {
  // one umount can take its propagated copies with it (export/<tok> and share/<tok> are the same mount seen twice):
  // the table is read again before each, and each path is tried once
  const tried = new Set<string>();
  for (;;) {
    const t = mountsUnder(vm.dir, read()).find((x) => !tried.has(x));
    if (!t) break;
    tried.add(t);
    await runner.exec(["umount", t], { privileged: true, what: `unmount ${t}` });
  }
  if (runner.dryRun) return;
  const left = mountsUnder(vm.dir, read());
  if (left.length) throw new AivmError(`vm ${vm.name}`, `still mounted under ${vm.dir}: ${left.join(", ")}; not removing it`, EXIT.FAILED, "unmount them (umount -l), then retry");
}

export interface Restored { bound: string[]; skipped: string[] }

/**
 * Before a VM starts (vm up, aivm up, code, ssh), and when a running VM's binds went missing: the export root, and
 * the binds of its saved shared-root folders, each after the same safety preflight as an attach (a saved record may
 * have been written by anything). A refused folder is skipped with one warning; other failures warn too.
 */
export async function restoreHostBinds(runner: Runner, vm: Vm, ctx: PreflightContext, o: { running?: boolean } = {}): Promise<Restored> {
  const out: Restored = { bound: [], skipped: [] };
  // a VM made before shared-root existed has no export root; a dry run of a VM not created yet shows what it would bind
  if (!runner.host.exists(exportRoot(vm)) && !(runner.dryRun && !runner.host.exists(vm.dir))) return out;
  try {
    await ensureExportMount(runner, vm, o);
  } catch (e) {
    log.warn(`share: could not prepare ${exportRoot(vm)}: ${(e as Error).message}`);
    return out;
  }
  const mounts = readMounts(runner.host);
  for (const att of vm.attachments.filter((a) => a.mode === "shared-root")) {
    if (!runner.host.exists(att.host_path)) {
      log.warn(`share: ${att.host_path} is gone; not restoring it (aivm share detach ${shellQuote(att.host_path)})`);
      out.skipped.push(att.host_path);
      continue;
    }
    if (!(await approveSaved(runner, vm, att.host_path, ctx))) {
      out.skipped.push(att.host_path);
      continue;
    }
    try {
      if ((await bindFolder(runner, vm, att, mounts)) === "bound") out.bound.push(att.host_path);
    } catch (e) {
      log.warn(`share: could not restore ${att.host_path}: ${(e as Error).message}`);
      out.skipped.push(att.host_path);
    }
  }
  return out;
}
