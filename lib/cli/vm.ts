import { group, pending } from "./command.ts";
import { globalArgs, readArgs, mutateArgs, vmArg } from "./_shared.ts";
const m = { ...mutateArgs, ...vmArg } as const;
const r = { ...readArgs, ...vmArg } as const;

export default group("vm", "VM lifecycle", {
  create: pending("vm create", "create the VM's disk, seed and domain", m),
  up: pending("vm up", "start or resume the VM", m),
  down: pending("vm down", "ACPI shutdown, force off after the timeout", m),
  restart: pending("vm restart", "down then up", m),
  delete: pending("vm delete", "remove the domain and the VM's own directory", m),
  list: pending("vm list", "VMs and their state", readArgs),
  status: pending("vm status", "the VM's state", r),
  ip: pending("vm ip", "print the VM's IPv4 address", r),
  wait: pending("vm wait", "wait for IP, SSH and cloud-init", r),
  ssh: pending("vm ssh", "ssh into the VM [-- CMD...]", { ...globalArgs, ...vmArg }),
  xml: pending("vm xml", "print the domain XML", { ...globalArgs, ...vmArg }),
  "cloud-init": pending("vm cloud-init", "print a cloud-init document", { ...globalArgs, ...vmArg, part: { type: "string", description: "user-data | meta-data | network-config", default: "user-data" } }),
  "console-log": pending("vm console-log", "print the serial console log", { ...globalArgs, ...vmArg }),
  update: pending("vm update", "apply config drift to the VM", { ...m, restart: { type: "string", description: "auto | always | never", default: "auto" } }),
});
