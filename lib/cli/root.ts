// The root command: every group lazily loaded (a command pays only for its own modules). Kept out of bin/aivm.ts
// so tests can walk the tree without running main().
import { defineCommand, type CommandDef } from "citty";
import pkg from "../../package.json" with { type: "json" };
import { rootArgs } from "./_shared.ts";

const lazy = (load: () => Promise<{ default: CommandDef<any> }>) => () => load().then((m) => m.default);

export const root = defineCommand({
  meta: { name: "aivm", version: pkg.version, description: "Local libvirt/KVM sandbox VMs for coding agents" },
  // what may be typed before the command words (`aivm --config F vm up`): shown in --help, completed by the shells
  args: rootArgs,
  subCommands: {
    config: lazy(() => import("./config.ts")),
    net: lazy(() => import("./net.ts")),
    fw: lazy(() => import("./fw.ts")),
    image: lazy(() => import("./image.ts")),
    vm: lazy(() => import("./vm.ts")),
    share: lazy(() => import("./share.ts")),
    attach: () => import("./share.ts").then((m) => m.attachCmd),
    detach: () => import("./share.ts").then((m) => m.detachCmd),
    "ssh-config": lazy(() => import("./ssh-config.ts")),
    up: lazy(() => import("./up.ts")),
    code: () => import("./session.ts").then((m) => m.code),
    ssh: () => import("./session.ts").then((m) => m.ssh),
    status: lazy(() => import("./status.ts")),
    list: lazy(() => import("./list.ts")),
    doctor: lazy(() => import("./doctor.ts")),
    host: lazy(() => import("./host.ts")),
    help: lazy(() => import("./help.ts")),
    completion: lazy(() => import("./completion.ts")),
  },
});
