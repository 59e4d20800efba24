// `aivm vm update` planning: the changes that bring a domain to the config. vCPUs and memory go into the
// persistent definition (a restart makes them live), the disk grows only, the firewall table is re-applied.

import type { Vm } from "../config/model.ts";
import { virtiofsDrift } from "../drift.ts";
import type { FwStatus } from "../fw.ts";
import { mainDisk, GIB, LiveDomain } from "../libvirt/parse.ts";
import { virshArgv, DomainState, ACTIVE } from "../libvirt/virsh.ts";
import { Action } from "../steps.ts";


export type RestartPolicy = "auto" | "always" | "never";

export const RESTART_POLICIES: RestartPolicy[] = ["auto", "always", "never"];

export interface UpdateChange {
  what: "cpus" | "memory" | "disk" | "firewall";
  from: string;
  to: string;
  /** the change reaches the running guest only after a restart */
  restart: boolean;
  actions: Action[];
}

export interface UpdatePlan {
  vm: string;
  state: DomainState;
  changes: UpdateChange[];
  /** a restart is needed for the changes (or for earlier --config changes still waiting) */
  restartNeeded: boolean;
  /** drift this command does not apply, said once each */
  notes: string[];
  /** reasons to refuse the whole update (exit 2, nothing changed) */
  refusals: string[];
}

export interface UpdateFacts {
  state: DomainState;
  /** the inactive definition (what the next boot uses) */
  persistent: LiveDomain;
  /** the running definition, null when shut off */
  live: LiveDomain | null;
  diskBytes: number | null;
  fw: FwStatus | null;
}

export 
const run = (argv: string[]): Action => ({ kind: "run", argv });

/** Pure: the changes that bring the domain to the config. */
export function planUpdate(vm: Vm, f: UpdateFacts): UpdatePlan {
  const uri = vm.paths.libvirtUri;
  const v = (...a: string[]) => run(virshArgv(uri, ...a));
  const active = ACTIVE.has(f.state);
  const changes: UpdateChange[] = [];
  const notes: string[] = [];
  const refusals: string[] = [];
  const p = f.persistent;

  // vCPUs: raise the maximum before the count, lower the count before the maximum
  if (p.vcpus !== null && (p.vcpus !== vm.cpus || (p.maxVcpus ?? p.vcpus) !== vm.cpus)) {
    const n = String(vm.cpus);
    const max = v("setvcpus", vm.name, n, "--config", "--maximum");
    const cur = v("setvcpus", vm.name, n, "--config");
    changes.push({ what: "cpus", from: String(p.vcpus), to: n, restart: active, actions: vm.cpus >= (p.maxVcpus ?? p.vcpus) ? [max, cur] : [cur, max] });
  }
  // memory (KiB): raise the maximum first when growing, lower the current first when shrinking
  const kib = vm.memoryMib * 1024;
  if (p.memoryKib !== null && (p.memoryKib !== kib || (p.currentMemoryKib ?? p.memoryKib) !== kib)) {
    const max = v("setmaxmem", vm.name, String(kib), "--config");
    const cur = v("setmem", vm.name, String(kib), "--config");
    changes.push({ what: "memory", from: `${Math.round(p.memoryKib / 1024)} MiB`, to: `${vm.memoryMib} MiB`, restart: active, actions: kib >= p.memoryKib ? [max, cur] : [cur, max] });
  }
  // disk: grow only
  const disk = mainDisk(f.live ?? p);
  const want = vm.diskGib * GIB;
  if (f.diskBytes === null) notes.push("disk: its size could not be read (virsh domblkinfo); not changed");
  else if (f.diskBytes > want) {
    refusals.push(`disk: the config asks for ${vm.diskGib} GiB but the disk is ${fmtGib(f.diskBytes)} GiB; aivm never shrinks a disk (the guest's filesystem ends past the new size and would lose data). Set disk_gib to ${Math.ceil(f.diskBytes / GIB)} or more.`);
  } else if (f.diskBytes < want) {
    if (!disk?.target || (!active && !disk.file)) notes.push("disk: the domain has no disk aivm can identify; not changed");
    else {
      const size = `${vm.diskGib}G`;
      const action = active
        ? v("blockresize", vm.name, disk.target, size)
        : run(["qemu-img", "resize", ...(disk.format ? ["-f", disk.format] : []), disk.file!, size]);
      changes.push({ what: "disk", from: `${fmtGib(f.diskBytes)} GiB`, to: `${vm.diskGib} GiB`, restart: false, actions: [action] });
    }
  }
  // firewall: re-apply the network's table
  if (f.fw && f.fw.enabled && !f.fw.equal) {
    const ports = f.fw.drift.filter((d) => /\bdport\b/.test(d));
    changes.push({ what: "firewall", from: f.fw.present ? `table differs${ports.length ? " (ports)" : ""}` : "table absent", to: `inet ${f.fw.table} as rendered`, restart: false, actions: [] });
  }
  for (const t of virtiofsDrift(vm, p)) notes.push(`virtiofs: ${t} (managed by \`aivm share\`, not by vm update)`);
  const l = f.live;
  const waiting = !!l && ((l.vcpus !== null && p.vcpus !== null && l.vcpus !== p.vcpus) || (l.memoryKib !== null && p.memoryKib !== null && l.memoryKib !== p.memoryKib));
  if (waiting) notes.push("earlier vCPU/memory changes are in the persistent definition and wait for a restart");
  return { vm: vm.name, state: f.state, changes, restartNeeded: changes.some((c) => c.restart) || waiting, notes, refusals };
}

export const fmtGib = (b: number) => (Number.isInteger(b / GIB) ? String(b / GIB) : (b / GIB).toFixed(2));

/** The plan as lines for stderr. */
export function describePlan(p: UpdatePlan): string[] {
  const lines = p.changes.map((c) => `- ${c.what}: ${c.from} -> ${c.to}${c.restart ? " (restart needed)" : ""}`);
  for (const n of p.notes) lines.push(`note: ${n}`);
  if (!p.changes.length && !p.restartNeeded) lines.unshift(`nothing to update: ${p.vm} matches the config`);
  return lines;
}
