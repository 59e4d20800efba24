// Host detection for `config init`: SSH identity, a free subnet, CPU/RAM/disk tiers, the pinned base image.
// Pure parts (route parsing, subnet choice, tiers, the [defaults] document) are separate from the reads.
import { existsSync, statfsSync } from "node:fs";
import { cpus as osCpus, hostname, totalmem } from "node:os";
import { dirname, join } from "node:path";
import { parseCidr, Cidr, cidrsOverlap, intToIpv4 } from "./validate.ts";
import { parseRoutes } from "./net.ts";
import { BUILTIN, builtinPaths, DEFAULT_BLOCK_CIDRS, defaultVmName, StoreDoc, UBUNTU_2404 } from "./config/model.ts";
import type { Runner } from "./run.ts";
import { expandHome } from "./fsutil.ts";

const GiB = 1024 ** 3;

// ---------- routes and subnets ----------

/** The destinations of `ip -4 route` output as CIDRs (default routes skipped; a bare address is a /32). */
export function routeCidrs(text: string): Cidr[] {
  return parseRoutes(text).map((r) => r.cidr);
}

/** Preferred /24s, in order: 10.77-10.99.0.0/24, then 192.168.177-199.0/24. */
export const SUBNET_CANDIDATES: string[] = [
  ...Array.from({ length: 23 }, (_, i) => `10.${77 + i}.0.0/24`),
  ...Array.from({ length: 23 }, (_, i) => `192.168.${177 + i}.0/24`),
];

/** The first candidate that overlaps no route and no network already in use; undefined when all are taken. */
export function chooseSubnet(routes: Cidr[], taken: string[], candidates = SUBNET_CANDIDATES): string | undefined {
  const used = [...routes, ...taken.map((t) => parseCidr(t)).filter((c): c is Cidr => !!c)];
  return candidates.find((c) => {
    const cidr = parseCidr(c)!;
    return !used.some((u) => cidrsOverlap(cidr, u));
  });
}

/** Subnets of the networks in the store (recorded [[networks]]). */
export function storeSubnets(doc: StoreDoc): string[] {
  return (doc.networks ?? []).map((n) => n.subnet).filter((s): s is string => typeof s === "string");
}

// ---------- resources ----------

export const clamp = (v: number, lo: number, hi: number): number => Math.min(hi, Math.max(lo, v));

/** Half the host's CPUs, 1 to 8. */
export function cpuTier(hostCpus: number): number {
  return clamp(Math.floor(hostCpus / 2), 1, 8);
}

/** MiB for the VM by host RAM (bytes): <8 GiB 2048, <16 GiB 4096, else 8192. */
export function memoryTier(hostBytes: number): number {
  if (hostBytes < 8 * GiB) return 2048;
  if (hostBytes < 16 * GiB) return 4096;
  return 8192;
}

/** GiB for the VM disk by free space (bytes) where VMs live: <80 GiB free 20, else 40. */
export function diskTier(freeBytes: number): number {
  return freeBytes < 80 * GiB ? 20 : 40;
}

/** The nearest existing directory at or above `path` (statfs needs one). */
export function nearestExisting(path: string, exists: (p: string) => boolean = existsSync): string {
  let p = path;
  while (!exists(p)) {
    const up = dirname(p);
    if (up === p) return p;
    p = up;
  }
  return p;
}

export function freeBytes(path: string): number | undefined {
  try {
    const s = statfsSync(nearestExisting(path));
    return Number(s.bavail) * Number(s.bsize);
  } catch {
    return undefined;
  }
}

// ---------- SSH identity ----------

export const IDENTITY_CANDIDATES = ["id_aivm_ed25519", "id_ed25519", "id_rsa"];
export const NEW_IDENTITY = "id_aivm_ed25519";

/** The first existing private key (with its .pub) in ~/.ssh, as a path; undefined when none. */
export function findIdentity(home: string, exists: (p: string) => boolean = existsSync): string | undefined {
  for (const name of IDENTITY_CANDIDATES) {
    const p = join(home, ".ssh", name);
    if (exists(p) && exists(p + ".pub")) return p;
  }
  return undefined;
}

/** The argv that creates the aivm key (no passphrase: agents log in unattended). */
export function sshKeygenArgv(path: string, host = hostname()): string[] {
  return ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", `aivm@${host.split(".")[0] || "host"}`, "-f", path];
}

/** ~/x for paths under home (the store stays portable across users' home paths). */
export function tildePath(p: string, home: string): string {
  const h = home.replace(/\/+$/, "");
  if (!h) return p;
  if (p === h) return "~";
  return p.startsWith(h + "/") ? "~/" + p.slice(h.length + 1) : p;
}

// ---------- the whole detection ----------

export interface DetectFacts {
  home: string;
  hostname: string;
  cpus: number;
  memBytes: number;
  /** free bytes where VMs live; undefined when unknown */
  freeBytes: number | undefined;
  /** `ip -4 route` output */
  routes: string;
  exists: (p: string) => boolean;
}

export interface Detected {
  vmName: string;
  networkName: string;
  subnet: string;
  cpus: number;
  memoryMib: number;
  diskGib: number;
  image: { url: string; sha256: string };
  /** the private key path (absolute) */
  sshIdentity: string;
  /** the key does not exist yet and should be created */
  createIdentity: boolean;
  paths: { vm_root: string; image_cache: string; libvirt_uri: string };
  /** why a value might not fit (low disk, no free subnet ...) */
  warnings: string[];
  /** where each value came from, for the review table */
  sources: Record<string, string>;
}

export interface DetectOptions {
  image?: { url: string; sha256: string };
}

