// Attach and detach a folder: the safety preflight, the record, the host bind (checked, git-guarded) or device, the
// guest mount, a consented restart when a cold-plugged device is needed. Nothing is bound for a VM that does not
// exist yet: the record is saved and the folder is bound when the VM is created and started.
import { resolve } from "node:path";
import type { Access, AttachmentDoc, Mode, Vm } from "../config/model.ts";
import { recordVm } from "../config/resolve.ts";
import { updateStore } from "../config/store.ts";
import { AivmError, EXIT, UsageError } from "../errors.ts";
import { gitAttach, gitRemoteName, gitTopLevel } from "../git.ts";
import type { Host } from "../host.ts";
import { domainState, RUNNING } from "../libvirt/virsh.ts";
import { log } from "../log.ts";
import type { Runner } from "../run.ts";
import { bindFolder, folderUnbindPlan } from "../share/folder-bind.ts";
import { guardState } from "../share/git-guard.ts";
import { guestMount, guestUnmount } from "../share/guest.ts";
import { ensureExportMount, virtiofsdSees } from "../share/host-mounts.ts";
import { findAttachment, hostDir, overlapping, planAttachment, withAttachment, withoutAttachment } from "../share/input.ts";
import { readMounts } from "../share/mountinfo.ts";
import { approveFolder } from "../share/preflight.ts";
import { upsertSshConfig } from "../ssh-config.ts";
import { extraTags, missingTags, pciExhausted, redefineFilesystems } from "../vm/devices.ts";
import { withVmLock } from "../vm/files.ts";
import { waitVm } from "../vm/ip.ts";
import { stopVm } from "../vm/power.ts";
import { startWithBinds } from "./power.ts";

async function runningIp(runner: Runner, vm: Vm): Promise<string> {
  return (await waitVm(runner, vm, { until: "ssh", timeoutS: 120 })).ip;
}

/** Restart a running VM so cold-plugged devices take effect: ACPI shutdown, redefine, start (binds restored), wait for SSH. */
export async function restartWithDevices(runner: Runner, configPath: string, vm: Vm): Promise<string> {
  await stopVm(runner, vm);
  await redefineFilesystems(runner, vm);
  try {
    await startWithBinds(runner, configPath, vm);
  } catch (e) {
    if (pciExhausted((e as Error).message)) throw new AivmError(`vm up ${vm.name}`, "no PCI slot left for another virtiofs device", EXIT.FAILED, "attach folders with --mode shared-root: they all share one device");
    throw e;
  }
  return (await waitVm(runner, vm, { until: "ssh" })).ip;
}

export interface AttachOutcome { att: AttachmentDoc; state: string; mounted: boolean; note?: string }

/**
 * Attach a folder to a VM (att from planAttachment, preflight already approved). Records the attachment, then makes
 * it real as far as the VM's state allows: host bind (shared-root), device (shared, cold-plug: a running VM is
 * restarted after consent), guest mount and fstab line (running VM), guest clone and host remote (git).
 */
