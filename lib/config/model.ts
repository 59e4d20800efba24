// The config model: every key with its type, check and meaning; the document and resolved types; built-in
// defaults and where the store lives. Adding a config key touches one table here.
import { join } from "node:path";
import { hostname } from "node:os";
import { absPathProblem, bridgeProblem, guestPathProblem, cidrProblem, ipv4Problem, nameProblem, pathProblem, portProblem, sha256Problem, urlProblem, userProblem } from "../validate.ts";
import { sha256hex } from "../digest.ts";

export type KeyCheck = (v: unknown) => string | undefined;

export interface KeySpec {
  type: "string" | "int" | "bool" | "string[]" | "int[]";
  doc: string;
  check?: KeyCheck;
}

export type Section = Record<string, KeySpec>;

export const int = (min: number, max: number): KeyCheck => (v) =>
  typeof v === "number" && Number.isInteger(v) && v >= min && v <= max ? undefined : `must be an integer from ${min} to ${max}`;

export const oneOf = (...opts: string[]): KeyCheck => (v) => (opts.includes(v as string) ? undefined : `must be one of ${opts.join(", ")}`);

export const each = (c: KeyCheck): KeyCheck => (v) => {
  for (const x of v as unknown[]) {
    const p = c(x);
    if (p) return p;
  }
  return undefined;
};

export const VM_KEYS: Section = {
  name: { type: "string", doc: "VM name: libvirt domain, guest hostname and SSH alias", check: nameProblem },
  user: { type: "string", doc: "guest login user", check: userProblem },
  cpus: { type: "int", doc: "virtual CPUs", check: int(1, 256) },
  memory_mib: { type: "int", doc: "memory in MiB", check: int(256, 1 << 22) },
  disk_gib: { type: "int", doc: "disk size in GiB (the overlay grows to this)", check: int(1, 65536) },
  accel: { type: "string", doc: "auto | kvm | tcg (auto: KVM only when usable and the CPU has vmx/svm)", check: oneOf("auto", "kvm", "tcg") },
  shutdown_timeout_s: { type: "int", doc: "seconds `vm down` waits for an ACPI shutdown before forcing off", check: int(1, 3600) },
  wait_timeout_s: { type: "int", doc: "seconds `vm wait` waits for IP, SSH and cloud-init", check: int(10, 86400) },
  imported: { type: "bool", doc: "recorded by `aivm config discover`: aivm did not create its disk, seed or host key (never removed by aivm)" },
};

export const NETWORK_KEYS: Section = {
  name: { type: "string", doc: "libvirt network name", check: nameProblem },
  bridge: { type: "string", doc: "bridge device (default: aivm-<hash of name>, at most 15 characters)", check: bridgeProblem },
  subnet: { type: "string", doc: "IPv4 subnet in CIDR form", check: cidrProblem },
  gateway: { type: "string", doc: "host address on the bridge (default: first address)", check: ipv4Problem },
  dhcp_start: { type: "string", doc: "first DHCP address", check: ipv4Problem },
  dhcp_end: { type: "string", doc: "last DHCP address", check: ipv4Problem },
};

export const FIREWALL_KEYS: Section = {
  enabled: { type: "bool", doc: "apply the nftables isolation table" },
  allow_tcp_ports: { type: "int[]", doc: "host TCP ports the guests may reach", check: each(portProblem) },
  allow_udp_ports: { type: "int[]", doc: "host UDP ports the guests may reach", check: each(portProblem) },
  block_cidrs: { type: "string[]", doc: "destinations guests may not reach (replies excepted)", check: each(cidrProblem) },
  extra_block_cidrs: { type: "string[]", doc: "appended to block_cidrs", check: each(cidrProblem) },
};

export const IMAGE_KEYS: Section = {
  url: { type: "string", doc: "https:// or file:// URL of the base image", check: urlProblem },
  sha256: { type: "string", doc: "pinned sha256 of the base image (the cache key)", check: sha256Problem },
};

export const PATHS_KEYS: Section = {
  vm_root: { type: "string", doc: "directory holding one directory per VM", check: pathProblem },
  image_cache: { type: "string", doc: "content-addressed image cache", check: pathProblem },
  ssh_identity: { type: "string", doc: "private key used to log in (public key: same path + .pub)", check: pathProblem },
  libvirt_uri: { type: "string", doc: "libvirt connection URI", check: (v) => (typeof v === "string" && /^[a-z+]+:\/\/[^\s]*$/.test(v) ? undefined : "must be a libvirt URI such as qemu:///system") },
};

