import { group, pending } from "./command.ts";
import { globalArgs, mutateArgs, vmArg } from "./_shared.ts";

export default group("ssh-config", "the managed block in ~/.ssh/config", {
  print: pending("ssh-config print", "print the VM's Host block", { ...globalArgs, ...vmArg }),
  upsert: pending("ssh-config upsert", "write the block into ~/.ssh/config", { ...mutateArgs, ...vmArg }),
  remove: pending("ssh-config remove", "remove the block from ~/.ssh/config", { ...mutateArgs, ...vmArg }),
});
