// `aivm vm update`: apply config drift to an existing VM. vCPUs and memory go into the persistent definition (a restart
// makes them live), the disk grows only (qemu-img resize when shut off, virsh blockresize when running), the firewall
// table is re-applied (no restart). The planner is pure; applyUpdate runs the plan through the Runner.
import type { Vm } from "./config.ts";
import { AivmError, EXIT, UsageError } from "./errors.ts";
import { applyFirewall, firewallStatus, type FwStatus } from "./fw.ts";
import { log } from "./log.ts";
import type { Action, Runner } from "./run.ts";
import { sshArgv } from "./ssh-config.ts";
import { GIB, mainDisk, parseBlkCapacity, parseDomainXml, virtiofsDrift, type LiveDomain } from "./status.ts";
import { domainState, startVm, stopVm, vmIp, type Clock, type DomainState } from "./vm.ts";
import { virshArgv, virshRead } from "./virsh.ts";

export type RestartPolicy = "auto" | "always" | "never";
export const RESTART_POLICIES: RestartPolicy[] = ["auto", "always", "never"];

export interface UpdateChange {
  what: "cpus" | "memory" | "disk" | "firewall";
  from: string;
  to: string;
  /** the change reaches the running guest only after a restart */
  restart: boolean;
  actions: Action[];
}

export interface UpdatePlan {
  vm: string;
  state: DomainState;
  changes: UpdateChange[];
  /** a restart is needed for the changes (or for earlier --config changes still waiting) */
  restartNeeded: boolean;
  /** drift this command does not apply, said once each */
  notes: string[];
  /** reasons to refuse the whole update (exit 2, nothing changed) */
  refusals: string[];
}

export interface UpdateFacts {
  state: DomainState;
  /** the inactive definition (what the next boot uses) */
  persistent: LiveDomain;
  /** the running definition, null when shut off */
  live: LiveDomain | null;
  diskBytes: number | null;
  fw: FwStatus | null;
}

const ACTIVE = new Set(["running", "idle", "blocked", "no state", "paused", "pmsuspended", "in shutdown"]);

const run = (argv: string[]): Action => ({ kind: "run", argv });

/** Pure: the changes that bring the domain to the config. */
export function planUpdate(vm: Vm, f: UpdateFacts): UpdatePlan {
  const uri = vm.paths.libvirtUri;
  const v = (...a: string[]) => run(virshArgv(uri, ...a));
  const active = ACTIVE.has(f.state);
  const changes: UpdateChange[] = [];
  const notes: string[] = [];
  const refusals: string[] = [];
  const p = f.persistent;

  // vCPUs: raise the maximum before the count, lower the count before the maximum
  if (p.vcpus !== null && (p.vcpus !== vm.cpus || (p.maxVcpus ?? p.vcpus) !== vm.cpus)) {
    const n = String(vm.cpus);
    const max = v("setvcpus", vm.name, n, "--config", "--maximum");
    const cur = v("setvcpus", vm.name, n, "--config");
    changes.push({ what: "cpus", from: String(p.vcpus), to: n, restart: active, actions: vm.cpus >= (p.maxVcpus ?? p.vcpus) ? [max, cur] : [cur, max] });
  }
  // memory (KiB): raise the maximum first when growing, lower the current first when shrinking
  const kib = vm.memoryMib * 1024;
  if (p.memoryKib !== null && (p.memoryKib !== kib || (p.currentMemoryKib ?? p.memoryKib) !== kib)) {
    const max = v("setmaxmem", vm.name, String(kib), "--config");
    const cur = v("setmem", vm.name, String(kib), "--config");
    changes.push({ what: "memory", from: `${Math.round(p.memoryKib / 1024)} MiB`, to: `${vm.memoryMib} MiB`, restart: active, actions: kib >= p.memoryKib ? [max, cur] : [cur, max] });
  }
  // disk: grow only
  const disk = mainDisk(f.live ?? p);
  const want = vm.diskGib * GIB;
  if (f.diskBytes === null) notes.push("disk: its size could not be read (virsh domblkinfo); not changed");
  else if (f.diskBytes > want) {
    refusals.push(`disk: the config asks for ${vm.diskGib} GiB but the disk is ${fmtGib(f.diskBytes)} GiB; aivm never shrinks a disk (the guest's filesystem ends past the new size and would lose data). Set disk_gib to ${Math.ceil(f.diskBytes / GIB)} or more.`);
  } else if (f.diskBytes < want) {
    if (!disk?.target || (!active && !disk.file)) notes.push("disk: the domain has no disk aivm can identify; not changed");
    else {
      const size = `${vm.diskGib}G`;
      const action = active
        ? v("blockresize", vm.name, disk.target, size)
        : run(["qemu-img", "resize", ...(disk.format ? ["-f", disk.format] : []), disk.file!, size]);
      changes.push({ what: "disk", from: `${fmtGib(f.diskBytes)} GiB`, to: `${vm.diskGib} GiB`, restart: false, actions: [action] });
    }
  }
  // firewall: re-apply the network's table
  if (f.fw && f.fw.enabled && !f.fw.equal) {
    const ports = f.fw.drift.filter((d) => /\bdport\b/.test(d));
    changes.push({ what: "firewall", from: f.fw.present ? `table differs${ports.length ? " (ports)" : ""}` : "table absent", to: `inet ${f.fw.table} as rendered`, restart: false, actions: [] });
  }
  for (const t of virtiofsDrift(vm, p)) notes.push(`virtiofs: ${t} (managed by \`aivm share\`, not by vm update)`);
  const l = f.live;
  const waiting = !!l && ((l.vcpus !== null && p.vcpus !== null && l.vcpus !== p.vcpus) || (l.memoryKib !== null && p.memoryKib !== null && l.memoryKib !== p.memoryKib));
  if (waiting) notes.push("earlier vCPU/memory changes are in the persistent definition and wait for a restart");
  return { vm: vm.name, state: f.state, changes, restartNeeded: changes.some((c) => c.restart) || waiting, notes, refusals };
}

