import { pending } from "./command.ts";
import { mutateArgs, vmArg } from "./_shared.ts";
const dir = { dir: { type: "positional", required: false, description: "project folder (default .)", valueHint: "DIR" } } as const;

export const up = pending("up", "network, firewall, image, VM, wait, ssh-config: all in one", { ...mutateArgs, ...vmArg });
export const code = pending("code", "open DIR in VS Code inside the VM", { ...mutateArgs, ...vmArg, ...dir });
export const ssh = pending("ssh", "a shell in the VM at DIR [-- CMD...]", { ...mutateArgs, ...vmArg, ...dir });
