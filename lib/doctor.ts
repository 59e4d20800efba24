// Host checks (`aivm doctor`) and host packages (`aivm host install-deps`). Checks read; nothing here changes the host.
import { dirname } from "node:path";
import { probeAccel, accelChoice, AccelProbe } from "./accel.ts";
import type { Paths } from "./config/model.ts";
import type { Host } from "./host.ts";
import type { Runner } from "./run.ts";
import { virshRead } from "./libvirt/virsh.ts";
import { lastLine } from "./errors.ts";

export interface Check {
  name: string;
  ok: boolean;
  detail: string;
  /** what to do when not ok */
  fix?: string;
  /** a failure here does not stop aivm (e.g. TCG fallback) */
  optional?: boolean;
}

/** Program -> Debian package. The first name found on PATH (or an absolute path that exists) satisfies it. */
export const PROGRAMS: { names: string[]; pkg: string; why: string }[] = [
  { names: ["virsh"], pkg: "libvirt-clients", why: "talks to libvirtd" },
  { names: ["qemu-img"], pkg: "qemu-utils", why: "creates VM disks" },
  { names: ["qemu-system-x86_64"], pkg: "qemu-system-x86", why: "runs the guests" },
  { names: ["genisoimage", "xorriso", "mkisofs"], pkg: "genisoimage", why: "builds the cloud-init seed" },
  { names: ["nft"], pkg: "nftables", why: "isolates the guests" },
  { names: ["ssh"], pkg: "openssh-client", why: "logs into the guests" },
  { names: ["ssh-keygen"], pkg: "openssh-client", why: "generates and pins guest host keys" },
  { names: ["ip"], pkg: "iproute2", why: "reads the host routes" },
  { names: ["dnsmasq"], pkg: "dnsmasq-base", why: "serves DHCP and DNS on aivm networks" },
  { names: ["virtiofsd", "/usr/lib/qemu/virtiofsd", "/usr/libexec/virtiofsd"], pkg: "qemu-system-common", why: "shares folders (virtiofs)" },
];

export const DEBIAN_PACKAGES = [
  "qemu-system-x86", "qemu-utils", "libvirt-daemon-system", "libvirt-clients", "dnsmasq-base", "nftables",
  "genisoimage", "openssh-client", "iproute2", "ovmf", "curl", "ca-certificates",
];

export function findProgram(host: Host, names: string[]): string | null {
  for (const n of names) {
    const p = n.startsWith("/") ? (host.exists(n) ? n : null) : host.which(n);
    if (p) return p;
  }
  return null;
}

export function programChecks(host: Host): Check[] {
  return PROGRAMS.map((p) => {
    const found = findProgram(host, p.names);
    return found
      ? { name: `program ${p.names[0]}`, ok: true, detail: found }
      : { name: `program ${p.names[0]}`, ok: false, detail: `not found (${p.why})`, fix: `install the ${p.pkg} package (\`aivm host install-deps\`)` };
  });
}

export function accelCheck(probe: AccelProbe): Check {
  const c = accelChoice("auto", probe);
  return c.type === "kvm"
    ? { name: "acceleration", ok: true, detail: "KVM usable" }
    : { name: "acceleration", ok: false, optional: true, detail: c.warning ?? "TCG", fix: "enable virtualisation (vmx/svm) for KVM speed; TCG works, slowly" };
}

/** Every existing ancestor of `path` (and path itself when it exists) must let "others" traverse it. */
export function traversalBlockers(host: Host, path: string): string[] {
  const blockers: string[] = [];
  let p = path;
  for (;;) {
    const s = host.stat(p);
    if (s && (s.mode & 0o001) === 0) blockers.push(p);
    if (p === "/") break;
    p = dirname(p);
  }
  return blockers.reverse();
}

