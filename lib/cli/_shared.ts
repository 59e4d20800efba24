// Flag bundles shared by commands, and the per-invocation context (config, runner).
import type { ArgsDef } from "citty";
import { loadStore, readConfigText, Store } from "../config/store.ts";
import { realRunner, Runner } from "../run.ts";
import { setVerbosity } from "../log.ts";
import { checkName } from "../validate.ts";
import { configPath } from "../config/model.ts";
import { AivmError, ConfigError, EXIT, UsageError } from "../errors.ts";
import { shellQuote } from "../shell.ts";
import { storeExposure } from "../share/preflight.ts";
import { targetVm, type Target } from "../flows/target.ts";

export const globalArgs = {
  config: { type: "string", description: "config file (default: $AIVM_CONFIG or $XDG_CONFIG_HOME/aivm/config.toml)", valueHint: "FILE" },
  verbose: { type: "boolean", alias: "v", description: "show debug logs and every command run" },
  quiet: { type: "boolean", alias: "q", description: "only warnings and errors on stderr" },
} as const satisfies ArgsDef;

export const vmArg = { vm: { type: "string", description: "VM name (default: the VM this folder is attached to, else the only VM, else ask)", valueHint: "VM" } } as const satisfies ArgsDef;
export const jsonArg = { json: { type: "boolean", description: "print JSON on stdout" } } as const satisfies ArgsDef;
export const dryRunArg = { "dry-run": { type: "boolean", description: "print every command and file instead of running or writing it" } } as const satisfies ArgsDef;
export const yesArg = { yes: { type: "boolean", alias: "y", description: "approve every step without asking" } } as const satisfies ArgsDef;

export const readArgs = { ...globalArgs, ...jsonArg } as const satisfies ArgsDef;
/** What may be typed before the command words (`aivm --config F vm up`). */
export const rootArgs = { ...globalArgs, ...vmArg } as const satisfies ArgsDef;
export const mutateArgs = { ...globalArgs, ...dryRunArg, ...yesArg } as const satisfies ArgsDef;

export interface Ctx {
  configPath: string;
  store: Store;
  runner: Runner;
  json: boolean;
  dryRun: boolean;
  yes: boolean;
}

/** Hooks for tests: inject a runner instead of the real one. */
export const inject: { runner?: (opts: { dryRun: boolean; yes: boolean }) => Runner } = {};

/**
 * A store named explicitly (--config or $AIVM_CONFIG) that does not exist is a typo, not an empty store: exit 78
 * before anything runs or is created. `config init` (mayCreate) and `config path` (loadConfig: false) skip this.
 */
export function checkExplicitConfig(args: Record<string, unknown>, path: string): void {
  if (!args.config && !process.env.AIVM_CONFIG) return;
  if (readConfigText(path) === null) {
    throw new ConfigError(`${path}: no such file`, `create it with \`aivm config init --config ${shellQuote(path)}\`, or drop --config for the default store`);
  }
}

export function context(args: Record<string, unknown>, opts: { loadConfig?: boolean; mayCreate?: boolean } = {}): Ctx {
  setVerbosity({ verbose: !!args.verbose, quiet: !!args.quiet });
  if (args.vm !== undefined) checkName("VM", String(args.vm));
  const path = configPath(args.config as string | undefined);
  if (opts.loadConfig !== false && !opts.mayCreate) checkExplicitConfig(args, path);
  const dryRun = !!args["dry-run"] || !!args.dryRun;
  const yes = !!args.yes;
  const store = opts.loadConfig === false ? { path, doc: {}, hash: null, text: null } : loadStore(path);
  const runner = inject.runner ? inject.runner({ dryRun, yes }) : realRunner({ dryRun, yes });
  if (opts.loadConfig !== false) {
    const exposed = storeExposure(runner.host, store.doc, path);
    if (exposed) throw new AivmError("config", `refusing to act: ${exposed}`, EXIT.FAILED, "move the store out of that folder (`aivm --config NEW/config.toml ...`), or take that attachment out of it with `aivm config edit`");
  }
  return { configPath: path, store, runner, json: !!args.json, dryRun, yes };
}

/** `--shell CMD`: one command line for the guest's shell, on purpose (ssh and vm ssh). */
export const shellArg = { shell: { type: "string", description: "run this one shell command line in the guest (the guest's shell splits and expands it), instead of -- CMD ARG...", valueHint: "CMD" } } as const satisfies ArgsDef;

/** What to run in the guest: `-- CMD ARG...` (each argument kept whole) or `--shell 'CMD'`, never both. */
export function userCommand(what: string, args: Record<string, unknown>, rawArgs: string[]): { argv?: string[]; shell?: string } {
  const argv = afterDashDash(rawArgs);
  if (args.shell !== undefined) {
    if (argv.length) throw new UsageError(what, "give either --shell 'CMD' or -- CMD ARG..., not both");
    if (String(args.shell).trim() === "") throw new UsageError(what, "--shell needs a command line");
    return { shell: String(args.shell) };
  }
  return { argv };
}

/** The argv after a literal `--` (citty merges it into args._). */
export function afterDashDash(rawArgs: string[]): string[] {
  const i = rawArgs.indexOf("--");
  return i < 0 ? [] : rawArgs.slice(i + 1);
}

/** citty ignores unknown flags; we refuse them (exit 2). */
export function checkFlags(rawArgs: string[], args: ArgsDef): void {
  const known = new Set<string>(["help", "h"]);
  for (const [k, d] of Object.entries(args)) {
    known.add(k);
    known.add(k.replace(/[A-Z]/g, (c) => "-" + c.toLowerCase()));
    const alias = (d as { alias?: string | string[] }).alias;
    for (const a of [alias ?? []].flat()) known.add(a);
  }
  for (const a of rawArgs) {
    if (a === "--") break;
    if (!a.startsWith("-") || a === "-") continue;
    const name = a.replace(/^--?/, "").split("=")[0]!.replace(/^no-/, "");
    if (a.startsWith("--") ? !known.has(name) && !known.has(a.slice(2).split("=")[0]!) : ![...name].every((c) => known.has(c))) {
      throw new UsageError("unknown option", a, "see --help");
    }
  }
}

/** The VM a VM-scoped command works on (--vm, the folder's VM, the only VM, a pick list): lib/flows/target.ts. */
export function target(ctx: Ctx, args: Record<string, unknown>, o: { dir?: string; what: string }): Promise<Target> {
  return targetVm(ctx.runner, ctx.store.doc, { name: args.vm as string | undefined, dir: o.dir, what: o.what });
}

/** Every value of a repeatable flag (`--section a --section b`, `--section=a`): citty keeps only the last. */
export function repeated(rawArgs: string[], name: string): string[] {
  const values: string[] = [];
  for (let i = 0; i < rawArgs.length; i++) {
    const a = rawArgs[i]!;
    if (a === "--") break;
    if (a === `--${name}` && i + 1 < rawArgs.length) values.push(rawArgs[++i]!);
    else if (a.startsWith(`--${name}=`)) values.push(a.slice(name.length + 3));
  }
  return values;
}
