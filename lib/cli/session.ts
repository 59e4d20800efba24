import { readFileSync } from "node:fs";
import { leaf } from "./command.ts";
import { afterDashDash, context, jsonArg, mutateArgs, vmArg, type Ctx } from "./_shared.ts";
import { resolveVm } from "../config/resolve.ts";
import { log, out, outJson } from "../log.ts";
import { PassThroughExit } from "../errors.ts";
import { up as bringUpVm, logUp } from "../flows/up.ts";
import { prepareSession, workstationSteps } from "../flows/session.ts";
import { initConfig } from "./config.ts";
import { sshArgv, upsertSshConfig } from "../ssh-config.ts";
import { sessionCommand } from "../share/guest.ts";
import { vmFiles } from "../vm/files.ts";
const dir = { dir: { type: "positional", required: false, description: "project folder (default .)", valueHint: "DIR" } } as const;

export const up = leaf({
  name: "up",
  description: "network, firewall, image, VM, wait, ssh-config: all in one (idempotent)",
  args: { ...mutateArgs, ...vmArg, ...jsonArg },
  async run({ args }) {
    const ctx = context(args);
    const vm = resolveVm(ctx.store.doc, args.vm);
    
    const report = await bringUpVm(ctx.runner, ctx.configPath, ctx.store.doc, vm);
    if (ctx.json) outJson(report);
    logUp(report);
  },
});

async function session(ctx: Ctx, args: Record<string, any>, what: string) {
  return prepareSession(
    {
      runner: ctx.runner,
      configPath: ctx.configPath,
      doc: ctx.store.doc,
      initConfig: async () => {
        await initConfig(ctx, { defaults: true, force: false });
      },
    },
    { dir: args.dir ?? ".", vmName: args.vm, what },
  );
}

export const code = leaf({
  name: "code",
  description: "open DIR in VS Code inside the VM (creates the VM and attaches DIR when needed)",
  args: { ...mutateArgs, ...vmArg, ...dir },
  async run({ args }) {
    const ctx = context(args);
    const s = await session(ctx, args, "code");
    if (ctx.dryRun) return;
    await upsertSshConfig(ctx.runner, s.vm, s.ip);
    if (s.warm) await ctx.runner.exec(sshArgv(s.vm, s.ip, { batch: true, connectTimeoutS: 10, command: sessionCommand(s.att, ["true"]) }), { what: `mount ${s.att.guest_dst} in ${s.vm.name}` });
    if (!Bun.which("code") || process.env.SSH_CONNECTION) {
      log.info(process.env.SSH_CONNECTION ? "aivm runs over SSH: open the folder from your workstation" : "`code` is not on PATH here: open the folder from a workstation");
      out(workstationSteps(s.vm, s.ip, s.cwd, readFileSync(vmFiles(s.vm).hostKeyPub, "utf8")));
      return;
    }
    const r = await ctx.runner.exec(["code", "--remote", `ssh-remote+${s.vm.name}`, s.cwd], { inherit: true, nothrow: true });
    if (r.exitCode !== 0) throw new PassThroughExit(r.exitCode);
  },
});

export const ssh = leaf({
  name: "ssh",
  description: "a login shell in the VM at DIR, or -- CMD... run there (exit code passed through)",
  args: { ...mutateArgs, ...vmArg, ...dir },
  async run({ args, rawArgs }) {
    const ctx = context(args);
    const command = afterDashDash(rawArgs);
    const s = await session(ctx, args, "ssh");
    const argv = sshArgv(s.vm, s.ip, { ...(command.length ? {} : { tty: true }), command: sessionCommand(s.att, command, s.cwd) });
    const r = await ctx.runner.exec(argv, { inherit: true, nothrow: true });
    if (r.exitCode !== 0) throw new PassThroughExit(r.exitCode);
  },
});
