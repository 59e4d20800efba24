// aivm help plan
import { isDefaultConfigPath } from "../config/model.ts";
import { out } from "../log.ts";
import { shellQuote } from "../shell.ts";
import { context, globalArgs } from "./_shared.ts";
import { group, leaf } from "./command.ts";

export function planLines(configPath: string): string[] {
  const c = isDefaultConfigPath(configPath) ? "" : ` --config ${shellQuote(configPath)}`;
  return [
    `1. aivm config init${c}          # detect defaults: SSH key, free subnet, sizes, pinned image`,
    `2. aivm doctor${c}               # check the host can run aivm`,
    `3. aivm net create${c}           # the VM's own NAT network`,
    `4. aivm fw apply${c}             # its nftables isolation`,
    `5. aivm image fetch${c}          # the pinned base image, verified`,
    `6. aivm vm create${c} && aivm vm up${c}   # overlay disk, seed, domain; start it`,
    `7. aivm vm wait${c}              # IP, SSH with the pinned host key, cloud-init`,
    `8. aivm ssh-config upsert${c}    # the ~/.ssh/config block`,
    `9. aivm code${c} .               # open this folder in VS Code inside the VM`,
    `(steps 3-8 in one command: aivm up${c})`,
  ];
}

export default group("help", "guides", {
  plan: leaf({
    name: "plan",
    description: "the explicit step-by-step flow",
    args: globalArgs,
    run({ args }) {
      out(planLines(context(args, { loadConfig: false }).configPath).join("\n"));
    },
  }),
});
