// `aivm help raw`: the plain commands (virsh, nft, curl, qemu-img, ssh-keygen, genisoimage, mount, ssh) that the
// steps of `aivm help plan` amount to, for one resolved VM, its network and its firewall table, from a fresh host.
// Everything comes from the planners the commands use (network XML, ruleset, overlay, seed documents, domain XML,
// host binds, ssh argv, the ssh config block) and is printed with the dry-run quoting (lib/steps.ts), so it runs as
// pasted. What only exists once an earlier command ran (the guest's host key, the DHCP address) is read in the shell
// at that point ($(...) in an unquoted here-document, or $ip).
import { basename, dirname, join } from "node:path";
import { accelChoice, probeAccel } from "../accel.ts";
import type { Vm } from "../config/model.ts";
import { renderDomainXml } from "../domain.ts";
import { fetchArgv } from "../image-fetch.ts";
import { cachedImage, imageFiles } from "../image.ts";
import { macAddress } from "../domain.ts";
import { loadRulesetAction, tableName } from "../fw.ts";
import { createNetworkActions } from "../net.ts";
import type { Runner } from "../run.ts";
import { exportMountPlan } from "../share/host-mounts.ts";
import { folderBindPlan } from "../share/folder-bind.ts";
import { guestIds, guestMountCommand } from "../share/guest.ts";
import { exportRoot, shareRoot } from "../share/names.ts";
import { defaultSshConfigFile, renderSshBlock, sshArgv } from "../ssh-config.ts";
import { describeAction, type Action } from "../steps.ts";
import { heredocWith, shellJoin, shellQuote } from "../shell.ts";
import { seedArgv } from "../cloud-init.ts";
import { hostKeyArgv, overlayArgv, PLACEHOLDER_HOST_KEY, planDomain, seedDocuments, seedScript } from "../vm/create.ts";
import { vmFiles } from "../vm/files.ts";
import { virshArgv } from "../libvirt/virsh.ts";
import type { VmChoice } from "../config/resolve.ts";

/** An address from the documentation range, replaced by $ip in the printed text. */
const IP_MARK = "192.0.2.1";

export interface RawSection { title: string; lines: string[] }