export const ATTACHMENT_KEYS: Section = {
  host_path: { type: "string", doc: "absolute host folder (resolved)", check: absPathProblem },
  mode: { type: "string", doc: "shared-root | shared | git", check: oneOf("shared-root", "shared", "git") },
  access: { type: "string", doc: "rw | ro", check: oneOf("rw", "ro") },
  guest_dst: { type: "string", doc: "absolute guest path, not a system directory (default: same as host_path)", check: guestPathProblem },
  git_guard: { type: "string", doc: "on | off: keep the repository's .git/config, hooks and commondir read-only to the guest (default on)", check: oneOf("on", "off") },
};

/** The keys of a [[vms]] record: the VM keys and the network it sits on. */
export const VM_RECORD_KEYS: Section = {
  name: VM_KEYS.name!,
  network: { type: "string", doc: "the [[networks]] record (or the [defaults.network] name) it sits on", check: nameProblem },
  ...VM_KEYS,
};

/**
 * Where each table sits in the store document: `defaults.vm` is a table, `vms[]` an array of tables, `vms[].image`
 * a table in each element. Validation, the emitter and the layout-keeping writer walk these rows in order, so a new
 * table is one row here (and its keys one Section above). `id` names the key that identifies an element of an array
 * of tables (a write matches records by it); `required` the keys each element must have. A row with no keys only
 * holds other tables.
 */
export interface TableRow { at: string; keys: Section; id?: string; required?: string[] }

export const TABLES: TableRow[] = [
  { at: "", keys: {} },
  { at: "defaults", keys: {} },
  { at: "defaults.vm", keys: VM_KEYS },
  { at: "defaults.network", keys: NETWORK_KEYS },
  { at: "defaults.firewall", keys: FIREWALL_KEYS },
  { at: "defaults.image", keys: IMAGE_KEYS },
  { at: "defaults.paths", keys: PATHS_KEYS },
  { at: "networks[]", keys: NETWORK_KEYS, id: "name", required: ["name"] },
  { at: "networks[].firewall", keys: FIREWALL_KEYS },
  { at: "vms[]", keys: VM_RECORD_KEYS, id: "name", required: ["name", "network"] },
  { at: "vms[].image", keys: IMAGE_KEYS },
  { at: "vms[].attachments[]", keys: ATTACHMENT_KEYS, id: "host_path", required: ["host_path"] },
];

/** The rows directly inside row `at` ("" is the document), in table order, each with its key in the parent. */
export function childTables(at: string): { key: string; array: boolean; row: TableRow }[] {
  const out: { key: string; array: boolean; row: TableRow }[] = [];
  for (const row of TABLES) {
    if (!row.at) continue;
    const cut = row.at.lastIndexOf(".");
    const parent = cut < 0 ? "" : row.at.slice(0, cut);
    if (parent !== at) continue;
    const last = row.at.slice(cut + 1);
    out.push({ key: last.replace(/\[\]$/, ""), array: last.endsWith("[]"), row });
  }
  return out;
}

export type Accel = "auto" | "kvm" | "tcg";

export type Mode = "shared-root" | "shared" | "git";

export type Access = "rw" | "ro";

export interface FirewallDoc { enabled?: boolean; allow_tcp_ports?: number[]; allow_udp_ports?: number[]; block_cidrs?: string[]; extra_block_cidrs?: string[] }

export interface NetworkDoc { name?: string; bridge?: string; subnet?: string; gateway?: string; dhcp_start?: string; dhcp_end?: string }

export interface ImageDoc { url?: string; sha256?: string }

export interface PathsDoc { vm_root?: string; image_cache?: string; ssh_identity?: string; libvirt_uri?: string }

export interface VmDoc { name?: string; user?: string; cpus?: number; memory_mib?: number; disk_gib?: number; accel?: Accel; shutdown_timeout_s?: number; wait_timeout_s?: number; imported?: boolean }

/** An attachment as written in the file: only host_path is required (see attachmentDefaults in resolve.ts). */
export interface AttachmentRecord { host_path: string; mode?: Mode; access?: Access; guest_dst?: string; git_guard?: "on" | "off" }

