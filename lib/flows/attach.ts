// Attach and detach a folder: the record, the host bind or device, the guest mount, a consented restart
// when a cold-plugged device is needed.
import { resolve } from "node:path";
import { type Runner } from "../run.ts";
import type { Access, AttachmentDoc, Mode, Vm } from "../config/model.ts";
import { domainTags } from "../libvirt/parse.ts";
import { vmFilesystems } from "../share/names.ts";
import { AivmError, EXIT, UsageError } from "../errors.ts";
import { domainState, domainUuid, RUNNING, virshArgv, virshRead } from "../libvirt/virsh.ts";
import { findAttachment, hostDir, overlapping, planAttachment, withAttachment, withoutAttachment } from "../share/input.ts";
import { currentBranch, gitAttach, gitRemoteName, gitSyncArgv, gitTopLevel } from "../git.ts";
import { ensureExportMount, ensureHostBind, hostUnbindPlan, readMounts, runActions, virtiofsdSees } from "../share/host-mounts.ts";
import { guestMount, guestUnmount } from "../share/guest.ts";
import { log } from "../log.ts";
import { renderDomainXml } from "../domain.ts";
import { planDomain } from "../vm/create.ts";
import { cachedImage } from "../image.ts";
import { waitVm } from "../vm/ip.ts";
import { stopVm } from "../vm/power.ts";
import { startWithBinds } from "./power.ts";
import { updateStore } from "../config/store.ts";
import { recordVm } from "../config/resolve.ts";
import { defaultSshConfigFile, upsertSshConfig } from "../ssh-config.ts";
import { approveSensitive } from "../share/preflight.ts";
import { withVmLock } from "../vm/files.ts";
import type { Host } from "../host.ts";
import { shellQuote } from "../shell.ts";

/** The tags the VM's domain lacks (its persistent definition), or null when there is no domain. */
export async function missingTags(runner: Runner, vm: Vm): Promise<string[] | null> {
  const r = await virshRead(runner, vm.paths.libvirtUri, ["dumpxml", "--inactive", vm.name]);
  if (r.exitCode !== 0) return null;
  const have = domainTags(r.stdout);
  return vmFilesystems(vm).map((f) => f.tag).filter((t) => !have.includes(t));
}

/** Tags the domain has that the VM no longer wants (a detached `shared` folder). */
export async function extraTags(runner: Runner, vm: Vm): Promise<string[]> {
  const r = await virshRead(runner, vm.paths.libvirtUri, ["dumpxml", "--inactive", vm.name]);
  if (r.exitCode !== 0) return [];
  const want = vmFilesystems(vm).map((f) => f.tag);
  return domainTags(r.stdout).filter((t) => !want.includes(t));
}

