import { group, pending } from "./command.ts";
import { readArgs, mutateArgs, vmArg } from "./_shared.ts";
const dir = { dir: { type: "positional", required: false, description: "host folder (default .)", valueHint: "DIR" } } as const;
const opts = { mode: { type: "string", description: "shared-root | shared | git" }, access: { type: "string", description: "rw | ro" }, "guest-dst": { type: "string", description: "guest path (default: same as host)" } } as const;

export default group("share", "host folders in the VM", {
  attach: pending("share attach", "attach a folder", { ...mutateArgs, ...vmArg, ...dir, ...opts }),
  detach: pending("share detach", "detach a folder", { ...mutateArgs, ...vmArg, ...dir }),
  list: pending("share list", "attached folders", { ...readArgs, ...vmArg }),
  sync: pending("share sync", "push or pull a git-mode folder", { ...mutateArgs, ...vmArg, ...dir, push: { type: "boolean" }, pull: { type: "boolean" } }),
});
