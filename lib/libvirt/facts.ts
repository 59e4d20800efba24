// Asking libvirt several things at once: one virsh process runs every read a command needs (one start, one
// connection), and the answers come back split per command. `vmFacts` is the whole picture of one VM and its network.
import type { Vm } from "../config/model.ts";
import { macAddress } from "../domain.ts";
import { lastLine, UnavailableError } from "../errors.ts";
import type { Runner } from "../run.ts";
import { leaseIp, parseBlkinfoAll, parseDomainXml, parseDomifaddr, parseKeyValues, parseLeases, parseNetworkXml, type Lease, type LiveDomain, type LiveNetConfig } from "./parse.ts";
import { ACTIVE, NO_DOMAIN, UNREACHABLE, virshArgv, type DomainState } from "./virsh.ts";

/** An argument for virsh's own command-line parser (the one that reads `cmd a; cmd b`). */
function virshWord(a: string): string {
  return /^[A-Za-z0-9_.:/@=+,-]+$/.test(a) ? a : `'${a.replaceAll("'", `'\\''`)}'`;
}

export interface BatchResult {
  /** each command's stdout, in order ("" when it printed nothing or failed) */
  outputs: string[];
  /** every error line virsh printed, for all commands together */
  stderr: string;
}

/**
 * Run read-only virsh commands in one process: `virsh -q -c URI 'a; echo SEP; b; ...'`. virsh runs each command even
 * when an earlier one failed. An unreachable libvirtd is exit 69, as for a single call.
 */
export async function virshBatch(runner: Runner, uri: string, cmds: string[][]): Promise<BatchResult> {
  const sep = `AIVMSEP${Math.random().toString(36).slice(2, 10)}`;
  const script = cmds.map((c) => c.map(virshWord).join(" ")).join(` ; echo ${sep} ; `);
  const r = await runner.read(virshArgv(uri, script), { nothrow: true, what: "virsh" });
  if (r.exitCode !== 0 && UNREACHABLE.test(r.stderr) && !r.stdout.split(sep).some((o) => o.trim())) {
    const sock = /socket to '([^']+)'/.exec(r.stderr)?.[1];
    throw new UnavailableError("libvirt", `cannot reach libvirtd at ${uri}${sock ? ` (socket ${sock})` : ""}`, "start libvirtd (and virtlogd), or set [defaults.paths] libvirt_uri; `aivm doctor` checks the host");
  }
  const outputs = r.stdout.split(sep).map((s) => s.replace(/^\n/, ""));
  while (outputs.length < cmds.length) outputs.push("");
  return { outputs: outputs.slice(0, cmds.length), stderr: r.stderr };
}

export interface VmFacts {
  /** libvirtd answered */
  reachable: boolean;
  /** why not, when it did not */
  error?: string;
  daemonVersion?: string;
  state: DomainState | null;
  uuid: string | null;
  /** the inactive definition (what the next boot uses); null when there is no domain */
  persistent: LiveDomain | null;
  /** the running definition; null when not running */
  live: LiveDomain | null;
  /** block device target -> capacity in bytes */
  disks: Map<string, number>;
  network: { defined: boolean; active: boolean; persistent: boolean; autostart: boolean; bridge?: string; xml: LiveNetConfig | null };
  leases: Lease[];
  /** the VM's IPv4 from its lease (by the MAC aivm gives it, or the domain's own MAC for an imported VM) */
  ip: string | null;
}


/** Everything aivm reads about a VM and its network, in one virsh process. `domain: false` skips the domain questions. */
export async function vmFacts(runner: Runner, vm: Vm, o: { domain?: boolean } = {}): Promise<VmFacts> {
  const net = vm.network.name;
  const withDomain = o.domain !== false;
  const cmds: string[][] = [["version", "--daemon"], ["net-info", net], ["net-dumpxml", net], ["net-dhcp-leases", net]];
  if (withDomain) cmds.push(["domstate", vm.name], ["domuuid", vm.name], ["dumpxml", "--inactive", vm.name], ["dumpxml", vm.name], ["domblkinfo", vm.name, "--all"], ["domifaddr", vm.name, "--source", "lease"]);
  const empty: VmFacts = { reachable: false, state: null, uuid: null, persistent: null, live: null, disks: new Map(), network: { defined: false, active: false, persistent: false, autostart: false, xml: null }, leases: [], ip: null };
  let b: BatchResult;
  try {
    b = await virshBatch(runner, vm.paths.libvirtUri, cmds);
  } catch (e) {
    // the bare reason (an AivmError's message repeats its "libvirt:" prefix, which callers add themselves)
    return { ...empty, error: (e as { why?: string }).why ?? (e as Error).message };
  }
  const [version, netInfo, netXml, leases, domstate, uuid, pxml, lxml, blk, ifaddr] = b.outputs;
  const kv = parseKeyValues(netInfo!);
  const facts: VmFacts = {
    ...empty,
    reachable: true,
    ...(version!.trim() ? { daemonVersion: version!.trim() } : {}),
    network: {
      defined: !!netInfo!.trim(),
      active: kv.active === "yes",
      persistent: kv.persistent === "yes",
      autostart: kv.autostart === "yes",
      ...(kv.bridge ? { bridge: kv.bridge } : {}),
      xml: netXml!.trim() ? parseNetworkXml(netXml!) : null,
    },
    leases: parseLeases(leases!),
  };
  if (!withDomain) return facts;
  const state = domstate!.trim().split("\n")[0]!.trim();
  if (!state) {
    const why = NO_DOMAIN.test(b.stderr) ? null : lastLine(b.stderr);
    if (why) return { ...facts, error: why };
    return { ...facts, state: "absent" };
  }
  const persistent = pxml!.trim() ? parseDomainXml(pxml!) : null;
  const live = ACTIVE.has(state) && lxml!.trim() ? parseDomainXml(lxml!) : null;
  // an imported VM's MAC is its own, not the one aivm derives from the name
  const mac = vm.imported ? (persistent?.interfaces.find((i) => i.network === net)?.mac ?? persistent?.interfaces[0]?.mac ?? macAddress(vm.name)) : macAddress(vm.name);
  const ip = ACTIVE.has(state) ? (leaseIp(leases!, mac) ?? parseDomifaddr(ifaddr!, mac)) : null;
  return { ...facts, state, uuid: uuid!.trim() || null, persistent, live, disks: parseBlkinfoAll(blk!), ip };
}
