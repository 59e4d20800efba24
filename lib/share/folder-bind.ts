// Binding a host folder into a VM's export root, as root, in a tree the guest may have written. Every step is made
// where no guest can see it, and checked before the guest can:
//  1. the folder is bound onto a private stage mount point (<vm.dir>/stage, never exported);
//  2. check: the recorded path still resolves to itself (no component was swapped for a symlink) and the stage holds
//     that very directory (same device and inode) - else undo and refuse;
//  3. the git guard's read-only binds are made inside the stage (git-guard.ts); check the mount table: every new
//     mount is one aivm meant (a symlink followed by mount(8) would show up elsewhere) - else undo and refuse;
//  4. only then one recursive bind carries the folder, with its guards and read-only flags, into the export root
//     (whose mount points live in <vm.dir>/share, bound read-only onto the export: the guest creates nothing there).
import { join } from "node:path";
import type { AttachmentDoc, Vm } from "../config/model.ts";
import { AivmError, EXIT } from "../errors.ts";
import type { Host } from "../host.ts";
import type { Runner } from "../run.ts";
import type { Action } from "../steps.ts";
import { guardProblem, guardState, guardTargets, missingGuarded, type GuardState } from "./git-guard.ts";
import { mountsUnder, readMounts, type MountEntry } from "./mountinfo.ts";
import { exportRoot, shareRoot, shareToken, stageRoot } from "./names.ts";

const priv = (...argv: string[]): Action => ({ kind: "run", argv, privileged: true });
const own = (...argv: string[]): Action => ({ kind: "run", argv });
const isRo = (m: MountEntry) => m.options.split(",").includes("ro");

export interface FolderPaths { target: string; point: string; stage: string }

export function folderPaths(vm: Vm, att: AttachmentDoc): FolderPaths {
  const tok = shareToken(att.host_path);
  return { target: join(exportRoot(vm), tok), point: join(shareRoot(vm), tok), stage: join(stageRoot(vm), tok) };
}

/** Is the folder already bound as it should be (the right directory, the right access, its guard in place)? */
export function folderBound(host: Host, vm: Vm, att: AttachmentDoc, mounts: Map<string, MountEntry>): boolean {
  const { target } = folderPaths(vm, att);
  const m = mounts.get(target);
  const a = host.stat(target);
  const b = host.stat(att.host_path);
  if (!m || !a || !b || a.dev !== b.dev || a.ino !== b.ino || isRo(m) !== (att.access === "ro")) return false;
  return guardTargets(target, guardState(host, att)).every((t) => mounts.has(t));
}

export interface BindPlan {
  /** undo an old bind; make the mount point and the stage; bind the folder onto the stage */
  prepare: Action[];
  /** the git guard, inside the stage */
  guard: Action[];
  /** read-only when asked; carry the stage into the export; drop the stage */
  carry: Action[];
  /** the mount points the guard makes (checked against the mount table) */
  guardMounts: string[];
  guard_: GuardState;
}

/** Pure but for reading the host folder's .git: the commands that bind `att` for `vm`. */
export function folderBindPlan(host: Host, vm: Vm, att: AttachmentDoc, mounts: Map<string, MountEntry>): BindPlan {
  const { target, point, stage } = folderPaths(vm, att);
  const prepare: Action[] = [
    ...mountsUnder(target, mounts).map((t) => priv("umount", t)),
    own("install", "-d", "-m", "0755", point),
    own("install", "-d", "-m", "0755", stage),
    priv("mount", "--bind", att.host_path, stage),
    priv("mount", "--make-rprivate", stage),
  ];
  const state = guardState(host, att);
  const guard: Action[] = [];
  const dotgit = join(stage, ".git");
  if (state.kind === "dir") {
    const owner = host.stat(join(att.host_path, ".git"));
    const ids = owner ? ["-o", String(owner.uid), "-g", String(owner.gid)] : [];
    for (const g of missingGuarded(host, att)) {
      const p = join(att.host_path, ".git", g.name);
      guard.push(g.kind === "dir" ? { ...priv("install", "-d", "-m", "0755", ...ids, p) } : { kind: "run", argv: ["install", "-m", "0644", ...ids, "/dev/stdin", p], input: g.content ?? "", privileged: true });
    }
    guard.push(priv("mount", "--bind", dotgit, dotgit));
    for (const t of guardTargets(stage, state).slice(1)) guard.push(priv("mount", "--bind", t, t), priv("mount", "-o", "remount,bind,ro", t));
  } else if (state.kind === "gitfile") {
    guard.push(priv("mount", "--bind", dotgit, dotgit), priv("mount", "-o", "remount,bind,ro", dotgit));
  }
  const carry: Action[] = [
    ...(att.access === "ro" ? [priv("mount", "-o", "remount,bind,ro", stage)] : []),
    priv("mount", "--rbind", stage, target),
    priv("umount", "-R", stage),
    own("rmdir", stage),
  ];
  return { prepare, guard, carry, guardMounts: guardTargets(stage, state), guard_: state };
}

