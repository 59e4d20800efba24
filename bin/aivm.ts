#!/usr/bin/env bun
// The dispatcher: root command, lazily loaded groups, one main() that maps errors to exit codes.
import "../lib/env.ts";
import { defineCommand, renderUsage, runCommand, type CommandDef } from "citty";
import { EXIT, formatError } from "../lib/errors.ts";
import pkg from "../package.json" with { type: "json" };

const lazy = (load: () => Promise<{ default: CommandDef<any> }>) => () => load().then((m) => m.default);

export const root = defineCommand({
  meta: { name: "aivm", version: pkg.version, description: "Local libvirt/KVM sandbox VMs for coding agents" },
  subCommands: {
    config: lazy(() => import("../lib/cli/config.ts")),
    net: lazy(() => import("../lib/cli/net.ts")),
    fw: lazy(() => import("../lib/cli/fw.ts")),
    image: lazy(() => import("../lib/cli/image.ts")),
    vm: lazy(() => import("../lib/cli/vm.ts")),
    share: lazy(() => import("../lib/cli/share.ts")),
    "ssh-config": lazy(() => import("../lib/cli/ssh-config.ts")),
    up: () => import("../lib/cli/session.ts").then((m) => m.up),
    code: () => import("../lib/cli/session.ts").then((m) => m.code),
    ssh: () => import("../lib/cli/session.ts").then((m) => m.ssh),
    status: () => import("../lib/cli/status.ts").then((m) => m.status),
    list: () => import("../lib/cli/status.ts").then((m) => m.list),
    doctor: () => import("../lib/cli/status.ts").then((m) => m.doctor),
    host: () => import("../lib/cli/status.ts").then((m) => m.host),
    help: () => import("../lib/cli/status.ts").then((m) => m.help),
    completion: () => import("../lib/cli/status.ts").then((m) => m.completion),
  },
});

async function resolve<T>(v: T | (() => T | Promise<T>) | Promise<T>): Promise<T> {
  return typeof v === "function" ? await (v as () => T | Promise<T>)() : await v;
}

/** The deepest command named by the positional words of argv, and its parents. */
async function findCommand(argv: string[]): Promise<{ cmd: CommandDef<any>; parent?: CommandDef<any> }> {
  let cmd: CommandDef<any> = root;
  let parent: CommandDef<any> | undefined;
  for (const word of argv) {
    if (word === "--") break;
    if (word.startsWith("-")) continue;
    const subs = await resolve(cmd.subCommands);
    if (!subs || !(word in subs)) break;
    parent = cmd;
    cmd = await resolve((subs as Record<string, any>)[word]);
  }
  return { cmd, parent };
}

export async function main(argv: string[]): Promise<number> {
  const beforeDash = argv.includes("--") ? argv.slice(0, argv.indexOf("--")) : argv;
  try {
    if (argv.length === 1 && (argv[0] === "--version" || argv[0] === "-V")) {
      process.stdout.write(`${pkg.version}\n`);
      return EXIT.OK;
    }
    if (argv.length === 0 || beforeDash.includes("--help") || beforeDash.includes("-h")) {
      const { cmd, parent } = await findCommand(argv);
      process.stdout.write((await renderUsage(cmd, parent)) + "\n");
      return argv.length === 0 ? EXIT.USAGE : EXIT.OK;
    }
    const { cmd } = await findCommand(argv);
    if (cmd !== root && cmd.subCommands && !cmd.run) {
      const words = beforeDash.filter((w) => !w.startsWith("-"));
      const subs = await resolve(cmd.subCommands) as Record<string, unknown>;
      const asked = words[words.findIndex((w) => !(w in subs) && w !== (cmd.meta as { name?: string })?.name)];
      const name = (await resolve(cmd.meta))?.name;
      process.stderr.write(asked ? `aivm: unknown command: ${name} ${asked}\n` : `aivm: ${name}: which subcommand? one of: ${Object.keys(subs).join(", ")}\n`);
      return EXIT.USAGE;
    }
    await runCommand(root, { rawArgs: argv });
    return Number(process.exitCode ?? 0);
  } catch (err) {
    const e = err as { code?: string; message?: string };
    if (e?.code === "E_UNKNOWN_COMMAND" || e?.code === "E_NO_COMMAND") {
      process.stderr.write(`aivm: ${(e.message ?? "unknown command").replace(/\x1b\[[0-9;]*m/g, "").toLowerCase().replace(/\.$/, "")}\nhint: see \`aivm --help\`\n`);
      return EXIT.USAGE;
    }
    const { lines, exitCode } = formatError(err);
    for (const l of lines) process.stderr.write(l + "\n");
    if (argv.includes("-v") || argv.includes("--verbose")) process.stderr.write(`${(err as Error)?.stack ?? ""}\n`);
    return exitCode;
  }
}

if (import.meta.main) {
  let interrupted = false;
  process.on("SIGINT", () => {
    if (interrupted) process.exit(EXIT.INTERRUPTED);
    interrupted = true;
    process.stderr.write("\naivm: interrupted\n");
    process.exit(EXIT.INTERRUPTED);
  });
  const code = await main(process.argv.slice(2));
  process.exitCode = code;
}
