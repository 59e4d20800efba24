// aivm vm create|up|down|restart|delete|list|status|ip|wait|ssh|xml|cloud-init|console-log|update
import type { Vm } from "../config/model.ts";
import { PassThroughExit, UsageError } from "../errors.ts";
import { listVms } from "../flows/list.ts";
import { vmCreate, vmDelete, vmDown, vmRestart, vmUp, type VmUpResult } from "../flows/power.ts";
import { vmUpdate } from "../flows/vm-update.ts";
import { cachedImage } from "../image.ts";
import { log, out, outJson } from "../log.ts";
import { sshArgv } from "../ssh-config.ts";
import { previewDomain, previewSeed, SEED_PARTS, type SeedPart } from "../vm/create.ts";
import { printable } from "../render.ts";
import { readConsoleLog } from "../vm/files.ts";
import { requireIp, vmStatus, waitVm } from "../vm/ip.ts";
import { RESTART_POLICIES, type RestartPolicy } from "../vm/update-plan.ts";
import { context, globalArgs, mutateArgs, readArgs, shellArg, target as pick, userCommand, vmArg, type Ctx } from "./_shared.ts";
import { userCommandText } from "../share/guest.ts";
import { group, leaf } from "./command.ts";

const m = { ...mutateArgs, ...vmArg } as const;
const r = { ...readArgs, ...vmArg } as const;

async function target(args: Record<string, any>, what: string): Promise<{ ctx: Ctx; vm: Vm }> {
  const ctx = context(args);
  return { ctx, vm: (await pick(ctx, args, { what })).vm };
}

function timeoutArg(v: unknown): number | undefined {
  if (v === undefined) return undefined;
  const n = Number(v);
  if (!Number.isInteger(n) || n < 1 || n > 86400) throw new UsageError("--timeout", `${JSON.stringify(v)} is not a whole number of seconds from 1 to 86400`);
  return n;
}

function logUpResult(ctx: Ctx, vm: Vm, r: VmUpResult): void {
  if (ctx.dryRun) return;
  if (r.firewall === "applied") log.info(`firewall for ${vm.network.name}: applied`);
  if (r.recorded) log.info(`recorded ${vm.name} in ${ctx.configPath}`);
  log.info(r.state === "unchanged" ? `${vm.name} is already running; nothing changed` : `${vm.name}: ${r.state}`);
}

const downWord = (s: string, vm: Vm) => (s === "unchanged" ? `${vm.name} is not running; nothing changed` : s === "forced" ? `${vm.name}: forced off` : `${vm.name}: shut down`);