/** The sections, in the order of `aivm help plan`. Pure apart from reading host facts through runner.host. */
export function rawPlan(runner: Runner, vm: Vm): RawSection[] {
  const sudo = !runner.isRoot;
  const run = (a: Action) => describeAction(a, sudo);
  const net = vm.network;
  const uri = vm.paths.libvirtUri;
  const f = vmFiles(vm);
  const host = runner.host;
  const sections: RawSection[] = [];

  sections.push({ title: `3. network ${net.name}: ${net.subnet} on bridge ${net.bridge} (aivm net create)`, lines: createNetworkActions(uri, net).map(run) });
  sections.push({
    title: `4. firewall table inet ${tableName(net.name)} (aivm fw apply)`,
    lines: net.firewall.enabled ? [run(loadRulesetAction(net))] : ["# the firewall is disabled in the config: nothing to load"],
  });

  const files = imageFiles(vm.paths.imageCache, vm.image.sha256);
  const cached = cachedImage(vm.paths, vm.image.sha256);
  sections.push({
    title: `5. base image ${vm.image.sha256.slice(0, 12)} (aivm image fetch)`,
    lines: cached
      ? [`# already cached: ${cached.path}`]
      : [
          shellJoin(["mkdir", "-p", vm.paths.imageCache]),
          shellJoin(fetchArgv(vm.image.url, files.part)),
          `echo ${shellQuote(`${vm.image.sha256}  ${files.part}`)} | sha256sum --check --strict -`,
          shellJoin(["mv", "-T", files.part, files.img]),
        ],
  });

  const image = cached ?? { sha256: vm.image.sha256, path: files.img, format: "qcow2" as const };
  const mark = "ssh-ed25519 AIVMAUTHORIZEDKEYMARK";
  const work = join(f.dir, ".create-by-hand");
  const authorized = host.readFile(vm.paths.sshPubkey);
  const docs = seedDocuments(vm, { authorizedKey: authorized ?? mark, hostKey: PLACEHOLDER_HOST_KEY, ...guestIds(vm, host) });
  const type = accelChoice(vm.accel, probeAccel(host)).type;
  const xml = renderDomainXml(planDomain(vm, { type, image, exists: (p) => host.exists(p) }));
  sections.push({
    title: `6. VM ${vm.name}: disk, host key, seed, domain (aivm vm create)`,
    lines: [
      shellJoin(["install", "-d", "-m", "0755", f.dir]),
      shellJoin(["install", "-d", "-m", "0755", exportRoot(vm)]),
      // as vm create: every file made in a private work directory, then renamed into place
      shellJoin(["mkdir", "-m", "0700", work]),
      shellJoin(overlayArgv(image, join(work, "disk.qcow2"), vm.diskGib)),
      shellJoin(hostKeyArgv(vm.name, join(work, basename(f.hostKey)))),
      ...seedScript(vm, docs, { keyDir: work, seedDir: work, authorizedKeyMark: authorized === null ? mark : undefined }),
      shellJoin(seedArgv(work, join(work, "seed.img"))),
      shellJoin(["chmod", "0600", join(work, "disk.qcow2"), join(work, "seed.img")]),
      ...([["disk.qcow2", f.disk], [basename(f.hostKey), f.hostKey], [basename(f.hostKeyPub), f.hostKeyPub], ["seed.img", f.seed]] as const).map(([from, to]) => shellJoin(["mv", "-T", join(work, from), to])),
      shellJoin(["rm", "-rf", "--", work]),
      run({ kind: "run", argv: virshArgv(uri, "define", "/dev/stdin"), input: xml }),
    ],
  });

  // the export root: the private share directory bound read-only onto it; each folder bound through its stage
  // (aivm also checks, before the last bind, that the stage still holds the folder itself)
  const binds = [
    { kind: "run" as const, argv: ["install", "-d", "-m", "0755", shareRoot(vm)] },
    ...exportMountPlan(vm, new Map()),
    ...vm.attachments.filter((a) => a.mode === "shared-root").flatMap((a) => {
      const p = folderBindPlan(host, vm, a, new Map());
      return [...p.prepare, ...p.guard, ...p.carry];
    }),
  ];
  sections.push({ title: `6. start ${vm.name}, its shared folders bound first (aivm vm up)`, lines: [...binds.map(run), shellJoin(virshArgv(uri, "start", vm.name))] });

  const ssh = (command?: string[]) => shellJoin(sshArgv(vm, IP_MARK, { batch: true, ...(command ? { command } : {}) })).replace(`@${IP_MARK}`, '@"$ip"');
  const mac = macAddress(vm.name);
  sections.push({
    title: `7. wait for its address, SSH with the pinned host key, cloud-init (aivm vm wait)`,
    lines: [
      `until ip=$(${shellJoin(virshArgv(uri, "net-dhcp-leases", net.name, "--mac", mac))} | awk '{print $5}' | cut -d/ -f1 | grep .); do sleep 2; done; echo "$ip"`,
      `until ${ssh(["true"])}; do sleep 2; done`,
      ssh(["cloud-init status --wait"]),
    ],
  });
  const cfg = defaultSshConfigFile();
  sections.push({
    title: `8. the ~/.ssh/config block (aivm ssh-config upsert)`,
    lines: [shellJoin(["mkdir", "-p", "-m", "700", dirname(cfg)]), `cat >> ${shellQuote(cfg)} ${heredocWith(renderSshBlock(vm, IP_MARK), { [`HostName ${IP_MARK}`]: "HostName $ip" })}`],
  });
  if (vm.attachments.length) {
    sections.push({
      title: `9. mount the saved folders in the guest (aivm share attach)`,
      lines: vm.attachments.filter((a) => a.mode !== "git").map((a) => ssh(guestMountCommand(a))),
    });
  }
  return sections;
}

export function formatRaw(vm: Vm, chosen: VmChoice, sections: RawSection[]): string {
  const head = [
    `# The plain commands behind \`aivm help plan\` for VM ${vm.name} (${chosen.why}), network ${vm.network.name}, table inet ${tableName(vm.network.name)}.`,
    `# From a fresh host, in order; each section is what one aivm command does there (aivm also checks first and skips what exists).`,
  ];
  return [...head, ...sections.flatMap((s) => ["", `# ${s.title}`, ...s.lines])].join("\n");
}
