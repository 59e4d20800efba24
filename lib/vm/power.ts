// Start, stop and delete a domain: the state machines on libvirt, with ACPI shutdown and a timeout.
import type { Runner } from "../run.ts";
import type { Vm } from "../config/model.ts";
import { DomainState, domainState, NO_DOMAIN, RUNNING, virshExec } from "../libvirt/virsh.ts";
import { AivmError, EXIT, lastLine } from "../errors.ts";
import { checkVmDir, isFreshDir, vmFiles } from "./files.ts";
import { log } from "../log.ts";

export interface Clock {
  now(): number;
  sleep(ms: number): Promise<void>;
}

export const realClock: Clock = { now: () => Date.now(), sleep: (ms) => Bun.sleep(ms) };

/**
 * Start, resume or wake the domain; a running one is left alone. `beforeStart` runs just before a cold start (the
 * flow restores the host binds of saved folders there: virtiofsd must find them when it starts).
 */
export async function startVm(runner: Runner, vm: Vm, o: { clock?: Clock; beforeStart?: () => Promise<unknown>; state?: DomainState } = {}): Promise<"started" | "resumed" | "unchanged"> {
  const clock = o.clock ?? realClock;
  const uri = vm.paths.libvirtUri;
  let state = o.state ?? (await domainState(runner, uri, vm.name));
  if (state === "in shutdown") {
    log.info(`${vm.name} is shutting down; waiting for it to stop before starting it again`);
    for (let i = 0; i < 30 && state === "in shutdown"; i++) {
      await clock.sleep(1000);
      state = await domainState(runner, uri, vm.name);
    }
    if (state === "in shutdown") throw new AivmError(`vm up ${vm.name}`, "still shutting down after 30 s", EXIT.FAILED, "try again, or `aivm vm down` to force it off");
  }
  switch (state) {
    case "absent":
      throw new AivmError(`vm up ${vm.name}`, "not created: run aivm vm create", EXIT.FAILED);
    case "paused":
      await virshExec(runner, uri, ["resume", vm.name]);
      return "resumed";
    case "pmsuspended":
      await virshExec(runner, uri, ["dompmwakeup", vm.name]);
      return "resumed";
    case "crashed":
      await o.beforeStart?.();
      // on_crash=preserve keeps a crashed domain active: clear it before starting afresh
      await virshExec(runner, uri, ["destroy", vm.name], { nothrow: true });
      await virshExec(runner, uri, ["start", vm.name]);
      return "started";
    case "shut off":
      await o.beforeStart?.();
      await virshExec(runner, uri, ["start", vm.name], { what: `start ${vm.name}` }).catch((e) => {
        if (e instanceof AivmError && /network .* is not active/i.test(e.why)) {
          throw new AivmError(e.what, e.why, e.exitCode, `aivm net create ${vm.network.name}`);
        }
        throw e;
      });
      return "started";
    default:
      if (RUNNING.has(state)) return "unchanged";
      throw new AivmError(`vm up ${vm.name}`, `cannot start from state "${state}"`);
  }
}

/** ACPI shutdown, polled each second; forced off (`destroy`) only after vm.shutdownTimeoutS, saying so. */
export async function stopVm(runner: Runner, vm: Vm, o: { clock?: Clock; timeoutS?: number } = {}): Promise<"stopped" | "forced" | "unchanged"> {
  const clock = o.clock ?? realClock;
  const uri = vm.paths.libvirtUri;
  const timeoutS = o.timeoutS ?? vm.shutdownTimeoutS;
  const state = await domainState(runner, uri, vm.name);
  if (state === "absent") {
    log.info(`${vm.name} is not created; nothing to stop`);
    return "unchanged";
  }
  if (state === "shut off" || state === "crashed") return "unchanged";
  if (state === "paused") await virshExec(runner, uri, ["resume", vm.name]);
  if (state === "pmsuspended") await virshExec(runner, uri, ["dompmwakeup", vm.name]);
  await virshExec(runner, uri, ["shutdown", vm.name, "--mode", "acpi"]);
  if (runner.dryRun) return "stopped";
  const t0 = clock.now();
  let lastNote = t0;
  let lastPress = t0;
  for (;;) {
    await clock.sleep(1000);
    const s = await domainState(runner, uri, vm.name);
    if (s === "shut off" || s === "absent") return "stopped";
    const now = clock.now();
    if (now - t0 >= timeoutS * 1000) break;
    if (now - lastNote >= 5000) {
      lastNote = now;
      log.info(`waiting for ${vm.name} to shut down (${Math.round((now - t0) / 1000)}s of ${timeoutS}s)`);
    }
    // a guest still booting may miss the first ACPI event: press the button again every 10 s
    if (s === "running" && now - lastPress >= 10_000) {
      lastPress = now;
      await virshExec(runner, uri, ["shutdown", vm.name, "--mode", "acpi"], { nothrow: true });
    }
  }
  log.warn(`${vm.name} did not shut down within ${timeoutS}s after the ACPI request: forcing it off (virsh destroy)`);
  await virshExec(runner, uri, ["destroy", vm.name]);
  return "forced";
}

