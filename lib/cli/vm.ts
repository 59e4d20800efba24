
import { existsSync, readFileSync } from "node:fs";
import { afterDashDash, context, globalArgs, mutateArgs, readArgs, vmArg, type Ctx } from "./_shared.ts";
import type { Vm } from "../config/model.ts";
import { recordVm, resolveVm, vmNames } from "../config/resolve.ts";
import { updateStore } from "../config/store.ts";
import { domainState } from "../libvirt/virsh.ts";
import { AivmError, EXIT, PassThroughExit, UsageError } from "../errors.ts";
import { applyFirewall } from "../fw.ts";
import { deleteVm, startVm, stopVm } from "../vm/power.ts";
import { group, leaf } from "./command.ts";
import { ensureVm, PLACEHOLDER_HOST_KEY, planDomain, realHost, seedDocuments } from "../vm/create.ts";
import { removeSshConfig, sshArgv } from "../ssh-config.ts";
import { vmIp, vmStatus, waitVm } from "../vm/ip.ts";
import { out, outJson } from "../log.ts";
import { cachedImage } from "../image.ts";
import { chooseAccel, probeAccel } from "../accel.ts";
import { renderDomainXml } from "../domain.ts";
import { vmFiles, withVmLock } from "../vm/files.ts";
import { log } from "../log.ts";
import { describePlan, planUpdate, RESTART_POLICIES } from "../vm/update-plan.ts";
import { applyUpdate, updateFacts } from "../flows/vm-update.ts";

const m = { ...mutateArgs, ...vmArg } as const;

const r = { ...readArgs, ...vmArg } as const;

const PARTS = ["user-data", "meta-data", "network-config"] as const;

function target(args: Record<string, any>): { ctx: Ctx; vm: Vm } {
  const ctx = context(args);
  return { ctx, vm: resolveVm(ctx.store.doc, args.vm as string | undefined) };
}

/** A VM synthesized from [defaults] is recorded in [[vms]] once it exists. */
function record(ctx: Ctx, vm: Vm): void {
  if (vm.recorded) return;
  const { wrote } = updateStore(ctx.configPath, (d) => recordVm(d, vm), { dryRun: ctx.dryRun });
  if (wrote) log.info(`recorded ${vm.name} in ${ctx.configPath}`);
}

async function up(ctx: Ctx, vm: Vm): Promise<void> {
  // read first: an unreachable libvirtd or a VM never created changes nothing (not even the firewall)
  if ((await domainState(ctx.runner, vm.paths.libvirtUri, vm.name)) === "absent") {
    throw new AivmError(`vm up ${vm.name}`, "not created: run aivm vm create (or aivm up)");
  }
  const fw = await applyFirewall(ctx.runner, vm.network);
  if (fw === "applied" && !ctx.dryRun) log.info(`firewall for ${vm.network.name}: applied`);
  const s = await startVm(ctx.runner, vm);
  record(ctx, vm);
  if (!ctx.dryRun) log.info(s === "unchanged" ? `${vm.name} is already running; nothing changed` : `${vm.name}: ${s}`);
}

async function down(ctx: Ctx, vm: Vm): Promise<void> {
  const s = await stopVm(ctx.runner, vm);
  if (!ctx.dryRun) log.info(s === "unchanged" ? `${vm.name} is not running; nothing changed` : s === "forced" ? `${vm.name}: forced off` : `${vm.name}: shut down`);
}

/** Why a running VM has no address we can use, as an error. */
async function noIp(ctx: Ctx, vm: Vm): Promise<never> {
  const s = await domainState(ctx.runner, vm.paths.libvirtUri, vm.name);
  if (s === "absent") throw new AivmError(`vm ${vm.name}`, "not created: run aivm vm create");
  if (s !== "running") throw new AivmError(`vm ${vm.name}`, `the VM is ${s}, so it has no IP address`, EXIT.FAILED, "start it with `aivm vm up`");
  throw new AivmError(`vm ${vm.name}`, "no IP address yet (no DHCP lease)", EXIT.FAILED, "wait for it with `aivm vm ip --wait` or `aivm vm wait`");
}

function timeoutArg(v: unknown): number | undefined {
  if (v === undefined) return undefined;
  const n = Number(v);
  if (!Number.isInteger(n) || n < 1 || n > 86400) throw new UsageError("--timeout", `${JSON.stringify(v)} is not a whole number of seconds from 1 to 86400`);
  return n;
}

