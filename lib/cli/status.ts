import { group, pending } from "./command.ts";
import { globalArgs, readArgs, mutateArgs, vmArg } from "./_shared.ts";

export const status = pending("status", "every layer: true, false or unknown with a reason", { ...readArgs, ...vmArg, detail: { type: "boolean", description: "show the evidence" } });
export const list = pending("list", "VMs, networks and attachments", readArgs);
export const doctor = pending("doctor", "can this host run aivm?", readArgs);
export const host = group("host", "host set-up", {
  "install-deps": pending("host install-deps", "install the host packages aivm needs", mutateArgs),
});
export const help = group("help", "guides", {
  plan: pending("help plan", "the step-by-step flow", globalArgs),
});
export const completion = pending("completion", "print a shell completion script (bash|zsh|fish)", { shell: { type: "positional", required: true, description: "bash | zsh | fish" } });
