// The guest's address and the wait for it: IP (DHCP lease) -> SSH (pinned host key) -> cloud-init.
import { existsSync } from "node:fs";
import type { Runner } from "../run.ts";
import type { Vm } from "../config/model.ts";
import { macAddress } from "../domain.ts";
import { domainState, RUNNING, virshRead, type DomainState } from "../libvirt/virsh.ts";
import { leaseIp, parseDomifaddr } from "../libvirt/parse.ts";
import { cachedIp, vmFiles } from "./files.ts";
import { realClock, Clock } from "./power.ts";
import { AivmError, EXIT, lastLine } from "../errors.ts";
import { sshArgv } from "../ssh-config.ts";
import { log } from "../log.ts";
import { CLOUD_INIT_PROBE, cloudInitVerdict, cloudInitWaitScript } from "../guest-probe.ts";

/** The VM's IPv4: its DHCP lease (by MAC), else libvirt's domifaddr. Cached in <dir>/ip. */
export async function vmIp(runner: Runner, vm: Vm): Promise<string | null> {
  const uri = vm.paths.libvirtUri;
  const mac = macAddress(vm.name);
  let ip: string | null = null;
  const leases = await virshRead(runner, uri, ["net-dhcp-leases", vm.network.name, "--mac", mac]);
  if (leases.exitCode === 0) ip = leaseIp(leases.stdout, mac);
  if (!ip) {
    const r = await virshRead(runner, uri, ["domifaddr", vm.name, "--source", "lease"]);
    if (r.exitCode === 0) ip = parseDomifaddr(r.stdout, mac);
  }
  if (ip && !runner.dryRun && cachedIp(vm) !== ip && existsSync(vm.dir)) {
    try {
      await runner.writeFile(vmFiles(vm).ipCache, ip + "\n", 0o644);
    } catch {}
  }
  return ip;
}

export const WAIT_STAGES = {
  ip: "an IP address (DHCP lease)",
  ssh: "SSH (pinned host key)",
  cloudInit: "cloud-init to finish",
} as const;

/**
 * IP -> SSH -> cloud-init finished, with progress on stderr every ~5 s and a timeout naming the stuck stage.
 * `known.ip` (the VM is running and has this address, as a caller already read) skips the IP stage. SSH and
 * cloud-init share one ssh session: the guest reads cloud-init's result files, and when cloud-init is still
 * running it waits for them in a shell loop; no Python is started in the guest and no handshake is made per poll.
 */
export async function waitVm(runner: Runner, vm: Vm, o: { timeoutS?: number; clock?: Clock; until?: "ip" | "ssh" | "cloud-init"; known?: { ip: string } } = {}): Promise<{ ip: string }> {
  const clock = o.clock ?? realClock;
  const uri = vm.paths.libvirtUri;
  const timeoutS = o.timeoutS ?? vm.waitTimeoutS;
  const t0 = clock.now();
  const deadline = t0 + timeoutS * 1000;
  let stage: string = WAIT_STAGES.ip;
  let last = "";
  let lastNote = t0;
  const secs = () => Math.round((clock.now() - t0) / 1000);
  const timedOut = () =>
    new AivmError(`vm wait ${vm.name}`, `timed out after ${timeoutS}s waiting for ${stage}${last ? ` (last: ${last})` : ""}`, EXIT.FAILED, `see what the guest printed: aivm vm console-log --vm ${vm.name}`);
  const checkRunning = async () => {
    const s = await domainState(runner, uri, vm.name);
    if (s === "absent") throw new AivmError(`vm wait ${vm.name}`, "not created: run aivm vm create");
    if (!RUNNING.has(s) && s !== "in shutdown") throw new AivmError(`vm wait ${vm.name}`, `the VM is ${s}, not running`, EXIT.FAILED, "start it with `aivm vm up`");
  };
  /** true every ~5 s: print progress, and tell the caller to run its slower checks */
  const tick = (): boolean => {
    const now = clock.now();
    if (now - lastNote < 5000) return false;
    lastNote = now;
    log.info(`${vm.name}: waiting for ${stage} (${secs()}s)`);
    return true;
  };

  let ip: string | null = o.known?.ip ?? null;
  if (!ip) {
    await checkRunning();
    for (;;) {
      ip = await vmIp(runner, vm);
      if (ip) break;
      if (clock.now() >= deadline) throw timedOut();
      if (tick()) await checkRunning();
      await clock.sleep(500);
    }
    log.debug(`${vm.name}: IP ${ip} after ${secs()}s`);
  }
  if (o.until === "ip") return { ip };

  stage = WAIT_STAGES.ssh;
  for (;;) {
    const waitS = o.until === "ssh" ? 0 : Math.max(1, Math.floor((deadline - clock.now()) / 1000) - 5);
    const command = [o.until === "ssh" ? "true" : waitS > 1 ? cloudInitWaitScript(waitS) : CLOUD_INIT_PROBE];
    const note = setInterval(() => log.info(`${vm.name}: waiting for ${stage} (${secs()}s)`), 5000);
    let r;
    try {
      r = await runner.read(sshArgv(vm, ip, { batch: true, connectTimeoutS: 5, command }), { nothrow: true, timeoutMs: (waitS + 15) * 1000 });
    } finally {
      clearInterval(note);
    }
    if (r.exitCode === 0) {
      if (o.until === "ssh") return { ip };
      const ci = cloudInitVerdict(r.stdout);
      if (ci.state === "done") break;
      if (ci.state === "error") {
        log.warn(`cloud-init reported an error in ${vm.name}: ${ci.errors[0] ?? "see the guest"}; see \`aivm vm ssh -- cloud-init status --long\``);
        break;
      }
      stage = WAIT_STAGES.cloudInit; // SSH answers; cloud-init has not finished yet
      last = ci.state === "running" ? "cloud-init is running" : "cloud-init has not started";
    } else {
      last = lastLine(r.stderr) || `ssh exited ${r.exitCode}`;
    }
    if (clock.now() >= deadline) throw timedOut();
    if (tick() && stage === WAIT_STAGES.ssh) {
      await checkRunning();
      ip = (await vmIp(runner, vm)) ?? ip; // a renewed lease may have moved it
    }
    await clock.sleep(500);
  }
  log.debug(`${vm.name}: cloud-init finished after ${secs()}s`);
  return { ip };
}

export interface VmStatus {
  name: string;
  state: DomainState;
  network: string;
  ip: string | null;
}

export async function vmStatus(runner: Runner, vm: Vm): Promise<VmStatus> {
  const state = await domainState(runner, vm.paths.libvirtUri, vm.name);
  const ip = RUNNING.has(state) ? await vmIp(runner, vm) : null;
  return { name: vm.name, state, network: vm.network.name, ip };
}

/** The VM's address, or an error saying why there is none (not created, not running, no lease yet). */
export async function requireIp(runner: Runner, vm: Vm): Promise<string> {
  const ip = await vmIp(runner, vm);
  if (ip) return ip;
  const s = await domainState(runner, vm.paths.libvirtUri, vm.name);
  if (s === "absent") throw new AivmError(`vm ${vm.name}`, "not created: run aivm vm create");
  if (s !== "running") throw new AivmError(`vm ${vm.name}`, `the VM is ${s}, so it has no IP address`, EXIT.FAILED, "start it with `aivm vm up`");
  throw new AivmError(`vm ${vm.name}`, "no IP address yet (no DHCP lease)", EXIT.FAILED, "wait for it with `aivm vm ip --wait` or `aivm vm wait`");
}