export async function attachFolder(runner: Runner, configPath: string, vm: Vm, att: AttachmentDoc): Promise<AttachOutcome> {
  const state = await domainState(runner, vm.paths.libvirtUri, vm.name);
  const running = RUNNING.has(state);
  const next: Vm = { ...vm, attachments: [...vm.attachments.filter((a) => a.host_path !== att.host_path), att] };
  if (att.mode === "git" && !running) {
    throw new AivmError("share attach", `--mode git needs ${vm.name} running (the guest clone is made over SSH)`, EXIT.FAILED, "start it with `aivm vm up`");
  }
  // cold-plug: a device the domain lacks needs a shut-off domain
  let restart = false;
  let missing: string[] = [];
  if (att.mode !== "git" && state !== "absent") {
    missing = (await missingTags(runner, next)) ?? [];
    if (missing.length && running) {
      if (runner.dryRun) log.info(`dry run: ${vm.name} would need a restart to add virtiofs device(s) ${missing.join(", ")}`);
      else restart = await runner.confirm("share attach", `${vm.name} needs a restart to add the virtiofs device(s) ${missing.join(", ")} (live attach is unsafe with libvirt 9). Restart it now?`);
    }
  }
  updateStore(configPath, (d) => withAttachment(recordVm(d, vm), vm.name, att), { dryRun: runner.dryRun });
  if (state === "absent") return { att, state, mounted: false, note: `saved; ${vm.name} does not exist yet: the folder is bound and mounted once it is created and started (aivm up)` };
  if (att.mode === "git") {
    const ip = await runningIp(runner, next);
    await upsertSshConfig(runner, next, ip);
    await gitAttach(runner, next, ip, att);
    return { att, state, mounted: true };
  }
  if (att.mode === "shared-root") {
    await ensureExportMount(runner, next, { running });
    await bindFolder(runner, next, att);
  }
  if (missing.length && !running) await redefineFilesystems(runner, next);
  if (!running) return { att, state, mounted: false, note: `saved; mounted at ${att.guest_dst} when ${vm.name} starts` };
  let ip: string;
  if (missing.length) {
    if (!restart) return { att, state, mounted: false, note: `saved; ${vm.name} must restart to get the device: aivm vm restart --vm ${vm.name}` };
    ip = await restartWithDevices(runner, configPath, next);
  } else {
    ip = await runningIp(runner, next);
  }
  if (att.mode === "shared-root" && !runner.dryRun && virtiofsdSees(runner.host, next, att) === false) {
    throw new AivmError("share attach", `${vm.name}'s virtiofsd does not see the new bind of ${att.host_path} (its mount namespace receives no host mounts: the export root was not a shared mount when the VM started)`, EXIT.FAILED, `restart the VM once (aivm vm restart --vm ${vm.name}); the attachment is saved and mounts then`);
  }
  await guestMount(runner, next, ip, att);
  return { att, state, mounted: true };
}

export interface DetachOutcome { removed: boolean; problems: string[] }

/**
 * Detach: guest unmount and fstab line (when running), host bind and its guards (shared-root), device (shared:
 * redefined when shut off, else at the next restart), then the record. When a step fails the record stays.
 */
export async function detachFolder(runner: Runner, configPath: string, vm: Vm, att: AttachmentDoc): Promise<DetachOutcome> {
  const problems: string[] = [];
  const state = await domainState(runner, vm.paths.libvirtUri, vm.name);
  const running = RUNNING.has(state);
  const next: Vm = { ...vm, attachments: vm.attachments.filter((a) => a.host_path !== att.host_path) };
  if (att.mode !== "git" && running) {
    try {
      await guestUnmount(runner, vm, await runningIp(runner, vm), att);
    } catch (e) {
      problems.push(`guest unmount of ${att.guest_dst}: ${(e as Error).message}`);
    }
  } else if (att.mode !== "git" && state !== "absent") {
    log.info(`${vm.name} is ${state}: its fstab keeps a nofail line for ${att.guest_dst} that finds nothing to mount`);
  }
  if (att.mode === "shared-root" && problems.length === 0) {
    // virtiofsd may still hold files in it for a moment after the guest let go (busy): retry for a few seconds
    for (let i = 0; ; i++) {
      try {
        for (const a of folderUnbindPlan(vm, att, readMounts(runner.host), (p) => runner.host.exists(p))) {
          if (a.kind === "run") await runner.exec(a.argv, { privileged: a.privileged, what: `share: unbind ${att.host_path}` });
        }
        break;
      } catch (e) {
        if (i < 10 && /busy/i.test((e as Error).message)) {
          await Bun.sleep(1000);
          continue;
        }
        problems.push(`host unbind: ${(e as Error).message}`);
        break;
      }
    }
  }
  if (att.mode === "shared" && problems.length === 0 && state !== "absent") {
    if (running) log.info(`the virtiofs device for ${att.host_path} goes away at ${vm.name}'s next restart`);
    else if ((await extraTags(runner, next)).length) await redefineFilesystems(runner, next);
  }
  if (att.mode === "git") log.info(`the guest clone ${att.guest_dst} and the host remote ${gitRemoteName(vm)} stay; remove them by hand if you want`);
  if (problems.length) return { removed: false, problems };
  updateStore(configPath, (d) => withoutAttachment(d, vm.name, att.host_path), { dryRun: runner.dryRun });
  return { removed: true, problems };
}

