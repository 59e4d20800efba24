// Git mode: a clone inside the guest, a remote on the host, explicit push and pull.
import { realpathSync } from "node:fs";
import type { AttachmentDoc, Vm } from "./config/model.ts";
import type { Runner } from "./run.ts";
import { UsageError } from "./errors.ts";
import { sshArgv } from "./ssh-config.ts";
import { remoteCommand } from "./share/guest.ts";

export function gitRemoteName(vm: Vm): string {
  return `aivm-${vm.name}`;
}

/** host git with the repo trusted even when another user owns it (we may run under sudo). */
export function gitArgv(repo: string, ...args: string[]): string[] {
  return ["git", "-c", `safe.directory=${repo}`, "-C", repo, ...args];
}

/** The work tree's top level, or a usage error (exit 2). */
export async function gitTopLevel(runner: Runner, dir: string): Promise<string> {
  const r = await runner.read(gitArgv(dir, "rev-parse", "--show-toplevel"), { nothrow: true });
  if (r.exitCode !== 0 || !r.stdout.trim()) throw new UsageError("share attach", `${dir} is not a git work tree (--mode git)`, "run `git init` there first, or use --mode shared-root");
  return realpathSync(r.stdout.trim());
}

/** Runs as the guest user: create the repo directory (sudo for the parents), init, accept pushes to the checked-out branch. $1 dst $2 branch */
export const GUEST_GIT_SCRIPT = `set -eu
dst=$1 branch=$2
if [ ! -d "$dst" ]; then sudo -n mkdir -p "$dst"; sudo -n chown "$(id -u):$(id -g)" "$dst"; fi
cd "$dst"
[ -e .git ] || git init -q -b "$branch"
git config receive.denyCurrentBranch updateInstead
`;

export async function currentBranch(runner: Runner, repo: string): Promise<string> {
  const r = await runner.read(gitArgv(repo, "symbolic-ref", "--short", "HEAD"), { nothrow: true });
  return r.exitCode === 0 && r.stdout.trim() ? r.stdout.trim() : "main";
}

export async function gitAttach(runner: Runner, vm: Vm, ip: string, att: AttachmentDoc): Promise<void> {
  const branch = await currentBranch(runner, att.host_path);
  await runner.exec(sshArgv(vm, ip, { batch: true, connectTimeoutS: 10, command: remoteCommand(["sh", "-c", GUEST_GIT_SCRIPT, "aivm-git", att.guest_dst, branch]) }), { what: `share: guest repo ${att.guest_dst}` });
  const name = gitRemoteName(vm);
  const url = `${vm.name}:${att.guest_dst}`;
  const cur = await runner.read(gitArgv(att.host_path, "remote", "get-url", name), { nothrow: true });
  if (cur.exitCode !== 0) await runner.exec(gitArgv(att.host_path, "remote", "add", name, url), { what: "share: git remote" });
  else if (cur.stdout.trim() !== url) await runner.exec(gitArgv(att.host_path, "remote", "set-url", name, url), { what: "share: git remote" });
}

export function gitSyncArgv(vm: Vm, att: AttachmentDoc, dir: "push" | "pull", branch: string): string[][] {
  const r = gitRemoteName(vm);
  if (dir === "push") return [gitArgv(att.host_path, "push", r, `HEAD:refs/heads/${branch}`)];
  return [gitArgv(att.host_path, "fetch", r), gitArgv(att.host_path, "merge", "--ff-only", `${r}/${branch}`)];
}
