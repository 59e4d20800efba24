#!/usr/bin/env bun
// The dispatcher: root command, lazily loaded groups, one main() that maps errors to exit codes.
import "../lib/env.ts";
import { renderUsage, runCommand, type CommandDef } from "citty";
import pkg from "../package.json" with { type: "json" };
import { root } from "../lib/cli/root.ts";
import { EXIT, formatError } from "../lib/errors.ts";

async function resolve<T>(v: T | (() => T | Promise<T>) | Promise<T>): Promise<T> {
  return typeof v === "function" ? await (v as () => T | Promise<T>)() : await v;
}

/** Flags that take a value (`--config F`): their value is not a command word. */
const VALUE_FLAGS = new Set(["--config", "--vm", "--mode", "--access", "--guest-dst", "--part", "--restart", "--suite", "--mirror", "--timeout", "--list", "--image-url", "--image-sha256"]);

/**
 * Split argv into the command path (`vm up`) and everything else, wherever the global flags were typed:
 * citty takes the first non-flag word as the subcommand, so `--config F vm up` must become `vm up --config F`.
 */
async function splitPath(argv: string[]): Promise<{ cmd: CommandDef<any>; parent?: CommandDef<any>; path: string[]; rest: string[] }> {
  let cmd: CommandDef<any> = root;
  let parent: CommandDef<any> | undefined;
  const path: string[] = [];
  const rest: string[] = [];
  let positional = false;
  for (let i = 0; i < argv.length; i++) {
    const word = argv[i]!;
    if (word === "--") { rest.push(...argv.slice(i)); break; }
    if (word.startsWith("-")) {
      rest.push(word);
      if (VALUE_FLAGS.has(word) && i + 1 < argv.length) rest.push(argv[++i]!);
      continue;
    }
    const subs = await resolve(cmd.subCommands);
    if (!positional && subs && word in subs) {
      parent = cmd;
      cmd = await resolve((subs as Record<string, any>)[word]);
      path.push(word);
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
    if (argv.length === 0 || beforeDash.includes("--help") || beforeDash.includes("-h")) {
      const { cmd, parent } = await splitPath(argv);
      process.stdout.write((await renderUsage(cmd, parent)) + "\n");
      return argv.length === 0 ? EXIT.USAGE : EXIT.OK;
    }
    const { cmd, path, rest } = await splitPath(argv);
    if (cmd.subCommands && !cmd.run) {
      const subs = (await resolve(cmd.subCommands)) as Record<string, unknown>;
      const asked = rest.find((w, i) => !w.startsWith("-") && !VALUE_FLAGS.has(rest[i - 1] ?? ""));
      const name = path.join(" ");
      if (cmd === root) process.stderr.write(`aivm: unknown command ${asked ?? ""}\nhint: see \`aivm --help\`\n`);
      else process.stderr.write(asked ? `aivm: unknown command: ${name} ${asked}\nhint: see \`aivm ${name} --help\`\n` : `aivm: ${name}: which subcommand? one of: ${Object.keys(subs).join(", ")}\n`);
      return EXIT.USAGE;
    }
    await runCommand(root, { rawArgs: [...path, ...rest] });
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