export interface AttachRequest { dir: string; mode?: Mode; access?: Access; guestDst?: string; gitGuard?: "on" | "off" }

/**
 * `share attach`: every input check first (nothing changes on bad input), the safety preflight (aivm's own state is
 * refused whatever --yes says), the git guard's preconditions, consent for an overlapping folder, then the
 * attachment under the per-VM lock.
 */
export async function attach(runner: Runner, configPath: string, vm: Vm, req: AttachRequest): Promise<AttachOutcome & { saved: boolean }> {
  let hostPath = hostDir("share attach", req.dir);
  if ((req.mode ?? findAttachment(vm, hostPath)?.mode) === "git") hostPath = await gitTopLevel(runner, hostPath);
  const planned = planAttachment(vm, hostPath, { mode: req.mode, access: req.access, guestDst: req.guestDst });
  const att: AttachmentDoc = req.gitGuard === "off" ? { ...planned.att, git_guard: "off" } : planned.att;
  await approveFolder(runner, "share attach", hostPath, { configPath, paths: vm.paths });
  const isRepo = !!runner.host.lstat(resolve(hostPath, ".git"));
  if (att.mode === "shared" && att.access === "rw" && isRepo && att.git_guard !== "off") {
    throw new UsageError("share attach", `${hostPath} is a git repository, and --mode shared exports the folder itself: its .git/config, hooks and commondir cannot be kept read-only to the guest`, "use --mode shared-root (the default; the git guard protects .git), or pass --git-guard off if you accept that the guest can run code on the host through git");
  }
  if (att.git_guard === "off" && isRepo && att.access === "rw") {
    log.warn(`share attach: the git guard is off for ${hostPath}: the guest can write .git/config, hooks and commondir, and your next git command there on the host runs what the guest put there`);
  }
  const over = overlapping(vm, hostPath);
  if (over.length && !planned.saved && !runner.dryRun && !(await runner.confirm("share attach", `${hostPath} overlaps ${over.map((a) => a.host_path).join(", ")} (already attached). Continue with an overlapping attachment?`))) {
    throw new AivmError("share attach", "not approved", EXIT.FAILED);
  }
  const r = await withVmLock(vm, () => attachFolder(runner, configPath, vm, att), { dryRun: runner.dryRun, create: false, what: "share attach" });
  if (r.mounted && att.mode === "shared-root") log.info(guardNote(runner.host, att));
  return { ...r, saved: planned.saved };
}

function guardNote(host: Host, att: AttachmentDoc): string {
  const s = guardState(host, att);
  return s.kind === "none" ? `${att.host_path}: git guard not applied (${s.why})` : `${att.host_path}: git guard on (.git's config, hooks and commondir are read-only to the guest)`;
}

/** A folder given to detach/sync: resolved when it exists, else taken lexically (a deleted folder can still be detached). */
export function recordedPath(host: Host, d: string): string {
  const abs = resolve(d);
  return host.realpath(abs) ?? abs;
}

/** `share detach`: null when the folder is not attached (nothing to do); the record stays when a step fails. */
export async function detach(runner: Runner, configPath: string, vm: Vm, dir: string): Promise<{ att: AttachmentDoc } | null> {
  const p = recordedPath(runner.host, dir);
  const att = findAttachment(vm, p);
  if (!att && !runner.host.exists(p)) throw new UsageError("share detach", `${dir}: no such directory, and nothing attached there`);
  if (!att) return null;
  const r = await withVmLock(vm, () => detachFolder(runner, configPath, vm, att), { dryRun: runner.dryRun, create: false, what: "share detach" });
  if (!r.removed) throw new AivmError("share detach", `${att.host_path}: ${r.problems.join("; ")}`, EXIT.FAILED, "the attachment record is kept; fix the cause and run detach again");
  return { att };
}
