import { group, pending } from "./command.ts";
import { globalArgs, readArgs, mutateArgs } from "./_shared.ts";
const name = { name: { type: "positional", required: false, description: "network name", valueHint: "NAME" } } as const;

export default group("net", "libvirt NAT networks", {
  create: pending("net create", "define, start and autostart a network", { ...mutateArgs, ...name }),
  destroy: pending("net destroy", "stop and undefine a network", { ...mutateArgs, ...name, force: { type: "boolean", description: "even while VMs use it" } }),
  status: pending("net status", "defined/active/autostart/bridge/leases", { ...readArgs, ...name }),
  list: pending("net list", "networks in the store", readArgs),
  xml: pending("net xml", "print the network XML", { ...globalArgs, ...name }),
});