export default group("vm", "VM lifecycle", {
  create: leaf({
    name: "create",
    description: "create the VM's disk, seed and domain",
    args: m,
    run: async ({ args }) => {
      const { ctx, vm } = target(args);
      await withVmLock(vm, async () => {
        const s = await ensureVm(ctx.runner, vm);
        record(ctx, vm);
        if (!ctx.dryRun) log.info(s === "unchanged" ? `${vm.name} already exists; nothing changed` : `${vm.name}: created in ${vm.dir}`);
      });
    },
  }),
  up: leaf({
    name: "up",
    description: "re-apply the firewall, then start or resume the VM",
    args: m,
    run: async ({ args }) => {
      const { ctx, vm } = target(args);
      await withVmLock(vm, () => up(ctx, vm));
    },
  }),
  down: leaf({
    name: "down",
    description: "ACPI shutdown, force off after the timeout",
    args: m,
    run: async ({ args }) => {
      const { ctx, vm } = target(args);
      await withVmLock(vm, () => down(ctx, vm));
    },
  }),
  restart: leaf({
    name: "restart",
    description: "down then up",
    args: m,
    run: async ({ args }) => {
      const { ctx, vm } = target(args);
      await withVmLock(vm, async () => {
        await down(ctx, vm);
        await up(ctx, vm);
      });
    },
  }),
  delete: leaf({
    name: "delete",
    description: "remove the domain and the VM's own directory",
    args: m,
    run: async ({ args }) => {
      const { ctx, vm } = target(args);
      await withVmLock(vm, async () => {
        const s = await deleteVm(ctx.runner, vm);
        if (s === "deleted" && !ctx.dryRun) log.info(`${vm.name}: deleted (domain and ${vm.dir})`);
        // forget the VM: its store record (with its attachments) and its ~/.ssh/config block; host folders stay
        const { wrote, store } = updateStore(ctx.configPath, (d) => ({ ...d, vms: (d.vms ?? []).filter((v) => v.name !== vm.name) }), { dryRun: ctx.dryRun });
        if (wrote) log.info(`${vm.name}: removed from ${ctx.configPath}`);
        await removeSshConfig(ctx.runner, vm);
        if (vm.recorded && !(store.doc.vms ?? []).some((v) => v.network === vm.network.name)) {
          log.info(`network ${vm.network.name} is used by no VM now; \`aivm fw remove ${vm.network.name}\` and \`aivm net destroy ${vm.network.name}\` remove it`);
        }
      });
    },
  }),
  list: leaf({
    name: "list",
    description: "VMs and their state",
    args: readArgs,
    run: async ({ args }) => {
      const ctx = context(args);
      const rows = [];
      for (const n of vmNames(ctx.store.doc)) rows.push(await vmStatus(ctx.runner, resolveVm(ctx.store.doc, n)));
      if (ctx.json) return outJson(rows);
      out(rows.map((s) => `${s.name}\t${s.state}\t${s.network}\t${s.ip ?? "-"}`).join("\n"));
    },
  }),
  status: leaf({
    name: "status",
    description: "the VM's state",
    args: r,
    run: async ({ args }) => {
      const { ctx, vm } = target(args);
      const s = await vmStatus(ctx.runner, vm);
      const image = cachedImage(vm.paths, vm.image.sha256);
      const full = {
        ...s, dir: vm.dir, accel: vm.accel, cpus: vm.cpus, memoryMib: vm.memoryMib, diskGib: vm.diskGib,
        image: { sha256: vm.image.sha256, cached: !!image }, recorded: vm.recorded,
      };
      if (ctx.json) return outJson(full);
      out([
        `name: ${s.name}`, `state: ${s.state}`, `network: ${s.network}`, `ip: ${s.ip ?? "-"}`, `dir: ${vm.dir}`,
        `cpus: ${vm.cpus}`, `memory: ${vm.memoryMib} MiB`, `disk: ${vm.diskGib} GiB`, `accel: ${vm.accel}`,
        `image: ${vm.image.sha256.slice(0, 12)} (${image ? "cached" : "not cached"})`,
      ].join("\n"));
    },
  }),
  ip: leaf({
    name: "ip",
    description: "print the VM's IPv4 address",
    args: { ...r, wait: { type: "boolean", description: "wait for the DHCP lease (up to wait_timeout_s)" } },
    run: async ({ args }) => {
      const { ctx, vm } = target(args);
      const ip = args.wait ? (await waitVm(ctx.runner, vm, { until: "ip" })).ip : await vmIp(ctx.runner, vm);
      if (!ip) await noIp(ctx, vm);
      out(ip!);
    },
  }),
  wait: leaf({
    name: "wait",
    description: "wait for IP, SSH and cloud-init; prints the IP",
    args: { ...r, timeout: { type: "string", description: "seconds (default: wait_timeout_s)", valueHint: "S" } },
    run: async ({ args }) => {
      const timeoutS = timeoutArg(args.timeout);
      const { ctx, vm } = target(args);
      const { ip } = await waitVm(ctx.runner, vm, { timeoutS });
      out(ip);
    },
  }),
  ssh: leaf({
    name: "ssh",
    description: "ssh into the VM [-- CMD...] (the remote exit code is passed through)",
    args: { ...globalArgs, ...vmArg },
    run: async ({ args, rawArgs }) => {
      const { ctx, vm } = target(args);
      const command = afterDashDash(rawArgs);
      const ip = (await vmIp(ctx.runner, vm)) ?? (await noIp(ctx, vm));
      const argv = sshArgv(vm, ip, command.length ? { command } : { tty: true });
      const res = await ctx.runner.exec(argv, { inherit: true, nothrow: true });
      if (res.exitCode !== 0) throw new PassThroughExit(res.exitCode);
    },
  }),
  xml: leaf({
    name: "xml",
    description: "print the domain XML (no libvirtd needed)",
    args: { ...globalArgs, ...vmArg },
    run: ({ args }) => {
      const { vm } = target(args);
      const type = chooseAccel(vm.accel, probeAccel());
      out(renderDomainXml(planDomain(vm, { type, image: cachedImage(vm.paths, vm.image.sha256), exists: realHost.exists })));
    },
  }),
  "cloud-init": leaf({
    name: "cloud-init",
    description: "print a cloud-init document (a placeholder stands in for a host key not generated yet)",
    args: { ...globalArgs, ...vmArg, part: { type: "string", description: "user-data | meta-data | network-config", default: "user-data" } },
    run: ({ args }) => {
      const part = String(args.part ?? "user-data");
      if (!(PARTS as readonly string[]).includes(part)) throw new UsageError("--part", `${JSON.stringify(part)} is not one of ${PARTS.join(", ")}`);
      const { vm } = target(args);
      const f = vmFiles(vm);
      const read = (p: string) => (existsSync(p) ? readFileSync(p, "utf8") : null);
      const priv = read(f.hostKey);
      const pub = read(f.hostKeyPub);
      const authorizedKey = read(vm.paths.sshPubkey);
      if (!(priv && pub) && part !== "network-config") log.warn(`${vm.name} has no host key yet (\`aivm vm create\` generates it): this preview shows a placeholder in its place`);
      if (!authorizedKey && part === "user-data") log.warn(`no SSH public key at ${vm.paths.sshPubkey}: this preview shows a placeholder in its place`);
      const docs = seedDocuments(vm, {
        authorizedKey: authorizedKey ?? "ssh-ed25519 PLACEHOLDER-your-key",
        hostKey: priv && pub ? { privateKey: priv, publicKey: pub.trim() } : PLACEHOLDER_HOST_KEY,
      });
      out(docs[part as (typeof PARTS)[number]]);
    },
  }),
  "console-log": leaf({
    name: "console-log",
    description: "print the serial console log",
    args: { ...globalArgs, ...vmArg },
    run: ({ args }) => {
      const { vm } = target(args);
      const path = vmFiles(vm).consoleLog;
      let text: string;
      try {
        text = readFileSync(path, "utf8");
      } catch (e) {
        const code = (e as NodeJS.ErrnoException).code;
        if (code === "ENOENT") throw new AivmError(`vm console-log ${vm.name}`, `no console log at ${path}`, EXIT.FAILED, "it appears when the VM first starts: `aivm vm up`");
        throw new AivmError(`vm console-log ${vm.name}`, `cannot read ${path}: ${code ?? (e as Error).message}`, EXIT.FAILED, code === "EACCES" ? "libvirt writes it as root: re-run with sudo" : undefined);
      }
      out(text);
    },
  }),
  update: leaf({
    name: "update",
    description: "apply config drift to the VM: vCPUs and memory (restart), disk grow only, firewall ports; prints the plan first",
    args: { ...m, restart: { type: "string", description: "auto (ask, or --yes) | always | never", default: "auto", valueHint: "WHEN" } },
    async run({ args }) {
      const policy = String(args.restart ?? "auto");
      if (!(RESTART_POLICIES as string[]).includes(policy)) throw new UsageError("vm update --restart", `${policy} is not one of: ${RESTART_POLICIES.join(", ")}`);
      const { ctx, vm } = target(args);
      await withVmLock(vm, async () => {
        const plan = planUpdate(vm, await updateFacts(ctx.runner, vm));
        for (const l of describePlan(plan)) log.info(l);
        const res = await applyUpdate(ctx.runner, vm, plan, { restart: policy as "auto" | "always" | "never" });
        if (ctx.dryRun) return;
        if (res.applied.length) log.info(`${vm.name}: updated ${res.applied.join(", ")}`);
        if (res.fsGrown) log.info(`${vm.name}: the guest's root filesystem was grown to the new disk size`);
        if (res.restarted) log.info(`${vm.name}: restarted; wait for it with \`aivm vm wait\``);
        if (res.restartPending) log.warn(`${vm.name}: a restart is pending for the changes to take effect: run \`aivm vm restart${(ctx.store.doc.vms ?? []).length > 1 ? ` --vm ${vm.name}` : ""}\``);
      });
    },
  }),
});
