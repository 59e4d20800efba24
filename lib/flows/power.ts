// The VM lifecycle commands as sequences of single jobs, each under the per-VM lock: create, up (firewall, host
// binds, start), down, restart, delete (undefine, release the folder binds, remove the directory, forget the VM).
import { recordVm } from "../config/resolve.ts";
import { updateStore } from "../config/store.ts";
import type { Vm } from "../config/model.ts";
import { AivmError } from "../errors.ts";
import { applyFirewall } from "../fw.ts";
import { DomainState, domainState } from "../libvirt/virsh.ts";
import type { Runner } from "../run.ts";
import { releaseVmMounts, restoreHostBinds } from "../share/host-mounts.ts";
import { approveSaved } from "../share/preflight.ts";
import { extraTags, redefineFilesystems } from "../vm/devices.ts";
import { removeSshConfig } from "../ssh-config.ts";
import { ensureVm } from "../vm/create.ts";
import { withVmLock } from "../vm/files.ts";
import { deleteVm, startVm, stopVm, type Clock } from "../vm/power.ts";

/**
 * Before a cold start: the export root and the saved shared-root folders, each after the safety preflight; a saved
 * `shared` folder the preflight refuses is taken out of the domain (a consented redefine), so its virtiofsd never runs.
 */
export async function prepareFolders(runner: Runner, configPath: string, vm: Vm): Promise<void> {
  const ctx = { configPath, paths: vm.paths };
  await restoreHostBinds(runner, vm, ctx);
  const refused: string[] = [];
  for (const a of vm.attachments.filter((x) => x.mode === "shared")) if (!(await approveSaved(runner, vm, a.host_path, ctx))) refused.push(a.host_path);
  if (!refused.length) return;
  const kept: Vm = { ...vm, attachments: vm.attachments.filter((a) => !refused.includes(a.host_path)) };
  if ((await extraTags(runner, kept)).length) await redefineFilesystems(runner, kept);
}

/** Start the domain; a cold start prepares its shared folders first (prepareFolders). */
export function startWithBinds(runner: Runner, configPath: string, vm: Vm, o: { clock?: Clock; state?: DomainState } = {}): ReturnType<typeof startVm> {
  return startVm(runner, vm, { ...o, beforeStart: () => prepareFolders(runner, configPath, vm) });
}

/** A VM synthesized from [defaults] is recorded in [[vms]] once it exists. Returns whether the store was written. */
export function recordIfNew(runner: Runner, configPath: string, vm: Vm): boolean {
  if (vm.recorded) return false;
  return updateStore(configPath, (d) => recordVm(d, vm), { dryRun: runner.dryRun }).wrote;
}

export async function vmCreate(runner: Runner, configPath: string, vm: Vm): Promise<{ vm: "created" | "unchanged"; recorded: boolean }> {
  return withVmLock(vm, async () => {
    const created = await ensureVm(runner, vm);
    return { vm: created, recorded: recordIfNew(runner, configPath, vm) };
  }, { dryRun: runner.dryRun, what: "vm create" });
}

export interface VmUpResult { firewall: "applied" | "unchanged" | "disabled"; state: "started" | "resumed" | "unchanged"; recorded: boolean }

/** Re-apply the firewall, then start or resume. Reads first: an unreachable libvirtd or a VM never created changes nothing. */
export async function vmUp(runner: Runner, configPath: string, vm: Vm): Promise<VmUpResult> {
  return withVmLock(vm, () => vmUpLocked(runner, configPath, vm), { dryRun: runner.dryRun, what: "vm up" });
}

async function vmUpLocked(runner: Runner, configPath: string, vm: Vm): Promise<VmUpResult> {
  if ((await domainState(runner, vm.paths.libvirtUri, vm.name)) === "absent") {
    throw new AivmError(`vm up ${vm.name}`, "not created: run aivm vm create (or aivm up)");
  }
  const firewall = await applyFirewall(runner, vm.network);
  const state = await startWithBinds(runner, configPath, vm);
  return { firewall, state, recorded: recordIfNew(runner, configPath, vm) };
}

export async function vmDown(runner: Runner, vm: Vm): Promise<"stopped" | "forced" | "unchanged"> {
  return withVmLock(vm, () => stopVm(runner, vm), { dryRun: runner.dryRun, what: "vm down", create: false });
}

export async function vmRestart(runner: Runner, configPath: string, vm: Vm): Promise<{ down: "stopped" | "forced" | "unchanged"; up: VmUpResult }> {
  return withVmLock(vm, async () => {
    const down = await stopVm(runner, vm);
    return { down, up: await vmUpLocked(runner, configPath, vm) };
  }, { dryRun: runner.dryRun, what: "vm restart" });
}

export interface VmDeleteResult { vm: "deleted" | "absent"; forgotten: boolean; sshConfig: "removed" | "unchanged"; networkUnused: boolean }

/** Delete the domain and the VM's own directory (folder binds released first), then forget it: store record, ssh block. */
export async function vmDelete(runner: Runner, configPath: string, vm: Vm): Promise<VmDeleteResult> {
  return withVmLock(vm, async () => {
    const deleted = await deleteVm(runner, vm, { beforeRemove: () => releaseVmMounts(runner, vm) });
    // host folders stay; the record goes with its attachments
    const { wrote, store } = updateStore(configPath, (d) => ({ ...d, vms: (d.vms ?? []).filter((v) => v.name !== vm.name) }), { dryRun: runner.dryRun });
    const sshConfig = await removeSshConfig(runner, vm);
    const networkUnused = vm.recorded && !(store.doc.vms ?? []).some((v) => v.name !== vm.name && v.network === vm.network.name);
    return { vm: deleted, forgotten: wrote, sshConfig, networkUnused };
  }, { dryRun: runner.dryRun, what: "vm delete", create: false });
}
