// A thin wrapper over citty's defineCommand: refuses unknown flags and keeps commands to "parse, call, print".
import { defineCommand, type ArgsDef, type CommandDef } from "citty";
import { checkFlags } from "./_shared.ts";

/** What main() hands every command besides its arguments: the command tree (for completion and help tree). */
export interface RunData { root?: CommandDef<any> }

export interface LeafSpec<A extends ArgsDef> {
  name: string;
  description: string;
  args: A;
  run: (ctx: { args: Record<string, any>; rawArgs: string[]; data: RunData }) => unknown | Promise<unknown>;
}

export function leaf<A extends ArgsDef>(spec: LeafSpec<A>): CommandDef<A> {
  return defineCommand({
    meta: { name: spec.name, description: spec.description },
    args: spec.args,
    async run({ args, rawArgs, data }) {
      checkFlags(rawArgs, spec.args);
      return spec.run({ args: args as Record<string, any>, rawArgs, data: (data ?? {}) as RunData });
    },
  });
}

export function group(name: string, description: string, subCommands: Record<string, CommandDef<any> | (() => Promise<CommandDef<any>>)>): CommandDef {
  return defineCommand({ meta: { name, description }, subCommands });
}