/** Redefine the (shut off) domain with the VM's current virtiofs devices, keeping its UUID and domain type. */
export async function redefineFilesystems(runner: Runner, vm: Vm): Promise<void> {
  const uri = vm.paths.libvirtUri;
  const cur = await virshRead(runner, uri, ["dumpxml", "--inactive", vm.name]);
  const type = /<domain\b[^>]*type=['"]kvm['"]/.test(cur.stdout) ? "kvm" : "qemu";
  const uuid = (await domainUuid(runner, uri, vm.name)) ?? undefined;
  const xml = renderDomainXml(planDomain(vm, { type, image: cachedImage(vm.paths, vm.image.sha256), uuid, exists: (p) => runner.host.exists(p) }));
  await runner.step({
    title: `Redefine VM ${vm.name} with its virtiofs devices`,
    why: `virtiofs devices are cold-plugged: ${vmFilesystems(vm).map((f) => f.tag).join(", ")}`,
    consent: true,
    actions: [{ kind: "run", argv: virshArgv(uri, "define", "/dev/stdin"), input: xml }],
  });
}

/** Start errors that mean the machine ran out of PCI slots for per-folder devices. */
export function pciExhausted(message: string): boolean {
  return /no more available PCI slots|no free PCI|PCI slot/i.test(message);
}

export interface ShareState { state: string; ip: string | null }

async function vmState(runner: Runner, vm: Vm): Promise<string> {
  return domainState(runner, vm.paths.libvirtUri, vm.name);
}

async function runningIp(runner: Runner, vm: Vm): Promise<string> {
  return (await waitVm(runner, vm, { until: "ssh", timeoutS: 120 })).ip;
}

/** Restart a running VM so cold-plugged devices take effect: ACPI shutdown, redefine, start (binds restored), wait for SSH. */
export async function restartWithDevices(runner: Runner, vm: Vm): Promise<string> {
  await stopVm(runner, vm);
  await redefineFilesystems(runner, vm);
  try {
    await startWithBinds(runner, vm);
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
  const state = await vmState(runner, vm);
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
  if (att.mode === "git") {
    const ip = await runningIp(runner, next);
    await upsertSshConfig(runner, next, ip);
    await gitAttach(runner, next, ip, att);
    return { att, state, mounted: true };
  }
  if (att.mode === "shared-root") {
    await ensureExportMount(runner, next);
    await ensureHostBind(runner, next, att);
  }
  if (missing.length && !running) await redefineFilesystems(runner, next);
  if (state === "absent") return { att, state, mounted: false, note: `saved; ${vm.name} does not exist yet: the folder is mounted once it is created and started (aivm up)` };
  if (!running) return { att, state, mounted: false, note: `saved; mounted at ${att.guest_dst} when ${vm.name} starts` };
  let ip: string;
  if (missing.length) {
    if (!restart) return { att, state, mounted: false, note: `saved; ${vm.name} must restart to get the device: aivm vm restart --vm ${vm.name}` };
    ip = await restartWithDevices(runner, next);
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
 * Detach: guest unmount and fstab line (when running), host bind (shared-root), device (shared: redefined when shut
 * off, else at the next restart), then the record. When a step fails the record stays and the problems are returned.
 */
export async function detachFolder(runner: Runner, configPath: string, vm: Vm, att: AttachmentDoc): Promise<DetachOutcome> {
  const problems: string[] = [];
  const state = await vmState(runner, vm);
  const running = RUNNING.has(state);
  const next: Vm = { ...vm, attachments: vm.attachments.filter((a) => a.host_path !== att.host_path) };
  if (att.mode !== "git" && running) {
    try {
      const ip = await runningIp(runner, vm);
      await guestUnmount(runner, vm, ip, att);
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
        await runActions(runner, hostUnbindPlan(vm, att, readMounts(runner.host), (p) => runner.host.exists(p)), `share: unbind ${att.host_path}`);
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

export interface AttachRequest { dir: string; mode?: Mode; access?: Access; guestDst?: string }

/**
 * `share attach`: every input check first (nothing changes on bad input), the safety preflight, consent for an
 * overlapping folder, then the attachment under the per-VM lock.
 */
export async function attach(runner: Runner, configPath: string, vm: Vm, req: AttachRequest): Promise<AttachOutcome & { saved: boolean }> {
  let hostPath = hostDir("share attach", req.dir);
  if ((req.mode ?? findAttachment(vm, hostPath)?.mode) === "git") hostPath = await gitTopLevel(runner, hostPath);
  const { att, saved } = planAttachment(vm, hostPath, { mode: req.mode, access: req.access, guestDst: req.guestDst });
  await approveSensitive(runner, "share attach", hostPath);
  const over = overlapping(vm, hostPath);
  if (over.length && !saved && !runner.dryRun && !(await runner.confirm("share attach", `${hostPath} overlaps ${over.map((a) => a.host_path).join(", ")} (already attached). Continue with an overlapping attachment?`))) {
    throw new AivmError("share attach", "not approved", EXIT.FAILED);
  }
  const r = await withVmLock(vm, () => attachFolder(runner, configPath, vm, att), { dryRun: runner.dryRun, create: false, what: "share attach" });
  return { ...r, saved };
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

/** `share sync`: git mode only; --push host commits to the guest clone, --pull guest commits to the host (fast-forward). */
export async function syncFolder(runner: Runner, vm: Vm, dir: string, direction: "push" | "pull"): Promise<{ att: AttachmentDoc; branch: string }> {
  const d = hostDir("share sync", dir);
  const top = await gitTopLevel(runner, d).catch(() => d);
  const att = findAttachment(vm, top) ?? findAttachment(vm, d);
  if (!att) throw new UsageError("share sync", `${top} is not attached to ${vm.name}`, `attach it: aivm share attach --mode git ${top}`);
  if (att.mode !== "git") throw new UsageError("share sync", `${att.host_path} is attached in ${att.mode} mode: it is live already; sync is for --mode git`);
  const branch = await currentBranch(runner, att.host_path);
  for (const argv of gitSyncArgv(vm, att, direction, branch)) {
    // git's ssh finds the VM's alias in the ssh config aivm wrote (ssh itself reads the passwd home, not $HOME)
    await runner.exec(argv, { what: `share sync --${direction}`, env: { GIT_SSH_COMMAND: `ssh -F ${shellQuote(defaultSshConfigFile())}` } });
  }
  return { att, branch };
}
