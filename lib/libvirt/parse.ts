// Pure parsers of virsh output: domain and network XML, key/value info, tables, leases, addresses, block info.
import { intToIpv4, ipv4ToInt } from "../validate.ts";

export interface LiveDisk { device: string; file?: string; target?: string; format?: string; readonly: boolean }

export interface LiveInterface { type: string; network?: string; bridge?: string; mac?: string }

export interface LiveFilesystem { driver?: string; source?: string; target?: string; readonly: boolean }

export interface LiveDomain {
  vcpus: number | null;
  maxVcpus: number | null;
  memoryKib: number | null;
  currentMemoryKib: number | null;
  disks: LiveDisk[];
  interfaces: LiveInterface[];
  filesystems: LiveFilesystem[];
}

const unescape = (s: string) => s.replace(/&lt;/g, "<").replace(/&gt;/g, ">").replace(/&quot;/g, '"').replace(/&apos;/g, "'").replace(/&amp;/g, "&");

function attr(el: string | undefined, name: string): string | undefined {
  if (!el) return undefined;
  const m = new RegExp(`\\s${name}=(?:'([^']*)'|"([^"]*)")`).exec(el);
  return m ? unescape(m[1] ?? m[2]!) : undefined;
}

const firstTag = (block: string, tag: string) => new RegExp(`<${tag}\\b[^>]*>`).exec(block)?.[0];

const KIB: Record<string, number> = { b: 1 / 1024, bytes: 1 / 1024, k: 1, kib: 1, kb: 1000 / 1024, m: 1024, mib: 1024, mb: 1e6 / 1024, g: 1024 ** 2, gib: 1024 ** 2, gb: 1e9 / 1024, t: 1024 ** 3, tib: 1024 ** 3 };

function memKib(xml: string, tag: string): number | null {
  const m = new RegExp(`<${tag}\\b([^>]*)>\\s*(\\d+)\\s*</${tag}>`).exec(xml);
  if (!m) return null;
  const unit = (attr(m[1], "unit") ?? "KiB").toLowerCase();
  return Math.round(Number(m[2]) * (KIB[unit] ?? 1));
}

/** The facts aivm compares from `virsh dumpxml`: vCPUs, memory, disks, interfaces, filesystems. */
export function parseDomainXml(xml: string): LiveDomain {
  const vcpu = /<vcpu\b([^>]*)>\s*(\d+)\s*<\/vcpu>/.exec(xml);
  const maxVcpus = vcpu ? Number(vcpu[2]) : null;
  const current = vcpu ? attr(vcpu[1], "current") : undefined;
  const blocks = (tag: string) => [...xml.matchAll(new RegExp(`<${tag}\\b[^>]*?(?:/>|>[\\s\\S]*?</${tag}>)`, "g"))].map((m) => m[0]);
  return {
    vcpus: current !== undefined ? Number(current) : maxVcpus,
    maxVcpus,
    memoryKib: memKib(xml, "memory"),
    currentMemoryKib: memKib(xml, "currentMemory"),
    disks: blocks("disk").map((b) => {
      const src = firstTag(b, "source");
      const format = attr(firstTag(b, "driver"), "type");
      return { device: attr(firstTag(b, "disk"), "device") ?? "disk", file: attr(src, "file") ?? attr(src, "dev"), target: attr(firstTag(b, "target"), "dev"), ...(format ? { format } : {}), readonly: /<readonly\s*\/>/.test(b) };
    }),
    interfaces: blocks("interface").map((b) => {
      const src = firstTag(b, "source");
      return { type: attr(firstTag(b, "interface"), "type") ?? "", network: attr(src, "network"), bridge: attr(src, "bridge"), mac: attr(firstTag(b, "mac"), "address")?.toLowerCase() };
    }),
    filesystems: blocks("filesystem").map((b) => ({
      driver: attr(firstTag(b, "driver"), "type"),
      source: attr(firstTag(b, "source"), "dir"),
      target: attr(firstTag(b, "target"), "dir"),
      readonly: /<readonly\s*\/>/.test(b),
    })),
  };
}

/** The VM's main disk: target vda, else the first writable disk device. */
export function mainDisk(d: LiveDomain): LiveDisk | undefined {
  const disks = d.disks.filter((x) => x.device === "disk");
  return disks.find((x) => x.target === "vda") ?? disks.find((x) => !x.readonly) ?? disks[0];
}

/** `virsh domblkinfo` -> capacity in bytes. */
export function parseBlkCapacity(text: string): number | null {
  const m = /^Capacity:\s*(\d+)/m.exec(text);
  return m ? Number(m[1]) : null;
}

export const GIB = 1024 ** 3;

/** `virsh net-info` key/value lines -> object with lower-case keys. */
export function parseKeyValues(text: string): Record<string, string> {
  const o: Record<string, string> = {};
  for (const line of text.split("\n")) {
    const m = /^([^:]+):\s*(.*)$/.exec(line.trim());
    if (m) o[m[1]!.trim().toLowerCase()] = m[2]!.trim();
  }
  return o;
}

export interface LiveNetConfig {
  bridge?: string;
  /** e.g. 10.77.0.0/24, from <ip address netmask|prefix> */
  subnet?: string;
  gateway?: string;
}

