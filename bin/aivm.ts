#!/usr/bin/env bun
// The dispatcher: root command, lazily loaded groups, one main() that maps errors to exit codes.
import "../lib/env.ts";
import { renderUsage, runCommand, type ArgsDef, type CommandDef } from "citty";
import { checkFlags, rootArgs } from "../lib/cli/_shared.ts";
import { root } from "../lib/cli/root.ts";
import { EXIT, formatError } from "../lib/errors.ts";
import { runInterruptCleanups } from "../lib/run.ts";
import pkg from "../package.json" with { type: "json" };

async function resolve<T>(v: T | (() => T | Promise<T>) | Promise<T>): Promise<T> {
  return typeof v === "function" ? await (v as () => T | Promise<T>)() : await v;
}

/** The flags of an argument definition that take a value (`--config F`, `-x F`): their value is not a command word. */
export function valueFlags(args: ArgsDef): Set<string> {
  const flags = new Set<string>();
  for (const [name, def] of Object.entries(args)) {
    if (def.type !== "string" && def.type !== "enum") continue;
    flags.add(`--${name}`);
    for (const a of [(def as { alias?: string | string[] }).alias ?? []].flat()) flags.add(a.length === 1 ? `-${a}` : `--${a}`);
  }
  return flags;
}

interface Split { cmd: CommandDef<any>; parent?: CommandDef<any>; path: string[]; rest: string[]; unknown?: string }

/**
 * Split argv into the command path (`vm up`) and everything else, wherever the global flags were typed: citty takes
 * the first non-flag word as the subcommand, so `--config F vm up` must become `vm up --config F`. A word that names
 * no subcommand of a group is an unknown command (`unknown`), with or without --help.
 */
export async function splitPath(argv: string[]): Promise<Split> {
  let cmd: CommandDef<any> = root;
  let parent: CommandDef<any> | undefined;
  let takesValue = valueFlags(rootArgs);
  const path: string[] = [];
  const rest: string[] = [];
  let positional = false;
  for (let i = 0; i < argv.length; i++) {
    const word = argv[i]!;
    if (word === "--") { rest.push(...argv.slice(i)); break; }
    if (word.startsWith("-")) {
      rest.push(word);
      if (takesValue.has(word) && i + 1 < argv.length) rest.push(argv[++i]!);
      continue;
    }
    const subs = (await resolve(cmd.subCommands)) as Record<string, unknown> | undefined;
    if (!positional && subs && word in subs) {
      parent = cmd;
      cmd = await resolve(subs[word] as CommandDef<any>);
      path.push(word);
      takesValue = new Set([...valueFlags(rootArgs), ...valueFlags((await resolve(cmd.args)) ?? {})]);
    } else if (!positional && subs && !cmd.run) {
      return { cmd, parent, path, rest, unknown: word };
    } else {
      positional = true;
      rest.push(word);
    }
  }
  return { cmd, parent, path, rest };
}

export async function main(argv: string[]): Promise<number> {
  const beforeDash = argv.includes("--") ? argv.slice(0, argv.indexOf("--")) : argv;
  try {
    if (argv.length === 1 && (argv[0] === "--version" || argv[0] === "-V")) {
      process.stdout.write(`${pkg.version}\n`);
      return EXIT.OK;
    }
    const { cmd, parent, path, rest, unknown } = await splitPath(argv);
    if (unknown !== undefined) {
      const name = path.join(" ");
      process.stderr.write(`aivm: unknown command: ${name ? `${name} ` : ""}${unknown}\nhint: see \`aivm ${name ? `${name} ` : ""}--help\`\n`);
      return EXIT.USAGE;
    }
    if (argv.length === 0 || beforeDash.includes("--help") || beforeDash.includes("-h")) {
      process.stdout.write((await renderUsage(cmd, parent)) + "\n");
      return argv.length === 0 ? EXIT.USAGE : EXIT.OK;
    }
    if (cmd.subCommands && !cmd.run) {
      checkFlags(rest, path.length ? { ...rootArgs, ...((await resolve(cmd.args)) ?? {}) } : rootArgs);
      const subs = (await resolve(cmd.subCommands)) as Record<string, unknown>;
      process.stderr.write(`aivm: ${path.length ? `${path.join(" ")}: which subcommand?` : "which command?"} one of: ${Object.keys(subs).join(", ")}\nhint: see \`aivm ${path.length ? `${path.join(" ")} ` : ""}--help\`\n`);
      return EXIT.USAGE;
    }
    await runCommand(cmd, { rawArgs: rest, data: { root } });
    return Number(process.exitCode ?? 0);
  } catch (err) {
    const { lines, exitCode } = formatError(err);
    for (const l of lines) process.stderr.write(l + "\n");
    if (argv.includes("-v") || argv.includes("--verbose")) process.stderr.write(`${(err as Error)?.stack ?? ""}\n`);
    return exitCode;
  }
}

if (import.meta.main) {
  // Ctrl-C or a TERM: stop the children aivm started, undo what was half-made (partial files), then exit.
  const stop = (code: number) => () => {
    runInterruptCleanups();
    process.stderr.write("\naivm: interrupted\n");
    process.exit(code);
  };
  process.on("SIGINT", stop(EXIT.INTERRUPTED));
  process.on("SIGTERM", stop(128 + 15));
  process.on("SIGHUP", stop(128 + 1));
  process.exitCode = await main(process.argv.slice(2));
}
