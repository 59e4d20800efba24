// A thin wrapper over citty's defineCommand: refuses unknown flags and keeps commands to "parse, call, print".
import { defineCommand, type ArgsDef, type CommandDef } from "citty";
import { checkFlags } from "./_shared.ts";
import { NotImplementedError } from "../errors.ts";

export interface LeafSpec<A extends ArgsDef> {
  name: string;
  description: string;
  args: A;
  run: (ctx: { args: Record<string, any>; rawArgs: string[] }) => unknown | Promise<unknown>;
}

export function leaf<A extends ArgsDef>(spec: LeafSpec<A>): CommandDef<A> {
  return defineCommand({
    meta: { name: spec.name, description: spec.description },
    args: spec.args,
    async run({ args, rawArgs }) {
      checkFlags(rawArgs, spec.args);
      return spec.run({ args: args as Record<string, any>, rawArgs });
    },
  });
}

/** A command whose behaviour a later issue fills in: exits 1 with `not implemented yet: <command>`. */
export function pending<A extends ArgsDef>(path: string, description: string, args: A): CommandDef<A> {
  return leaf({
    name: path.split(" ").pop()!,
    description,
    args,
    run: () => {
      throw new NotImplementedError(`aivm ${path}`);
    },
  });
}

export function group(name: string, description: string, subCommands: Record<string, CommandDef<any> | (() => Promise<CommandDef<any>>)>): CommandDef {
  return defineCommand({ meta: { name, description }, subCommands });
}