/** The bridge and IPv4 subnet of a defined network, from `virsh net-dumpxml`. */
export function parseNetworkXml(xml: string): LiveNetConfig {
  const attr = (tag: string, name: string): string | undefined => {
    const el = new RegExp(`<${tag}\\b[^>]*>`).exec(xml)?.[0];
    return el ? new RegExp(`\\b${name}=['"]([^'"]*)['"]`).exec(el)?.[1] : undefined;
  };
  const bridge = attr("bridge", "name");
  // the first IPv4 <ip> element (family absent or ipv4)
  let gateway: string | undefined;
  let prefix: number | undefined;
  for (const m of xml.matchAll(/<ip\b[^>]*>/g)) {
    const el = m[0];
    const fam = /\bfamily=['"]([^'"]*)['"]/.exec(el)?.[1];
    if (fam && fam !== "ipv4") continue;
    gateway = /\baddress=['"]([^'"]*)['"]/.exec(el)?.[1];
    const mask = /\bnetmask=['"]([^'"]*)['"]/.exec(el)?.[1];
    const pfx = /\bprefix=['"]([^'"]*)['"]/.exec(el)?.[1];
    if (pfx) prefix = Number(pfx);
    else if (mask && ipv4ToInt(mask) !== undefined) prefix = 32 - Math.log2(2 ** 32 - ipv4ToInt(mask)!);
    break;
  }
  let subnet: string | undefined;
  const g = gateway ? ipv4ToInt(gateway) : undefined;
  if (g !== undefined && prefix !== undefined && Number.isInteger(prefix)) {
    const mask = prefix === 0 ? 0 : (0xffffffff << (32 - prefix)) >>> 0;
    subnet = `${intToIpv4((g & mask) >>> 0)}/${prefix}`;
  }
  return { bridge, subnet, gateway };
}

export interface Lease {
  expiry: string;
  mac: string;
  protocol: string;
  ip: string;
  hostname: string | null;
}

/** `virsh net-dhcp-leases` table rows (header and rule lines are skipped). */
export function parseLeases(text: string): Lease[] {
  const leases: Lease[] = [];
  for (const line of text.split("\n")) {
    const m = /^\s*(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d)\s+([0-9a-fA-F:]{17})\s+(\S+)\s+(\S+)\s*(\S*)/.exec(line);
    if (!m) continue;
    leases.push({ expiry: m[1]!, mac: m[2]!.toLowerCase(), protocol: m[3]!, ip: m[4]!, hostname: m[5] && m[5] !== "-" ? m[5] : null });
  }
  return leases;
}

/** Parse `virsh domifaddr` rows for one MAC: the IPv4 address without its prefix. */
export function parseDomifaddr(text: string, mac: string): string | null {
  for (const line of text.split("\n")) {
    const m = /\s([0-9a-fA-F:]{17})\s+ipv4\s+(\d+\.\d+\.\d+\.\d+)(?:\/\d+)?/.exec(line);
    if (m && m[1]!.toLowerCase() === mac.toLowerCase()) return m[2]!;
  }
  return null;
}

/** The newest lease for a MAC, from `virsh net-dhcp-leases` output. */
export function leaseIp(text: string, mac: string): string | null {
  const leases = parseLeases(text).filter((l) => l.mac === mac.toLowerCase() && l.protocol === "ipv4");
  leases.sort((a, b) => (a.expiry < b.expiry ? 1 : a.expiry > b.expiry ? -1 : 0));
  return leases[0]?.ip.replace(/\/\d+$/, "") ?? null;
}

/** `virsh list --all` / `net-list --all` table rows -> name -> state */
export function parseTable(text: string, nameCol: number, stateCols: [number, number?]): Map<string, string> {
  const m = new Map<string, string>();
  for (const line of text.split("\n")) {
    const cols = line.trim().split(/\s+/);
    if (cols.length <= nameCol || !line.trim()) continue;
    const [a, b] = stateCols;
    m.set(cols[nameCol]!, cols.slice(a, b).join(" "));
  }
  return m;
}

/** The DHCP range of a network XML (first <range>). */
export function parseDhcpRange(xml: string): { start?: string; end?: string } {
  const el = /<range\b[^>]*>/.exec(xml)?.[0];
  const a = (n: string) => (el ? new RegExp(`\\b${n}=['"]([^'"]*)['"]`).exec(el)?.[1] : undefined);
  return { start: a("start"), end: a("end") };
}

/** The virtiofs tags in a domain XML. */
export function domainTags(xml: string): string[] {
  return [...xml.matchAll(/<filesystem\b[\s\S]*?<target\s+dir=(['"])(.*?)\1[\s\S]*?<\/filesystem>/g)].map((m) => m[2]!.replace(/&apos;/g, "'").replace(/&quot;/g, '"').replace(/&lt;/g, "<").replace(/&gt;/g, ">").replace(/&amp;/g, "&"));
}

/** `virsh -q domblkinfo DOM --all` rows (target, capacity, allocation, physical) -> target -> capacity in bytes. */
export function parseBlkinfoAll(text: string): Map<string, number> {
  const m = new Map<string, number>();
  for (const line of text.split("\n")) {
    const w = line.trim().split(/\s+/);
    if (w.length >= 2 && /^\d+$/.test(w[1]!)) m.set(w[0]!, Number(w[1]));
  }
  return m;
}