/** The undefine flag sets to try, most thorough first; older libvirt rejects the newer flags. */
export const UNDEFINE_ATTEMPTS: string[][] = [
  ["--nvram", "--managed-save", "--snapshots-metadata", "--checkpoints-metadata"],
  ["--nvram", "--managed-save", "--snapshots-metadata"],
  ["--nvram", "--managed-save"],
  ["--nvram"],
  [],
];

const FLAG_REJECTED = /unsupported flag|not supported|doesn't support option|unknown option|does not support|no such option/i;

/**
 * Force off, undefine (with the flag fallbacks older libvirt needs), then remove vm.dir and nothing outside it.
 * `beforeRemove` runs before the directory is removed (the flow releases the folder binds under it there).
 */
export async function deleteVm(runner: Runner, vm: Vm, o: { beforeRemove?: () => Promise<unknown> } = {}): Promise<"deleted" | "absent"> {
  checkVmDir(vm);
  const uri = vm.paths.libvirtUri;
  const f = vmFiles(vm);
  const state = await domainState(runner, uri, vm.name);
  const hasDir = runner.host.exists(f.dir);
  // a directory holding only the lock file (taken by this very command) is no VM
  if (state === "absent" && (!hasDir || isFreshDir(runner.host, f))) {
    log.info(`${vm.name} does not exist; nothing to delete`);
    return "absent";
  }
  if (!runner.dryRun && !(await runner.confirm(`vm delete ${vm.name}`, `Delete VM ${vm.name}: force it off, undefine it and remove ${f.dir}?`))) {
    throw new AivmError(`vm delete ${vm.name}`, "not approved");
  }
  if (state !== "absent") {
    if (state !== "shut off") await virshExec(runner, uri, ["destroy", vm.name], { nothrow: true });
    let done = false;
    // an imported VM's nvram lives outside vm.dir and is not aivm's to remove
    const attempts = vm.imported ? UNDEFINE_ATTEMPTS.map((a) => a.filter((f) => f !== "--nvram")).filter((a, i, all) => all.findIndex((b) => b.join() === a.join()) === i) : UNDEFINE_ATTEMPTS;
    for (const flags of attempts) {
      const r = await virshExec(runner, uri, ["undefine", vm.name, ...flags], { nothrow: true });
      if (r.exitCode === 0) { done = true; break; }
      if (NO_DOMAIN.test(r.stderr)) { done = true; break; }
      if (!FLAG_REJECTED.test(r.stderr)) throw new AivmError(`virsh undefine ${vm.name}`, lastLine(r.stderr) || `exited ${r.exitCode}`);
      log.debug(`virsh undefine ${flags.join(" ")} rejected: ${lastLine(r.stderr)}; retrying with fewer flags`);
    }
    if (!done) throw new AivmError(`virsh undefine ${vm.name}`, "every flag combination was rejected");
  }
  // the export root holds bind mounts of host folders: unmount them before anything under vm.dir is removed
  if (hasDir) await o.beforeRemove?.();
  if (hasDir) await runner.remove(f.dir);
  return "deleted";
}
