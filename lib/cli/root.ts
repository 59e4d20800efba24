// The root command: lazily loaded groups. Kept out of bin/aivm.ts so commands (completion) can walk the tree
// without importing the entry module while it is still running main().
import { defineCommand, type CommandDef } from "citty";
import pkg from "../../package.json" with { type: "json" };

const lazy = (load: () => Promise<{ default: CommandDef<any> }>) => () => load().then((m) => m.default);

export const root = defineCommand({
  meta: { name: "aivm", version: pkg.version, description: "Local libvirt/KVM sandbox VMs for coding agents" },
  subCommands: {
    config: lazy(() => import("./config.ts")),
    net: lazy(() => import("./net.ts")),
    fw: lazy(() => import("./fw.ts")),
    image: lazy(() => import("./image.ts")),
    vm: lazy(() => import("./vm.ts")),
    share: lazy(() => import("./share.ts")),
    "ssh-config": lazy(() => import("./ssh-config.ts")),
    up: () => import("./session.ts").then((m) => m.up),
    code: () => import("./session.ts").then((m) => m.code),
    ssh: () => import("./session.ts").then((m) => m.ssh),
    status: () => import("./status.ts").then((m) => m.status),
    list: () => import("./status.ts").then((m) => m.list),
    doctor: () => import("./status.ts").then((m) => m.doctor),
    host: () => import("./status.ts").then((m) => m.host),
    help: () => import("./status.ts").then((m) => m.help),
    completion: () => import("./status.ts").then((m) => m.completion),
  },
});