/** Pure: host facts + the current store -> the values `config init` proposes. */
export function detectFrom(facts: DetectFacts, doc: StoreDoc, opts: DetectOptions = {}): Detected {
  const warnings: string[] = [];
  const routes = routeCidrs(facts.routes);
  const subnet = chooseSubnet(routes, storeSubnets(doc));
  if (!subnet) warnings.push("every preferred /24 overlaps a route or a network in the store; using 10.77.0.0/24 (edit defaults.network.subnet)");
  const identity = findIdentity(facts.home, facts.exists);
  const builtin = builtinPaths();
  const disk = facts.freeBytes === undefined ? BUILTIN.vm.disk_gib : diskTier(facts.freeBytes);
  if (facts.freeBytes !== undefined && facts.freeBytes < disk * GiB) {
    warnings.push(`only ${(facts.freeBytes / GiB).toFixed(1)} GiB free for VM disks (the overlay grows up to ${disk} GiB)`);
  }
  return {
    vmName: doc.defaults?.vm?.name ?? defaultVmName(facts.hostname),
    networkName: doc.defaults?.network?.name ?? BUILTIN.network.name,
    subnet: subnet ?? BUILTIN.network.subnet,
    cpus: cpuTier(facts.cpus),
    memoryMib: memoryTier(facts.memBytes),
    diskGib: disk,
    image: opts.image ?? { url: UBUNTU_2404.url, sha256: UBUNTU_2404.sha256 },
    sshIdentity: identity ?? join(facts.home, ".ssh", NEW_IDENTITY),
    createIdentity: !identity,
    paths: { vm_root: builtin.vm_root, image_cache: builtin.image_cache, libvirt_uri: builtin.libvirt_uri },
    warnings,
    sources: {
      subnet: subnet ? `first /24 free of ${routes.length} route(s) and ${storeSubnets(doc).length} network(s)` : "fallback",
      cpus: `host has ${facts.cpus}`,
      memory: `host has ${(facts.memBytes / GiB).toFixed(1)} GiB`,
      disk: facts.freeBytes === undefined ? "free space unknown" : `${(facts.freeBytes / GiB).toFixed(1)} GiB free`,
      ssh: identity ? "existing key" : "will be created",
      image: opts.image ? "--image-url" : "Ubuntu 24.04, pinned",
    },
  };
}

/** Read the host facts. `ip -4 route` goes through the Runner (a read: runs under --dry-run too). */
export async function readHostFacts(runner: Runner, vmRoot: string): Promise<DetectFacts> {
  const r = await runner.read(["ip", "-4", "route"], { nothrow: true });
  return {
    home: process.env.HOME ?? "/root",
    hostname: hostname(),
    cpus: osCpus().length || 1,
    memBytes: totalmem(),
    freeBytes: freeBytes(expandHome(vmRoot)),
    routes: r.exitCode === 0 ? r.stdout : "",
    exists: existsSync,
  };
}

/** The [defaults] tables `config init` writes. */
export function defaultsDoc(d: Detected, home: string): NonNullable<StoreDoc["defaults"]> {
  return {
    vm: { name: d.vmName, user: BUILTIN.vm.user, cpus: d.cpus, memory_mib: d.memoryMib, disk_gib: d.diskGib, accel: BUILTIN.vm.accel },
    network: { name: d.networkName, subnet: d.subnet },
    firewall: { enabled: true, allow_tcp_ports: [], allow_udp_ports: [], block_cidrs: [...DEFAULT_BLOCK_CIDRS], extra_block_cidrs: [] },
    image: { url: d.image.url, sha256: d.image.sha256 },
    paths: {
      vm_root: tildePath(d.paths.vm_root, home),
      image_cache: tildePath(d.paths.image_cache, home),
      ssh_identity: tildePath(d.sshIdentity, home),
      libvirt_uri: d.paths.libvirt_uri,
    },
  };
}

/** Rows for the review table (label, value, where it came from). */
export function reviewRows(d: Detected): [string, string, string][] {
  const c = parseCidr(d.subnet)!;
  return [
    ["vm name", d.vmName, "host name"],
    ["cpus", String(d.cpus), d.sources.cpus!],
    ["memory", `${d.memoryMib} MiB`, d.sources.memory!],
    ["disk", `${d.diskGib} GiB`, d.sources.disk!],
    ["network", `${d.networkName} ${d.subnet} (gateway ${intToIpv4(c.network + 1)})`, d.sources.subnet!],
    ["ssh key", d.sshIdentity, d.sources.ssh!],
    ["image", d.image.url, d.sources.image!],
    ["image sha256", d.image.sha256, ""],
    ["vm root", d.paths.vm_root, ""],
  ];
}

export function formatTable(rows: [string, string, string][]): string {
  const w0 = Math.max(...rows.map((r) => r[0].length));
  return rows.map(([k, v, s]) => `  ${k.padEnd(w0)}  ${v}${s ? `  (${s})` : ""}`).join("\n");
}

/**
 * Create the aivm SSH key when asked to: consent first (runner.confirm honours --yes), printed under --dry-run.
 * Returns whether the key exists (or would, under --dry-run) afterwards.
 */
export async function createIdentity(runner: Runner, path: string, host = hostname()): Promise<boolean> {
  const argv = sshKeygenArgv(path, host);
  const mkdir = ["mkdir", "-p", "-m", "700", dirname(path)];
  if (runner.dryRun) {
    // as the real run: without --yes and without a terminal to ask on, the key is not made (the caller says so)
    if (!runner.yes && !runner.interactive) return false;
  } else {
    const ok = await runner.confirm("ssh key", `No SSH key found. Create ${path} (ed25519, no passphrase)?`);
    if (!ok) return false;
  }
  if (!existsSync(dirname(path))) await runner.exec(mkdir, { what: "ssh key" });
  await runner.exec(argv, { what: "ssh key" });
  return true;
}