const fmtGib = (b: number) => (Number.isInteger(b / GIB) ? String(b / GIB) : (b / GIB).toFixed(2));

/** The plan as lines for stderr. */
export function describePlan(p: UpdatePlan): string[] {
  const lines = p.changes.map((c) => `- ${c.what}: ${c.from} -> ${c.to}${c.restart ? " (restart needed)" : ""}`);
  for (const n of p.notes) lines.push(`note: ${n}`);
  if (!p.changes.length && !p.restartNeeded) lines.unshift(`nothing to update: ${p.vm} matches the config`);
  return lines;
}

/** Read what the planner needs: state, both definitions, disk capacity, firewall. */
export async function updateFacts(runner: Runner, vm: Vm): Promise<UpdateFacts> {
  const uri = vm.paths.libvirtUri;
  const state = await domainState(runner, uri, vm.name);
  if (state === "absent") throw new AivmError(`vm update ${vm.name}`, "not created: run aivm vm create", EXIT.FAILED);
  const px = await virshRead(runner, uri, ["dumpxml", "--inactive", vm.name]);
  if (px.exitCode !== 0) throw new AivmError(`virsh dumpxml ${vm.name}`, px.stderr.trim().split("\n").pop() || `exited ${px.exitCode}`);
  const persistent = parseDomainXml(px.stdout);
  let live: LiveDomain | null = null;
  if (ACTIVE.has(state)) {
    const lx = await virshRead(runner, uri, ["dumpxml", vm.name]);
    if (lx.exitCode === 0) live = parseDomainXml(lx.stdout);
  }
  const disk = mainDisk(live ?? persistent);
  let diskBytes: number | null = null;
  if (disk?.target) {
    const r = await virshRead(runner, uri, ["domblkinfo", vm.name, disk.target]);
    if (r.exitCode === 0) diskBytes = parseBlkCapacity(r.stdout);
  }
  let fw: FwStatus | null = null;
  try {
    fw = await firewallStatus(runner, vm.network);
  } catch (e) {
    log.warn(`firewall state unknown (${(e as Error).message}); not re-applied`);
  }
  return { state, persistent, live, diskBytes, fw };
}

