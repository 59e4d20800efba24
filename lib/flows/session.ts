// `aivm code` and `aivm ssh`: from "stand in a folder" to "a VM where that folder is mounted at the same path".
// A warm call (VM running, folder attached and bound, cached IP answering) makes no libvirt call: the caller's one
// ssh round trip mounts the folder if needed and runs the command. Otherwise the reconcile: bootstrap a VM when
// there is none (with consent), then up (network, firewall, VM, wait, ssh-config), host binds, the folder attached
// and mounted, the other saved attachments restored (warnings only).
import { hostname } from "node:os";
import type { Runner } from "../run.ts";
import type { AttachmentDoc, StoreDoc, Vm } from "../config/model.ts";
import { cachedIp, vmFiles } from "../vm/files.ts";
import { folderBound } from "../share/folder-bind.ts";
import { restoreHostBinds } from "../share/host-mounts.ts";
import { readMounts } from "../share/mountinfo.ts";
import { containingAttachment, hostDir, overlapping, planAttachment, withAttachment } from "../share/input.ts";
import { approveFolder } from "../share/preflight.ts";
import { recordVm, resolveVm } from "../config/resolve.ts";
import { AivmError, EXIT } from "../errors.ts";
import { loadStore, updateStore } from "../config/store.ts";
import { attachFolder } from "./attach.ts";
import { guestMount, sessionCommand, userCommandText, type UserCommand } from "../share/guest.ts";
import { knownHostsLine, sshArgv, upsertSshConfig } from "../ssh-config.ts";
import { log } from "../log.ts";
import { logUp, up } from "./up.ts";
import { initConfig } from "./init.ts";

export interface SessionCtx {
  runner: Runner;
  configPath: string;
  doc: StoreDoc;
}

export interface Session {
  vm: Vm;
  att: AttachmentDoc;
  ip: string;
  /** true: no libvirt call was made (the warm path) */
  warm: boolean;
  /** where the session starts in the guest: guest_dst, or the matching subdirectory of it */
  cwd: string;
}

/** The warm path's test: attachment saved, host bind in place, cached IP listening on 22. No libvirt, no sudo. */
export async function warmIp(runner: Runner, vm: Vm, att: AttachmentDoc | undefined): Promise<string | null> {
  const host = runner.host;
  if (!att || !host.exists(vmFiles(vm).hostKey)) return null;
  if (att.mode === "shared-root" && !folderBound(host, vm, att, readMounts(host))) return null;
  const ip = cachedIp(vm);
  if (!ip) return null;
  return (await host.tcpOpen(ip, 22, 800)) ? ip : null;
}

/** Prepare a session on DIR: the warm path when everything is in place, else the full reconcile. */
export async function prepareSession(ctx: SessionCtx, o: { dir: string; vmName?: string; what: string }): Promise<Session> {
  const { runner } = ctx;
  let hostPath = hostDir(o.what, o.dir);
  await approveFolder(runner, o.what, hostPath, { configPath: ctx.configPath, paths: resolveVm(ctx.doc, o.vmName).paths });
  let doc = ctx.doc;
  let vm = resolveVm(doc, o.vmName);
  // a folder inside an attached one is a session in the attached one, started in the matching guest directory
  const inside = containingAttachment(vm, hostPath);
  let att = inside?.att;
  let cwd = inside?.cwd;
  if (att) hostPath = att.host_path;

  const ip = await warmIp(runner, vm, att);
  if (ip && att) return { vm, att, ip, warm: true, cwd: cwd ?? att.guest_dst };

  // ---- the reconcile ----
  const fresh = !vm.recorded && !runner.host.exists(vmFiles(vm).disk);
  if (fresh) {
    if (!runner.dryRun && !(await runner.confirm(o.what, `No VM yet. Create ${vm.name} (${vm.cpus} CPUs, ${vm.memoryMib} MiB, network ${vm.network.name}) with ${hostPath} attached?`))) {
      throw new AivmError(o.what, "no VM, and creating one was not approved", EXIT.FAILED, "create one with `aivm up`");
    }
    if (!doc.defaults) {
      await initConfig(runner, loadStore(ctx.configPath), { defaults: true });
      doc = loadStore(ctx.configPath).doc;
      vm = resolveVm(doc, o.vmName);
    }
  }
  if (!att) {
    const over = overlapping(vm, hostPath);
    if (over.length && !runner.dryRun && !(await runner.confirm(o.what, `${hostPath} overlaps ${over.map((a) => a.host_path).join(", ")} (already attached). Continue with an overlapping attachment?`))) {
      throw new AivmError(o.what, "not approved", EXIT.FAILED);
    }
    att = planAttachment(vm, hostPath, {}).att;
    // recorded before the VM is made, so a first create already carries it (and the guest user's ids follow it)
    const { store } = updateStore(ctx.configPath, (d) => withAttachment(recordVm(d, vm), vm.name, att!), { dryRun: runner.dryRun });
    if (!runner.dryRun) doc = store.doc;
    vm = runner.dryRun ? { ...vm, attachments: [...vm.attachments, att] } : resolveVm(doc, vm.name);
  }
  const report = await up(runner, ctx.configPath, doc, vm);
  if (report.changed) logUp(report);
  if (runner.dryRun) return { vm, att, ip: report.ip ?? "0.0.0.0", warm: false, cwd: cwd ?? att.guest_dst };
  const readyIp = report.ip!;
  vm = resolveVm(loadStore(ctx.configPath).doc, vm.name);
  await restoreHostBinds(runner, vm, { configPath: ctx.configPath, paths: vm.paths }, { running: true }); // a VM that was already running: binds missing since it started
  await attachFolder(runner, ctx.configPath, vm, att).then(
    (r) => { if (!r.mounted) throw new AivmError(o.what, `${att!.host_path}: ${r.note}`); },
  );
  for (const other of vm.attachments.filter((a) => a.host_path !== att!.host_path && a.mode !== "git")) {
    if (!runner.host.exists(other.host_path)) {
      log.warn(`saved folder ${other.host_path} is gone; not mounting it`);
      continue;
    }
    await guestMount(runner, vm, readyIp, other).catch((e) => log.warn(`could not restore ${other.host_path} at ${other.guest_dst}: ${(e as Error).message}`));
  }
  return { vm, att, ip: readyIp, warm: false, cwd: cwd ?? att.guest_dst };
}