/** An attachment with the defaults applied: what everything past the store reads. */
export interface AttachmentDoc { host_path: string; mode: Mode; access: Access; guest_dst: string; git_guard?: "on" | "off" }

export interface StoreDoc {
  defaults?: { vm?: VmDoc; network?: NetworkDoc; firewall?: FirewallDoc; image?: ImageDoc; paths?: PathsDoc };
  networks?: (NetworkDoc & { name: string; firewall?: FirewallDoc })[];
  vms?: (VmDoc & { name: string; network: string; image?: ImageDoc; attachments?: AttachmentRecord[] })[];
}

export interface Firewall { enabled: boolean; allowTcp: number[]; allowUdp: number[]; blockCidrs: string[] }

export interface Network { name: string; bridge: string; subnet: string; prefix: number; netmask: string; gateway: string; dhcpStart: string; dhcpEnd: string; firewall: Firewall }

export interface Image { url: string; sha256: string }

export interface Paths { vmRoot: string; imageCache: string; sshIdentity: string; sshPubkey: string; libvirtUri: string }

export interface Vm {
  name: string; user: string; cpus: number; memoryMib: number; diskGib: number; accel: Accel;
  shutdownTimeoutS: number; waitTimeoutS: number; image: Image; network: Network; paths: Paths;
  attachments: AttachmentDoc[];
  /** the VM's own directory: overlay, seed, host keys, known_hosts, console log */
  dir: string;
  /** the VM is recorded in [[vms]] (false: synthesized from [defaults]) */
  recorded: boolean;
  /** recorded by `aivm config discover`: a domain aivm did not create (set only when true) */
  imported?: boolean;
}

export const UBUNTU_2404 = {
  url: "https://cloud-images.ubuntu.com/releases/noble/release-20260225/ubuntu-24.04-server-cloudimg-amd64.img",
  sha256: "7aa6d9f5e8a3a55c7445b138d31a73d1187871211b2b7da9da2e1a6cbf169b21",
};

export const DEFAULT_BLOCK_CIDRS = [
  "0.0.0.0/8", "10.0.0.0/8", "100.64.0.0/10", "127.0.0.0/8", "169.254.0.0/16",
  "172.16.0.0/12", "192.168.0.0/16", "224.0.0.0/4", "240.0.0.0/4",
];

export function defaultVmName(host = hostname()): string {
  const h = host.split(".")[0]!.toLowerCase().replace(/[^a-z0-9-]/g, "-").replace(/^-+|-+$/g, "");
  return `aivm-${h || "host"}`.slice(0, 63).replace(/-+$/, "");
}

export const BUILTIN = {
  vm: { user: "agent", cpus: 2, memory_mib: 2048, disk_gib: 20, accel: "auto" as Accel, shutdown_timeout_s: 60, wait_timeout_s: 900 },
  network: { name: "aivm-net", subnet: "10.77.0.0/24" },
  firewall: { enabled: true, allow_tcp_ports: [] as number[], allow_udp_ports: [] as number[], block_cidrs: DEFAULT_BLOCK_CIDRS, extra_block_cidrs: [] as string[] },
  image: UBUNTU_2404,
};

export function xdg(kind: "CONFIG" | "CACHE" | "DATA"): string {
  const v = process.env[`XDG_${kind}_HOME`];
  if (v && v.startsWith("/")) return v;
  const home = process.env.HOME ?? "/root";
  return join(home, kind === "CONFIG" ? ".config" : kind === "CACHE" ? ".cache" : ".local/share");
}

export function builtinPaths(): Required<PathsDoc> {
  return {
    vm_root: join(xdg("DATA"), "aivm", "vms"),
    image_cache: join(xdg("CACHE"), "aivm", "images"),
    ssh_identity: "~/.ssh/id_aivm_ed25519",
    libvirt_uri: "qemu:///system",
  };
}

/** --config > AIVM_CONFIG > $XDG_CONFIG_HOME/aivm/config.toml */
export function configPath(flag?: string): string {
  const p = flag || process.env.AIVM_CONFIG;
  if (p) return p;
  return join(xdg("CONFIG"), "aivm", "config.toml");
}

export function isDefaultConfigPath(p: string): boolean {
  return p === join(xdg("CONFIG"), "aivm", "config.toml");
}

export function defaultBridge(network: string): string {
  return `aivm-${sha256hex(network).slice(0, 8)}`;
}