export function storageCheck(host: Host, paths: Paths): Check {
  const blockers = [...new Set([...traversalBlockers(host, paths.vmRoot), ...traversalBlockers(host, paths.imageCache)])];
  return blockers.length
    ? { name: "storage reachable by libvirt-qemu", ok: false, detail: `not traversable by others: ${blockers.join(", ")}`, fix: `chmod o+x ${blockers.join(" ")} (or set [defaults.paths] vm_root and image_cache elsewhere)` }
    : { name: "storage reachable by libvirt-qemu", ok: true, detail: `${paths.vmRoot}, ${paths.imageCache}` };
}

export async function libvirtCheck(runner: Runner, uri: string): Promise<Check> {
  try {
    const r = await virshRead(runner, uri, ["version", "--daemon"]);
    if (r.exitCode === 0) return { name: "libvirtd", ok: true, detail: `reachable at ${uri}` };
    return { name: "libvirtd", ok: false, detail: `${uri}: ${lastLine(r.stderr)}`, fix: "start libvirtd and virtlogd" };
  } catch (e) {
    return { name: "libvirtd", ok: false, detail: (e as Error).message.replace(/^libvirt: /, ""), fix: "start libvirtd and virtlogd (no systemd: `virtlogd -d && libvirtd -d`)" };
  }
}

export async function firewallCheck(runner: Runner): Promise<Check> {
  try {
    const r = await runner.read(["nft", "list", "tables"], { privileged: true, nothrow: true });
    return r.exitCode === 0
      ? { name: "firewall backend (nftables)", ok: true, detail: "nft can list tables" }
      : { name: "firewall backend (nftables)", ok: false, detail: lastLine(r.stderr) || `exit ${r.exitCode}`, fix: "install nftables and run aivm as root or with sudo" };
  } catch (e) {
    return { name: "firewall backend (nftables)", ok: false, detail: (e as Error).message, fix: "install nftables" };
  }
}

export async function doctor(runner: Runner, paths: Paths): Promise<Check[]> {
  const programs = programChecks(runner.host);
  const haveVirsh = programs[0]!.ok;
  const haveNft = programs.find((c) => c.name === "program nft")!.ok;
  return [
    ...programs,
    haveVirsh ? await libvirtCheck(runner, paths.libvirtUri) : { name: "libvirtd", ok: false, detail: "virsh is missing", fix: "install libvirt-clients" },
    accelCheck(probeAccel(runner.host)),
    haveNft ? await firewallCheck(runner) : { name: "firewall backend (nftables)", ok: false, detail: "nft is missing", fix: "install nftables" },
    storageCheck(runner.host, paths),
  ];
}

export function formatChecks(checks: Check[]): string[] {
  return checks.map((c) => `${c.ok ? "ok  " : c.optional ? "warn" : "FAIL"}  ${c.name}: ${c.detail}${!c.ok && c.fix ? `\n      fix: ${c.fix}` : ""}`);
}

export function isDebianLike(osRelease: string): boolean {
  const kv = Object.fromEntries(osRelease.split("\n").map((l) => l.split("=")).filter((p) => p.length >= 2).map(([k, ...v]) => [k!, v.join("=").replace(/^"|"$/g, "")]));
  return kv.ID === "debian" || kv.ID === "ubuntu" || (kv.ID_LIKE ?? "").split(/\s+/).some((x) => x === "debian" || x === "ubuntu");
}

export function readOsRelease(host: Host): string {
  return host.readFile("/etc/os-release") ?? "";
}

export function installDepsStep(packages = DEBIAN_PACKAGES) {
  return {
    title: "Install host packages",
    why: "aivm needs libvirt, qemu, nftables, an ISO tool and OpenSSH",
    consent: true,
    actions: [
      { kind: "run" as const, argv: ["env", "DEBIAN_FRONTEND=noninteractive", "apt-get", "update"], privileged: true },
      { kind: "run" as const, argv: ["env", "DEBIAN_FRONTEND=noninteractive", "apt-get", "install", "-y", "--no-install-recommends", ...packages], privileged: true },
    ],
  };
}
