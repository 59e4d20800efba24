// `aivm up`: the single-job steps in order. A list of calls, not a second implementation of them.

import type { StoreDoc, Vm } from "../config/model.ts";
import { recordVm } from "../config/resolve.ts";
import { updateStore } from "../config/store.ts";
import { applyFirewall } from "../fw.ts";
import { ensureNetwork } from "../net.ts";
import type { Runner } from "../run.ts";
import { upsertSshConfig } from "../ssh-config.ts";
import { ensureVm } from "../vm/create.ts";
import { withVmLock } from "../vm/files.ts";
import { waitVm } from "../vm/ip.ts";
import { log } from "../log.ts";
import { ensureImage } from "../image-fetch.ts";
import { vmFacts } from "../libvirt/facts.ts";
import { AivmError, UnavailableError } from "../errors.ts";
import { startWithBinds } from "./power.ts";


export interface UpReport {
  vm: string;
  ip: string | null;
  network: string;
  changes: { network: string; firewall: string; image: string; store: string; vm: string; state: string; sshConfig: string };
  changed: boolean;
}

/**
 * Bring the VM up, each job only when needed. Reads first, in one virsh process: an unreachable libvirtd (exit 69)
 * or a checksum mismatch leaves libvirt, nftables and the store as they were. On a running, unchanged VM this is one
 * virsh process, one nft read and one ssh session.
 */
export async function up(runner: Runner, configPath: string, doc: StoreDoc, vm: Vm, opts: { sshConfigFile?: string } = {}): Promise<UpReport> {
  return withVmLock(vm, async () => {
    const facts = await vmFacts(runner, vm);
    if (!facts.reachable) throw new UnavailableError("libvirt", facts.error ?? `cannot reach libvirtd at ${vm.paths.libvirtUri}`, "start libvirtd (and virtlogd), or set [defaults.paths] libvirt_uri; `aivm doctor` checks the host");
    if (facts.state === null) throw new AivmError(`up ${vm.name}`, facts.error ?? "libvirt did not say what state the VM is in");
    const { fetched } = await ensureImage(runner, vm.paths, vm.image);
    const network = await ensureNetwork(runner, vm.paths.libvirtUri, vm.network, facts.network);
    const firewall = await applyFirewall(runner, vm.network);
    let store = "unchanged";
    if (!vm.recorded) {
      const { wrote } = updateStore(configPath, (d) => recordVm(d, vm), { dryRun: runner.dryRun });
      if (wrote) store = "recorded";
    }
    const created = await ensureVm(runner, vm, { uuid: facts.uuid });
    // a domain only printed under --dry-run is not there to read: it would be shut off once defined
    const state = await startWithBinds(runner, configPath, vm, created === "created" ? (runner.dryRun ? { state: "shut off" } : {}) : { state: facts.state });
    let ip: string | null = null;
    let sshConfig = "skipped (dry run)";
    if (!runner.dryRun) {
      const known = state === "unchanged" && network === "unchanged" && facts.ip ? { ip: facts.ip } : undefined;
      ({ ip } = await waitVm(runner, vm, known ? { known } : {}));
      sshConfig = await upsertSshConfig(runner, vm, ip, opts.sshConfigFile);
    }
    const changes = { network, firewall, image: fetched ? "fetched" : "cached", store, vm: created, state, sshConfig };
    const changed = network !== "unchanged" || firewall === "applied" || fetched || store !== "unchanged" || created !== "unchanged" || state !== "unchanged" || sshConfig === "written";
    return { vm: vm.name, ip, network: vm.network.name, changes, changed };
  }, { dryRun: runner.dryRun, what: "up" });
}

export function describeUp(r: UpReport): string[] {
  const c = r.changes;
  const lines = [
    `network ${r.network}: ${c.network}`,
    `firewall: ${c.firewall}`,
    `image: ${c.image}`,
    `vm ${r.vm}: ${c.vm}, ${c.state}`,
    `ssh config: ${c.sshConfig}`,
  ];
  if (c.store !== "unchanged") lines.push(`config: ${c.store} ${r.vm}`);
  lines.push(r.changed ? `ready: ${r.vm} at ${r.ip ?? "(dry run)"}; connect with \`ssh ${r.vm}\` or \`aivm vm ssh\`` : `nothing changed: ${r.vm} is already up at ${r.ip}`);
  return lines;
}

export function logUp(r: UpReport): void {
  for (const l of describeUp(r)) log.info(l);
}
