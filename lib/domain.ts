// The libvirt domain XML for a VM: a pure renderer over templates/domain.xml. Every value is XML-escaped.
import templateText from "../templates/domain.xml" with { type: "text" };
import type { Vm } from "./config/model.ts";
import { sha256bytes } from "./digest.ts";
import { escapeXml, renderXml, tidy } from "./render.ts";

const template = templateText as unknown as string;

/** A locally administered MAC in QEMU's 52:54:00 range, derived from the VM name (stable across redefinitions). */
export function macAddress(vmName: string): string {
  const h = sha256bytes(vmName);
  return ["52", "54", "00", ...[h[0]!, h[1]!, h[2]!].map((b) => b.toString(16).padStart(2, "0"))].join(":");
}

export interface DomainSpec {
  vm: Vm;
  type: "kvm" | "qemu";
  uuid?: string;
  disk: string;
  diskFormat: "qcow2";
  seed: string;
  consoleLog: string;
  /** UEFI when set; BIOS otherwise */
  firmware?: { loader: string; varsTemplate: string; nvram: string };
  /** direct kernel boot */
  kernel?: { kernel: string; initrd: string; cmdline: string };
  filesystems: { source: string; tag: string; readonly: boolean }[];
  /** <binary path=...> in each virtiofs filesystem when set */
  virtiofsd?: string;
}

const UUID_RE = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;

function osFragment(spec: DomainSpec): string {
  const lines: string[] = [];
  if (spec.firmware) {
    lines.push(`<loader readonly='yes' type='pflash'>${escapeXml(spec.firmware.loader)}</loader>`);
    lines.push(`<nvram template='${escapeXml(spec.firmware.varsTemplate)}'>${escapeXml(spec.firmware.nvram)}</nvram>`);
  }
  if (spec.kernel) {
    lines.push(`<kernel>${escapeXml(spec.kernel.kernel)}</kernel>`);
    lines.push(`<initrd>${escapeXml(spec.kernel.initrd)}</initrd>`);
    lines.push(`<cmdline>${escapeXml(spec.kernel.cmdline)}</cmdline>`);
  } else {
    lines.push(`<boot dev='hd'/>`);
  }
  return lines.join("\n    ");
}

/**
 * KVM: the host CPU as is. TCG (type qemu): host-passthrough needs KVM, so name QEMU's own default model
 * explicitly (qemu64 is what QEMU picks when no -cpu is given; every x86-64 distribution kernel boots on it).
 */
function cpuFragment(type: DomainSpec["type"]): string {
  if (type === "kvm") return `<cpu mode='host-passthrough' check='none' migratable='on'/>`;
  return `<cpu mode='custom' match='exact' check='none'>\n    <model fallback='forbid'>qemu64</model>\n  </cpu>`;
}

function filesystemFragment(fs: DomainSpec["filesystems"][number], virtiofsd?: string): string {
  const inner = [
    `<driver type='virtiofs'/>`,
    ...(virtiofsd ? [`<binary path='${escapeXml(virtiofsd)}'/>`] : []),
    `<source dir='${escapeXml(fs.source)}'/>`,
    `<target dir='${escapeXml(fs.tag)}'/>`,
    // libvirt < 11 refuses <readonly/> on virtiofs at define time; the caller decides whether to ask for it.
    ...(fs.readonly ? [`<readonly/>`] : []),
  ];
  return [`<filesystem type='mount' accessmode='passthrough'>`, ...inner.map((l) => `  ${l}`), `</filesystem>`].join("\n    ");
}

export function renderDomainXml(spec: DomainSpec): string {
  if (spec.type !== "kvm" && spec.type !== "qemu") throw new Error(`domain type ${JSON.stringify(spec.type)} is not kvm or qemu`);
  if (spec.uuid !== undefined && !UUID_RE.test(spec.uuid)) throw new Error(`${JSON.stringify(spec.uuid)} is not a UUID`);
  if (!Number.isInteger(spec.vm.memoryMib) || spec.vm.memoryMib < 1) throw new Error(`memory ${spec.vm.memoryMib} MiB is not a positive integer`);
  if (!Number.isInteger(spec.vm.cpus) || spec.vm.cpus < 1) throw new Error(`cpus ${spec.vm.cpus} is not a positive integer`);
  const tags = new Set<string>();
  for (const fs of spec.filesystems) {
    if (!fs.tag || tags.has(fs.tag)) throw new Error(`virtiofs tag ${JSON.stringify(fs.tag)} is empty or used twice`);
    tags.add(fs.tag);
  }
  const xml = renderXml(template, {
    type: spec.type,
    name: spec.vm.name,
    uuid: spec.uuid ? `<uuid>${escapeXml(spec.uuid.toLowerCase())}</uuid>` : "",
    memoryMib: spec.vm.memoryMib,
    cpus: spec.vm.cpus,
    os: osFragment(spec),
    cpu: cpuFragment(spec.type),
    diskFormat: spec.diskFormat,
    disk: spec.disk,
    seed: spec.seed,
    network: spec.vm.network.name,
    mac: macAddress(spec.vm.name),
    consoleLog: spec.consoleLog,
    filesystems: spec.filesystems.map((fs) => filesystemFragment(fs, spec.virtiofsd)).join("\n    "),
  });
  return tidy(xml);
}