/** The steps to open the folder from a workstation (this host has no `code`, or we run over SSH ourselves). */
export function workstationSteps(vm: Vm, ip: string, guestDst: string, hostPublicKey: string, o: { host?: string; user?: string } = {}): string {
  const host = o.host ?? hostname();
  const user = o.user ?? (process.env.SUDO_USER || process.env.USER || "you");
  const key = `~/.ssh/aivm_${vm.name}`;
  return [
    `# Open ${guestDst} in VS Code from your workstation (${vm.name} is reachable through ${host}):`,
    `# 1. copy the VM's login key to the workstation`,
    `scp ${user}@${host}:${vm.paths.sshIdentity} ${key} && chmod 600 ${key}`,
    `# 2. pin the VM's host key`,
    `echo '${knownHostsLine(vm, hostPublicKey)}' >> ~/.ssh/known_hosts_aivm`,
    `# 3. add to ~/.ssh/config`,
    `Host ${vm.name}`,
    `  HostName ${ip}`,
    `  User ${vm.user}`,
    `  ProxyJump ${user}@${host}`,
    `  IdentityFile ${key}`,
    `  IdentitiesOnly yes`,
    `  HostKeyAlias ${vm.name}`,
    `  UserKnownHostsFile ~/.ssh/known_hosts_aivm`,
    `  StrictHostKeyChecking yes`,
    `# 4. open it`,
    `code --remote ssh-remote+${vm.name} '${guestDst.replaceAll("'", `'\\''`)}'`,
    "",
  ].join("\n");
}

export type CodeOutcome = { kind: "opened"; exitCode: number } | { kind: "steps"; why: string; text: string };

/**
 * `aivm code`: the ~/.ssh/config block, the folder mounted, then VS Code Remote-SSH at the session's directory; when
 * this host has no `code`, or aivm itself runs over SSH, the steps to connect from a workstation instead.
 */
export async function openInCode(runner: Runner, s: Session): Promise<CodeOutcome> {
  await upsertSshConfig(runner, s.vm, s.ip);
  if (s.warm) await runner.exec(sshArgv(s.vm, s.ip, { batch: true, connectTimeoutS: 10, command: sessionCommand(s.att, { argv: ["true"] }) }), { what: `mount ${s.att.guest_dst} in ${s.vm.name}` });
  const overSsh = !!runner.host.env.SSH_CONNECTION;
  if (overSsh || !runner.host.which("code")) {
    const why = overSsh ? "aivm runs over SSH: open the folder from your workstation" : "`code` is not on PATH here: open the folder from a workstation";
    return { kind: "steps", why, text: workstationSteps(s.vm, s.ip, s.cwd, runner.host.readFile(vmFiles(s.vm).hostKeyPub) ?? "") };
  }
  const r = await runner.exec(["code", "--remote", `ssh-remote+${s.vm.name}`, s.cwd], { inherit: true, nothrow: true });
  return { kind: "opened", exitCode: r.exitCode };
}

/** `aivm ssh`: a login shell at the session's directory, or the command run there; the remote exit code. */
export async function sshSession(runner: Runner, s: Session, command: UserCommand): Promise<number> {
  const argv = sshArgv(s.vm, s.ip, { ...(userCommandText(command) === null ? { tty: true } : {}), command: sessionCommand(s.att, command, s.cwd) });
  return (await runner.exec(argv, { inherit: true, nothrow: true })).exitCode;
}
