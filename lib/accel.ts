// Acceleration: KVM only when /dev/kvm is usable AND the CPU advertises vmx/svm; TCG (libvirt type `qemu`) otherwise.
// (A /dev/kvm backed by a paravirtual host module, with no vmx/svm in the flags, hangs a normal guest kernel.)
import type { Accel } from "./config/model.ts";
import { AivmError, EXIT } from "./errors.ts";
import type { Host } from "./host.ts";
import { log } from "./log.ts";

export interface AccelProbe {
  /** /dev/kvm opened read-write */
  kvmUsable: boolean;
  /** why not, when it is not */
  kvmWhy?: string;
  /** the CPU flags show vmx or svm */
  cpuVirt: boolean;
}

export interface AccelChoice {
  type: "kvm" | "qemu";
  /** one line saying why TCG was picked under `auto` */
  warning?: string;
  /** explicit `kvm` that cannot work */
  error?: string;
}

/** Read the host: can we open /dev/kvm read-write, and does /proc/cpuinfo list vmx or svm? */
export function probeAccel(host: Host, kvmPath = "/dev/kvm", cpuinfo = "/proc/cpuinfo"): AccelProbe {
  const code = host.openRw(kvmPath);
  const kvmWhy = code === null ? undefined : code === "ENOENT" ? `${kvmPath} does not exist` : code === "EACCES" || code === "EPERM" ? `${kvmPath} is not writable by this user` : `${kvmPath}: ${code}`;
  const cpuVirt = (host.readFile(cpuinfo) ?? "").split("\n").some((l) => /^flags\s*:/.test(l) && /\b(vmx|svm)\b/.test(l));
  return { kvmUsable: code === null, ...(kvmWhy ? { kvmWhy } : {}), cpuVirt };
}

/** Pure: the domain type for an accel mode on a probed host. */
export function accelChoice(mode: Accel, probe: AccelProbe): AccelChoice {
  if (mode === "tcg") return { type: "qemu" };
  const why = !probe.kvmUsable ? (probe.kvmWhy ?? "/dev/kvm is not usable") : !probe.cpuVirt ? "the CPU flags show no vmx or svm, so nested virtualisation is off" : undefined;
  if (mode === "kvm") return why ? { type: "kvm", error: why } : { type: "kvm" };
  if (!why) return { type: "kvm" };
  return { type: "qemu", warning: `KVM is not available (${why}): using TCG software emulation, which is much slower` };
}

let warned = false;

/** accelChoice, with the warning logged once per process and an unusable explicit `kvm` as exit 1. */
export function chooseAccel(mode: Accel, probe: AccelProbe): "kvm" | "qemu" {
  const c = accelChoice(mode, probe);
  if (c.error) throw new AivmError("accel = kvm", `KVM cannot be used: ${c.error}`, EXIT.FAILED, "set accel = \"auto\" or \"tcg\" in the config");
  if (c.warning && !warned) {
    warned = true;
    log.warn(c.warning);
  }
  return c.type;
}