/** Check 2: the stage holds the recorded folder itself. */
export function stagedProblem(host: Host, stage: string, hostPath: string): string | null {
  const rp = host.realpath(hostPath);
  if (rp !== hostPath) return `${hostPath} now resolves to ${rp ?? "nothing"}: a component of the path changed since it was attached (a symbolic link?)`;
  const a = host.stat(stage);
  const b = host.lstat(hostPath);
  if (!a || !b || !b.isDirectory || a.dev !== b.dev || a.ino !== b.ino) return `what was bound at ${stage} is not ${hostPath}`;
  return null;
}

/** Check 3: the mounts that appeared are exactly the ones meant (returns the unexpected ones). */
export function unexpectedMounts(before: Map<string, MountEntry>, after: Map<string, MountEntry>, meant: string[]): string[] {
  return [...after.keys()].filter((t) => !before.has(t) && !meant.includes(t));
}

async function run(runner: Runner, actions: Action[], what: string): Promise<void> {
  for (const a of actions) if (a.kind === "run") await runner.exec(a.argv, { privileged: a.privileged, input: a.input, what });
}

/** Undo a half-made bind: whatever is mounted under the stage, and the stray mounts a check found. */
async function undo(runner: Runner, stage: string, stray: string[]): Promise<void> {
  for (const t of [...stray, ...mountsUnder(stage, readMounts(runner.host))]) await runner.exec(["umount", "-l", t], { privileged: true, nothrow: true });
}

/** Bind the folder into the export root, checked at every step (see the top of this file). */
export async function bindFolder(runner: Runner, vm: Vm, att: AttachmentDoc, mounts = readMounts(runner.host)): Promise<"bound" | "unchanged"> {
  const host = runner.host;
  if (folderBound(host, vm, att, mounts)) return "unchanged";
  const problem = guardProblem(host, att);
  if (problem && guardState(host, att).kind !== "none") throw new AivmError("share", problem, EXIT.FAILED);
  const plan = folderBindPlan(host, vm, att, mounts);
  const what = `share: bind ${att.host_path}`;
  const { stage } = folderPaths(vm, att);
  await run(runner, plan.prepare, what);
  if (!runner.dryRun) {
    const bad = stagedProblem(host, stage, att.host_path);
    if (bad) {
      await undo(runner, stage, []);
      throw new AivmError("share", `refusing to bind ${att.host_path}: ${bad}`, EXIT.FAILED, "check the folder, then attach it again");
    }
  }
  const before = readMounts(host);
  await run(runner, plan.guard, `share: git guard for ${att.host_path}`);
  if (!runner.dryRun) {
    const stray = unexpectedMounts(before, readMounts(host), plan.guardMounts);
    if (stray.length) {
      await undo(runner, stage, stray);
      throw new AivmError("share", `refusing to bind ${att.host_path}: the git guard's mounts landed elsewhere (${stray.join(", ")}): a path in .git changed while it was being guarded`, EXIT.FAILED);
    }
  }
  await run(runner, plan.carry, what);
  return "bound";
}

/** Undo the bind (the folder, its guards) and remove the mount point. */
export function folderUnbindPlan(vm: Vm, att: AttachmentDoc, mounts: Map<string, MountEntry>, exists: (p: string) => boolean): Action[] {
  const { target, point } = folderPaths(vm, att);
  const actions: Action[] = mountsUnder(target, mounts).map((t) => priv("umount", t));
  if (exists(point)) actions.push(own("rmdir", point));
  return actions;
}
