// The domain's virtiofs devices (cold-plug only: live attach crashed libvirtd 9.0): what it lacks, what it has too
// many of, and redefining a shut-off domain with the devices the VM should carry.
import type { Vm } from "../config/model.ts";
import { renderDomainXml } from "../domain.ts";
import { cachedImage } from "../image.ts";
import { domainTags } from "../libvirt/parse.ts";
import { domainUuid, virshArgv, virshRead } from "../libvirt/virsh.ts";
import type { Runner } from "../run.ts";
import { vmFilesystems } from "../share/names.ts";
import { planDomain } from "./create.ts";

/** The tags the VM's domain lacks (its persistent definition), or null when there is no domain. */
export async function missingTags(runner: Runner, vm: Vm): Promise<string[] | null> {
  const r = await virshRead(runner, vm.paths.libvirtUri, ["dumpxml", "--inactive", vm.name]);
  if (r.exitCode !== 0) return null;
  const have = domainTags(r.stdout);
  return vmFilesystems(vm).map((f) => f.tag).filter((t) => !have.includes(t));
}

/** Tags the domain has that the VM no longer wants (a detached or refused `shared` folder). */
export async function extraTags(runner: Runner, vm: Vm): Promise<string[]> {
  const r = await virshRead(runner, vm.paths.libvirtUri, ["dumpxml", "--inactive", vm.name]);
  if (r.exitCode !== 0) return [];
  const want = vmFilesystems(vm).map((f) => f.tag);
  return domainTags(r.stdout).filter((t) => !want.includes(t));
}

/** Redefine the (shut off) domain with the VM's current virtiofs devices, keeping its UUID and domain type. */
export async function redefineFilesystems(runner: Runner, vm: Vm): Promise<void> {
  const uri = vm.paths.libvirtUri;
  const cur = await virshRead(runner, uri, ["dumpxml", "--inactive", vm.name]);
  const type = /<domain\b[^>]*type=['"]kvm['"]/.test(cur.stdout) ? "kvm" : "qemu";
  const uuid = (await domainUuid(runner, uri, vm.name)) ?? undefined;
  const xml = renderDomainXml(planDomain(vm, { type, image: cachedImage(vm.paths, vm.image.sha256), uuid, exists: (p) => runner.host.exists(p) }));
  await runner.step({
    title: `Redefine VM ${vm.name} with its virtiofs devices`,
    why: `virtiofs devices are cold-plugged: ${vmFilesystems(vm).map((f) => f.tag).join(", ")}`,
    consent: true,
    actions: [{ kind: "run", argv: virshArgv(uri, "define", "/dev/stdin"), input: xml }],
  });
}

/** Start errors that mean the machine ran out of PCI slots for per-folder devices. */
export function pciExhausted(message: string): boolean {
  return /no more available PCI slots|no free PCI|PCI slot/i.test(message);
}
