// Validators for values that reach argv, XML, YAML or nftables. Each returns a problem string or undefined.

import { UsageError } from "./errors.ts";

export const NAME_RE = /^[a-z][a-z0-9-]{0,62}$/;

export function nameProblem(name: unknown): string | undefined {
  if (typeof name !== "string") return "must be a string";
  if (!NAME_RE.test(name)) return `${JSON.stringify(name)} is not a valid name (lowercase letter first, then a-z 0-9 -, at most 63 characters)`;
  return undefined;
}

/** Reject a bad VM or network name at the edge: exit 2 before anything runs. */
export function checkName(kind: string, name: string): string {
  const p = nameProblem(name);
  if (p) throw new UsageError(`invalid ${kind} name`, p);
  return name;
}

export function ipv4ToInt(ip: string): number | undefined {
  const m = /^(\d{1,3})\.(\d{1,3})\.(\d{1,3})\.(\d{1,3})$/.exec(ip);
  if (!m) return undefined;
  const parts = m.slice(1).map(Number);
  if (parts.some((p, i) => p > 255 || (m[i + 1]!.length > 1 && m[i + 1]!.startsWith("0")))) return undefined;
  return ((parts[0]! << 24) >>> 0) + (parts[1]! << 16) + (parts[2]! << 8) + parts[3]!;
}

export function intToIpv4(n: number): string {
  return [(n >>> 24) & 255, (n >>> 16) & 255, (n >>> 8) & 255, n & 255].join(".");
}

export interface Cidr {
  network: number;
  prefix: number;
  size: number;
}

export function parseCidr(text: string): Cidr | undefined {
  const m = /^([0-9.]+)\/(\d{1,2})$/.exec(text);
  if (!m) return undefined;
  const ip = ipv4ToInt(m[1]!);
  const prefix = Number(m[2]);
  if (ip === undefined || prefix > 32) return undefined;
  const size = 2 ** (32 - prefix);
  const mask = prefix === 0 ? 0 : (0xffffffff << (32 - prefix)) >>> 0;
  if (((ip & mask) >>> 0) !== ip) return undefined; // host bits set
  return { network: ip, prefix, size };
}

export function cidrProblem(text: unknown): string | undefined {
  if (typeof text !== "string" || !parseCidr(text)) return `${JSON.stringify(text)} is not an IPv4 CIDR with a clean network address (e.g. 10.77.0.0/24)`;
  return undefined;
}

export function ipv4Problem(text: unknown): string | undefined {
  if (typeof text !== "string" || ipv4ToInt(text) === undefined) return `${JSON.stringify(text)} is not an IPv4 address`;
  return undefined;
}

export function cidrContains(c: Cidr, ip: number): boolean {
  return ip >= c.network && ip < c.network + c.size;
}

export function cidrsOverlap(a: Cidr, b: Cidr): boolean {
  return a.network < b.network + b.size && b.network < a.network + a.size;
}

export function portProblem(p: unknown): string | undefined {
  if (typeof p !== "number" || !Number.isInteger(p) || p < 1 || p > 65535) return `${JSON.stringify(p)} is not a port (1-65535)`;
  return undefined;
}

export const SHA256_RE = /^[0-9a-f]{64}$/;

export function sha256Problem(s: unknown): string | undefined {
  if (typeof s !== "string" || !SHA256_RE.test(s)) return `${JSON.stringify(s)} is not a sha256 hex digest (64 lowercase hex characters)`;
  return undefined;
}

export function urlProblem(s: unknown): string | undefined {
  if (typeof s !== "string" || !/^(https|file):\/\/\S+$/.test(s)) return `${JSON.stringify(s)} is not an https:// or file:// URL`;
  if (s.startsWith("file://") && !/^file:\/\/\/[^/]/.test(s)) return `${JSON.stringify(s)} is not a local file URL: write file:///path/to/image (no host after file://)`;
  if (s.startsWith("https://") && !/^https:\/\/[^/?#\s]+/.test(s)) return `${JSON.stringify(s)} has no host`;
  return undefined;
}

/** Absolute path with no control characters (newlines would break every format we write). */
export function absPathProblem(s: unknown): string | undefined {
  if (typeof s !== "string" || !s.startsWith("/")) return `${JSON.stringify(s)} is not an absolute path`;
  // eslint-disable-next-line no-control-regex
  if (/[\x00-\x1f\x7f]/.test(s)) return `${JSON.stringify(s)} contains control characters`;
  return undefined;
}

/** A path that may start with ~/ (expanded later). */
export function pathProblem(s: unknown): string | undefined {
  if (typeof s === "string" && (s === "~" || s.startsWith("~/"))) return absPathProblem("/" + s.slice(1));
  return absPathProblem(s);
}

export const BRIDGE_RE = /^[a-zA-Z][a-zA-Z0-9_-]{0,14}$/;

export function bridgeProblem(s: unknown): string | undefined {
  if (typeof s !== "string" || !BRIDGE_RE.test(s)) return `${JSON.stringify(s)} is not a valid bridge name (letters, digits, _ and -, at most 15 characters)`;
  return undefined;
}

export const USER_RE = /^[a-z_][a-z0-9_-]{0,31}$/;

export function userProblem(s: unknown): string | undefined {
  if (typeof s !== "string" || !USER_RE.test(s) || s === "root") return `${JSON.stringify(s)} is not a valid guest user name (not root; a-z 0-9 _ -)`;
  return undefined;
}

/** Where aivm's shared-root mounts live in the guest. */
export const GUEST_ROOT = "/mnt/aivm-root";

/** Guest directories a share may not cover, sit inside, or hide by covering a parent. */
export const SYSTEM_GUEST_PATHS = ["/etc", "/boot", "/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32", "/proc", "/sys", "/dev", "/run", "/var/lib", GUEST_ROOT];

/**
 * The one check for a guest mount path, from the command line and from a config file alike: absolute, no control
 * characters, no `..`/`.` segments or doubled slashes, not `/`, not a system directory, inside one, or a parent of one.
 */
export function guestPathProblem(s: unknown): string | undefined {
  const abs = absPathProblem(s);
  if (abs) return abs;
  const p = s as string;
  const n = p.length > 1 ? p.replace(/\/+$/, "") : p;
  if (n === "/") return `${JSON.stringify(p)} is the guest's root directory`;
  if (n.split("/").slice(1).some((seg) => seg === "" || seg === "." || seg === "..")) return `${JSON.stringify(p)} is not a normalized path (no //, . or .. segments)`;
  for (const f of SYSTEM_GUEST_PATHS) {
    if (n === f || n.startsWith(f + "/")) return `${JSON.stringify(p)} is under ${f}, a system directory of the guest`;
    if (f.startsWith(n + "/")) return `${JSON.stringify(p)} would hide ${f}, a system directory of the guest`;
  }
  return undefined;
}
