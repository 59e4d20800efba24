// aivm code [DIR] and aivm ssh [DIR] [-- CMD...]
import { PassThroughExit } from "../errors.ts";
import { openInCode, prepareSession, sshSession } from "../flows/session.ts";
import { log, out } from "../log.ts";
import { context, mutateArgs, shellArg, target, userCommand, vmArg, type Ctx } from "./_shared.ts";
import { leaf } from "./command.ts";

/** The VM for a session on DIR (the one rule); undefined when no VM is recorded (the session offers to create one). */
async function sessionVm(ctx: Ctx, args: Record<string, any>, what: string): Promise<string | undefined> {
  const { chosen } = await target(ctx, args, { dir: args.dir ?? ".", what });
  return chosen.rule === "defaults" ? undefined : chosen.name;
}

const dir = { dir: { type: "positional", required: false, description: "project folder (default .)", valueHint: "DIR" } } as const;

export const code = leaf({
  name: "code",
  description: "open DIR in VS Code inside the VM (creates the VM and attaches DIR when needed)",
  args: { ...mutateArgs, ...vmArg, ...dir },
  async run({ args }) {
    const ctx = context(args);
    const s = await prepareSession({ runner: ctx.runner, configPath: ctx.configPath, doc: ctx.store.doc }, { dir: args.dir ?? ".", vmName: await sessionVm(ctx, args, "code"), what: "code" });
    if (ctx.dryRun) return;
    const r = await openInCode(ctx.runner, s);
    if (r.kind === "steps") {
      log.info(r.why);
      out(r.text);
    } else if (r.exitCode !== 0) throw new PassThroughExit(r.exitCode);
  },
});

export const ssh = leaf({
  name: "ssh",
  description: "a login shell in the VM at DIR, or -- CMD ARG... (or --shell 'CMD') run there (exit code passed through)",
  args: { ...mutateArgs, ...vmArg, ...dir, ...shellArg },
  async run({ args, rawArgs }) {
    const command = userCommand("ssh", args, rawArgs);
    const ctx = context(args);
    const s = await prepareSession({ runner: ctx.runner, configPath: ctx.configPath, doc: ctx.store.doc }, { dir: args.dir ?? ".", vmName: await sessionVm(ctx, args, "ssh"), what: "ssh" });
    const code = await sshSession(ctx.runner, s, command);
    if (code !== 0) throw new PassThroughExit(code);
  },
});
