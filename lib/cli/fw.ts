import { group, pending } from "./command.ts";
import { globalArgs, readArgs, mutateArgs } from "./_shared.ts";
const name = { name: { type: "positional", required: false, description: "network name", valueHint: "NETWORK" } } as const;

export default group("fw", "nftables isolation per network", {
  apply: pending("fw apply", "replace the network's nftables table atomically", { ...mutateArgs, ...name }),
  remove: pending("fw remove", "delete the network's nftables table", { ...mutateArgs, ...name }),
  status: pending("fw status", "compare the live table with the config", { ...readArgs, ...name }),
  rules: pending("fw rules", "print the nftables ruleset", { ...globalArgs, ...name }),
});