export interface UpdateResult {
  applied: UpdateChange["what"][];
  restarted: boolean;
  /** a restart is still needed for the changes to reach the guest */
  restartPending: boolean;
  /** the guest's root filesystem was grown online */
  fsGrown?: boolean;
}

/**
 * Apply a plan: refusals first (exit 2, nothing changed), then the libvirt/qemu-img changes as one consent step, the
 * firewall, and the restart by policy: auto asks (or --yes), always restarts, never leaves it pending and says so.
 */
export async function applyUpdate(runner: Runner, vm: Vm, plan: UpdatePlan, o: { restart: RestartPolicy; clock?: Clock }): Promise<UpdateResult> {
  if (plan.refusals.length) throw new UsageError(`vm update ${vm.name}`, plan.refusals.join("; "));
  const result: UpdateResult = { applied: [], restarted: false, restartPending: false };
  const domainChanges = plan.changes.filter((c) => c.actions.length);
  if (domainChanges.length) {
    await runner.step({
      title: `Update VM ${vm.name}: ${domainChanges.map((c) => `${c.what} ${c.from} -> ${c.to}`).join(", ")}`,
      why: domainChanges.some((c) => c.restart) ? "bring the domain to the config (vCPUs and memory take effect at the next start)" : "bring the domain to the config",
      consent: true,
      actions: domainChanges.flatMap((c) => c.actions),
    });
    result.applied.push(...domainChanges.map((c) => c.what));
  }
  if (plan.changes.some((c) => c.what === "firewall")) {
    await applyFirewall(runner, vm.network);
    result.applied.push("firewall");
  }
  const grewLive = domainChanges.some((c) => c.what === "disk") && ACTIVE.has(plan.state);
  if (plan.restartNeeded) {
    let restart = o.restart === "always";
    if (o.restart === "auto" && !runner.dryRun) {
      restart = await runner.confirm(`vm update ${vm.name}`, `Restart ${vm.name} now so the changes take effect (ACPI shutdown, then start)?`).catch((e) => {
        log.warn(`${(e as Error).message}`);
        return false;
      });
    }
    if (o.restart === "auto" && runner.dryRun) restart = runner.yes;
    if (restart && runner.dryRun) {
      await runner.exec(virshArgv(vm.paths.libvirtUri, "shutdown", vm.name, "--mode", "acpi"));
      await runner.exec(virshArgv(vm.paths.libvirtUri, "start", vm.name));
      result.restarted = true;
    } else if (restart) {
      await stopVm(runner, vm, { clock: o.clock });
      await startVm(runner, vm, { clock: o.clock });
      result.restarted = true;
    } else {
      result.restartPending = true;
    }
  }
  if (grewLive && !result.restarted && !runner.dryRun) result.fsGrown = await growGuestFs(runner, vm);
  return result;
}

/** The guest command that grows an ext4 root filesystem lying on the whole /dev/vda (a partitioned disk is left to cloud-init's growpart at the next boot). */
export const GROW_FS = `src=$(findmnt -n -o SOURCE /); fs=$(findmnt -n -o FSTYPE /); if [ "$src" = /dev/vda ] && [ "$fs" = ext4 ]; then sudo -n resize2fs /dev/vda >/dev/null 2>&1 && echo grown || echo failed; else echo "skip $src $fs"; fi`;

/** Best effort, after a live blockresize: grow the root filesystem over SSH. Never fails the update. */
export async function growGuestFs(runner: Runner, vm: Vm): Promise<boolean> {
  try {
    const ip = await vmIp(runner, vm);
    if (!ip) return false;
    const r = await runner.read(sshArgv(vm, ip, { batch: true, connectTimeoutS: 5, command: [GROW_FS] }), { nothrow: true, timeoutMs: 60_000 });
    const word = r.stdout.trim();
    if (word === "grown") return true;
    log.info(word.startsWith("skip") ? `the guest's root is not ext4 on the whole /dev/vda (${word.slice(5)}): cloud-init grows it at the next boot` : `could not grow the guest filesystem online (${word || r.stderr.trim().split("\n").pop()}); cloud-init grows it at the next boot`);
  } catch (e) {
    log.info(`could not grow the guest filesystem online: ${(e as Error).message}`);
  }
  return false;
}
