import type { Vm } from "../config/model.ts";
import { AivmError, EXIT } from "../errors.ts";
import { defaultSshConfigFile, removeSshConfig, renderSshBlock, upsertSshConfig } from "../ssh-config.ts";
import { ipFileProblem, readIpFile } from "../vm/files.ts";
import { context, globalArgs, mutateArgs, target as pick, vmArg } from "./_shared.ts";
import { group, leaf } from "./command.ts";
import { out } from "../log.ts";
import { log } from "../log.ts";

async function target(args: Record<string, any>, what: string) {
  const ctx = context(args);
  return { ctx, vm: (await pick(ctx, args, { what })).vm };
}

function ipOf(vm: Vm): string {
  const f = readIpFile(vm);
  if ("ip" in f) return f.ip;
  throw new AivmError(`ssh-config ${vm.name}`, `no IP known${"missing" in f ? " yet" : ""} (${ipFileProblem(f)}): run aivm vm wait`, EXIT.FAILED);
}

export default group("ssh-config", "the managed block in ~/.ssh/config", {
  print: leaf({
    name: "print",
    description: "print the VM's Host block (before `aivm vm wait` has seen an IP, without HostName)",
    args: { ...globalArgs, ...vmArg },
    run: async ({ args }) => {
      const { vm } = await target(args, "ssh-config print");
      const f = readIpFile(vm);
      const ip = "ip" in f ? f.ip : null;
      // like every print command, this renders from [defaults] alone; upsert refuses to write a block without an address
      if (!ip) log.warn(`${vm.name}: no IP known${"missing" in f ? " yet" : ""} (${ipFileProblem(f)}): the block has no HostName; run \`aivm vm wait\``);
      out(renderSshBlock(vm, ip));
    },
  }),
  upsert: leaf({
    name: "upsert",
    description: "write the block into ~/.ssh/config (asks first unless --yes; unchanged: writes nothing)",
    args: { ...mutateArgs, ...vmArg },
    run: async ({ args }) => {
      const { ctx, vm } = await target(args, "ssh-config upsert");
      const file = defaultSshConfigFile();
      const r = await upsertSshConfig(ctx.runner, vm, ipOf(vm), file);
      if (!ctx.dryRun) log.info(r === "unchanged" ? `${file}: the ${vm.name} block is current, nothing changed` : `${file}: ${vm.name} block written`);
    },
  }),
  remove: leaf({
    name: "remove",
    description: "remove the block from ~/.ssh/config",
    args: { ...mutateArgs, ...vmArg },
    run: async ({ args }) => {
      const { ctx, vm } = await target(args, "ssh-config remove");
      const file = defaultSshConfigFile();
      const r = await removeSshConfig(ctx.runner, vm, file);
      if (!ctx.dryRun) log.info(r === "unchanged" ? `${file}: no ${vm.name} block, nothing changed` : `${file}: ${vm.name} block removed`);
    },
  }),
});
