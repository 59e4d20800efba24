// aivm completion bash|zsh|fish, and the name lists the scripts ask for (--list vms|networks)
import { networkNames, vmNames } from "../config/resolve.ts";
import { bashScript, commandTree, fishScript, SHELLS, zshScript } from "../completion.ts";
import { AivmError, UsageError } from "../errors.ts";
import { out } from "../log.ts";
import { context, globalArgs } from "./_shared.ts";
import { leaf } from "./command.ts";

export default leaf({
  name: "completion",
  description: "print a shell completion script: bash | zsh | fish",
  args: {
    ...globalArgs,
    shell: { type: "positional", required: false, description: "bash | zsh | fish", valueHint: "SHELL" },
    list: { type: "enum", options: ["vms", "networks"], description: "print names for completion: vms | networks", valueHint: "WHAT" },
  },
  async run({ args, data }) {
    if (args.list) {
      const ctx = context(args);
      if (args.list === "vms") out(vmNames(ctx.store.doc).join("\n"));
      else if (args.list === "networks") out(networkNames(ctx.store.doc).join("\n"));
      else throw new UsageError("completion --list", `${args.list} is not one of: vms, networks`);
      return;
    }
    const shell = args.shell as string | undefined;
    if (!shell || !SHELLS.includes(shell)) throw new UsageError("completion", `${shell ? `${shell} is not` : "name"} one of: ${SHELLS.join(", ")}`);
    if (!data.root) throw new AivmError("completion", "the command tree was not handed over");
    const nodes = await commandTree(data.root);
    out(shell === "bash" ? bashScript(nodes) : shell === "zsh" ? zshScript(nodes) : fishScript(nodes));
  },
});