export default group("vm", "VM lifecycle", {
  create: leaf({
    name: "create",
    description: "create the VM's disk, seed and domain",
    args: m,
    run: async ({ args }) => {
      const { ctx, vm } = await target(args, "vm create");
      const res = await vmCreate(ctx.runner, ctx.configPath, vm);
      if (ctx.dryRun) return;
      if (res.recorded) log.info(`recorded ${vm.name} in ${ctx.configPath}`);
      log.info(res.vm === "unchanged" ? `${vm.name} already exists; nothing changed` : `${vm.name}: created in ${vm.dir}`);
    },
  }),
  up: leaf({
    name: "up",
    description: "re-apply the firewall, then start or resume the VM",
    args: m,
    run: async ({ args }) => {
      const { ctx, vm } = await target(args, "vm up");
      logUpResult(ctx, vm, await vmUp(ctx.runner, ctx.configPath, vm));
    },
  }),
  down: leaf({
    name: "down",
    description: "ACPI shutdown, force off after the timeout",
    args: m,
    run: async ({ args }) => {
      const { ctx, vm } = await target(args, "vm down");
      const s = await vmDown(ctx.runner, vm);
      if (!ctx.dryRun) log.info(downWord(s, vm));
    },
  }),
  restart: leaf({
    name: "restart",
    description: "down then up",
    args: m,
    run: async ({ args }) => {
      const { ctx, vm } = await target(args, "vm restart");
      const res = await vmRestart(ctx.runner, ctx.configPath, vm);
      if (!ctx.dryRun) log.info(downWord(res.down, vm));
      logUpResult(ctx, vm, res.up);
    },
  }),
  delete: leaf({
    name: "delete",
    description: "remove the domain and the VM's own directory",
    args: m,
    run: async ({ args }) => {
      const { ctx, vm } = await target(args, "vm delete");
      const res = await vmDelete(ctx.runner, ctx.configPath, vm);
      if (ctx.dryRun) return;
      log.info(res.vm === "deleted" ? `${vm.name}: deleted (domain and ${vm.dir})` : `${vm.name} does not exist; nothing to delete`);
      if (res.forgotten) log.info(`${vm.name}: removed from ${ctx.configPath}`);
      if (res.networkUnused) log.info(`network ${vm.network.name} is used by no VM now; \`aivm fw remove ${vm.network.name}\` and \`aivm net destroy ${vm.network.name}\` remove it`);
    },
  }),
  list: leaf({
    name: "list",
    description: "VMs and their state",
    args: readArgs,
    run: async ({ args }) => {
      const ctx = context(args);
      const rows = await listVms(ctx.runner, ctx.store.doc);
      if (ctx.json) return outJson(rows);
      out(rows.map((s) => `${s.name}\t${s.state}\t${s.network}\t${s.ip ?? "-"}`).join("\n"));
    },
  }),
  status: leaf({
    name: "status",
    description: "the VM's state",
    args: r,
    run: async ({ args }) => {
      const { ctx, vm } = await target(args, "vm status");
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
      const { ctx, vm } = await target(args, "vm ip");
      out(args.wait ? (await waitVm(ctx.runner, vm, { until: "ip" })).ip : await requireIp(ctx.runner, vm));
    },
  }),
  wait: leaf({
    name: "wait",
    description: "wait for IP, SSH and cloud-init; prints the IP",
    args: { ...r, timeout: { type: "string", description: "seconds (default: wait_timeout_s)", valueHint: "S" } },
    run: async ({ args }) => {
      const timeoutS = timeoutArg(args.timeout);
      const { ctx, vm } = await target(args, "vm wait");
      out((await waitVm(ctx.runner, vm, { timeoutS })).ip);
    },
  }),
  ssh: leaf({
    name: "ssh",
    description: "ssh into the VM [-- CMD ARG...] or [--shell 'CMD'] (the remote exit code is passed through)",
    args: { ...globalArgs, ...vmArg, ...shellArg },
    run: async ({ args, rawArgs }) => {
      const text = userCommandText(userCommand("vm ssh", args, rawArgs));
      const { ctx, vm } = await target(args, "vm ssh");
      const ip = await requireIp(ctx.runner, vm);
      const res = await ctx.runner.exec(sshArgv(vm, ip, text === null ? { tty: true } : { command: [text] }), { inherit: true, nothrow: true });
      if (res.exitCode !== 0) throw new PassThroughExit(res.exitCode);
    },
  }),
  xml: leaf({
    name: "xml",
    description: "print the domain XML (no libvirtd needed)",
    args: { ...globalArgs, ...vmArg },
    run: async ({ args }) => {
      const { ctx, vm } = await target(args, "vm xml");
      out(previewDomain(ctx.runner, vm));
    },
  }),
  "cloud-init": leaf({
    name: "cloud-init",
    description: "print a cloud-init document (a placeholder stands in for a host key not generated yet)",
    args: { ...globalArgs, ...vmArg, part: { type: "enum", options: [...SEED_PARTS], description: "user-data | meta-data | network-config", default: "user-data", valueHint: "PART" }, "show-secrets": { type: "boolean", description: "print the guest's private SSH host key instead of a redaction" } },
    run: async ({ args }) => {
      const part = String(args.part ?? "user-data");
      if (!(SEED_PARTS as readonly string[]).includes(part)) throw new UsageError("--part", `${JSON.stringify(part)} is not one of ${SEED_PARTS.join(", ")}`);
      const { ctx, vm } = await target(args, "vm cloud-init");
      out(previewSeed(ctx.runner, vm, part as SeedPart, { showSecrets: !!args["show-secrets"] }));
    },
  }),
  "console-log": leaf({
    name: "console-log",
    description: "print the serial console log (on a terminal, the guest's control characters are shown as \\xNN)",
    args: { ...globalArgs, ...vmArg },
    run: async ({ args }) => {
      const text = readConsoleLog((await target(args, "vm console-log")).vm);
      // the guest writes this file: raw into a pipe, never raw onto the user's terminal
      out(process.stdout.isTTY ? printable(text.replace(/\r\n/g, "\n")) : text);
    },
  }),
  update: leaf({
    name: "update",
    description: "apply config drift to the VM: vCPUs and memory (restart), disk grow only, firewall ports; prints the plan first",
    args: { ...m, restart: { type: "enum", options: [...RESTART_POLICIES], description: "auto (ask, or --yes) | always | never", default: "auto", valueHint: "WHEN" } },
    async run({ args }) {
      const policy = String(args.restart ?? "auto");
      if (!(RESTART_POLICIES as string[]).includes(policy)) throw new UsageError("vm update --restart", `${policy} is not one of: ${RESTART_POLICIES.join(", ")}`);
      const { ctx, vm } = await target(args, "vm update");
      const res = await vmUpdate(ctx.runner, ctx.configPath, vm, policy as RestartPolicy, (lines) => lines.forEach((l) => log.info(l)));
      if (ctx.dryRun) return;
      if (res.applied.length) log.info(`${vm.name}: updated ${res.applied.join(", ")}`);
      if (res.fsGrown) log.info(`${vm.name}: the guest's root filesystem was grown to the new disk size`);
      if (res.restarted) log.info(`${vm.name}: restarted; wait for it with \`aivm vm wait\``);
      if (res.restartPending) log.warn(`${vm.name}: a restart is pending for the changes to take effect: run \`aivm vm restart${(ctx.store.doc.vms ?? []).length > 1 ? ` --vm ${vm.name}` : ""}\``);
    },
  }),
});
