// `aivm vm update`: read the facts, apply the plan through the Runner, restart by policy, grow the guest filesystem.

import type { Vm } from "../config/model.ts";
import { AivmError, EXIT, lastLine, UnavailableError, UsageError } from "../errors.ts";
import { applyFirewall, firewallStatus } from "../fw.ts";
import { mainDisk } from "../libvirt/parse.ts";
import { ACTIVE, virshArgv } from "../libvirt/virsh.ts";
import type { Runner } from "../run.ts";
import { type RestartPolicy, type UpdateChange, UpdateFacts, type UpdatePlan } from "../vm/update-plan.ts";
import { stopVm, type Clock } from "../vm/power.ts";
import { startWithBinds } from "./power.ts";
import { withVmLock } from "../vm/files.ts";
import { describePlan, planUpdate } from "../vm/update-plan.ts";
import { vmIp } from "../vm/ip.ts";
import { sshArgv } from "../ssh-config.ts";
import { log } from "../log.ts";
import { vmFacts } from "../libvirt/facts.ts";


/** Read what the planner needs (state, both definitions, disk capacity: one virsh process; the firewall beside it). */
export async function updateFacts(runner: Runner, vm: Vm): Promise<UpdateFacts> {
  const [f, fw] = await Promise.all([vmFacts(runner, vm), firewallStatus(runner, vm.network).catch((e: Error) => e)]);
  if (!f.reachable) throw new UnavailableError("libvirt", f.error ?? `cannot reach libvirtd at ${vm.paths.libvirtUri}`, "start libvirtd (and virtlogd); `aivm doctor` checks the host");
  if (f.state === "absent") throw new AivmError(`vm update ${vm.name}`, "not created: run aivm vm create", EXIT.FAILED);
  if (f.state === null || !f.persistent) throw new AivmError(`virsh dumpxml ${vm.name}`, f.error ?? "the domain definition could not be read");
  if (fw instanceof Error) log.warn(`firewall state unknown (${fw.message}); not re-applied`);
  const disk = mainDisk(f.live ?? f.persistent);
  const diskBytes = disk?.target ? (f.disks.get(disk.target) ?? null) : null;
  return { state: f.state, persistent: f.persistent, live: f.live, diskBytes, fw: fw instanceof Error ? null : fw };
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
export async function applyUpdate(runner: Runner, vm: Vm, plan: UpdatePlan, o: { restart: RestartPolicy; configPath: string; clock?: Clock }): Promise<UpdateResult> {
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
      await startWithBinds(runner, o.configPath, vm, { clock: o.clock });
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
    log.info(word.startsWith("skip") ? `the guest's root is not ext4 on the whole /dev/vda (${word.slice(5)}): cloud-init grows it at the next boot` : `could not grow the guest filesystem online (${word || lastLine(r.stderr)}); cloud-init grows it at the next boot`);
  } catch (e) {
    log.info(`could not grow the guest filesystem online: ${(e as Error).message}`);
  }
  return false;
}

/** `aivm vm update`: read, plan (shown on stderr), apply, under the per-VM lock. */
export async function vmUpdate(runner: Runner, configPath: string, vm: Vm, policy: RestartPolicy, show: (lines: string[]) => void): Promise<UpdateResult> {
  return withVmLock(vm, async () => {
    const plan = planUpdate(vm, await updateFacts(runner, vm));
    show(describePlan(plan));
    return applyUpdate(runner, vm, plan, { restart: policy, configPath });
  }, { dryRun: runner.dryRun, what: "vm update", create: false });
}
