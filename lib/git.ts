// Git mode: a clone inside the guest, a remote on the host, explicit push and pull. What comes back from the guest
// lands only under refs/aivm/<vm>/* (the host's git reads no config, hooks or attributes of the guest's repository:
// the guest only runs git-upload-pack for the fetch); the host's branch moves after a preview and consent.
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

/** Where the guest's branches land on the host: never a local branch, never refs/remotes. */
export function guestRef(vm: Vm, branch: string): string {
  return `refs/aivm/${vm.name}/${branch}`;
}

export function gitPushArgv(vm: Vm, att: AttachmentDoc, branch: string): string[] {
  return gitArgv(att.host_path, "push", gitRemoteName(vm), `HEAD:refs/heads/${branch}`);
}

/** Fetch the guest's branches into refs/aivm/<vm>/* only (no tags, no FETCH_HEAD). */
export function gitFetchArgv(vm: Vm, att: AttachmentDoc): string[] {
  return gitArgv(att.host_path, "fetch", "--no-tags", "--no-write-fetch-head", gitRemoteName(vm), `+refs/heads/*:refs/aivm/${vm.name}/*`);
}

export function gitMergeArgv(vm: Vm, att: AttachmentDoc, branch: string): string[] {
  return gitArgv(att.host_path, "merge", "--ff-only", guestRef(vm, branch));
}

export interface PullPreview { ref: string; commits: string[]; stat: string; fastForward: boolean }

/** What a pull would merge: the guest's commits not on HEAD, the files they change, whether HEAD can fast-forward. */
export async function pullPreview(runner: Runner, vm: Vm, att: AttachmentDoc, branch: string): Promise<PullPreview> {
  const ref = guestRef(vm, branch);
  const has = await runner.read(gitArgv(att.host_path, "rev-parse", "--verify", "--quiet", `${ref}^{commit}`), { nothrow: true });
  if (has.exitCode !== 0) return { ref, commits: [], stat: "", fastForward: true };
  const log = await runner.read(gitArgv(att.host_path, "log", "--no-color", "--format=%h %s", `HEAD..${ref}`));
  const stat = await runner.read(gitArgv(att.host_path, "diff", "--no-color", "--no-ext-diff", "--stat", `HEAD...${ref}`));
  const ff = await runner.read(gitArgv(att.host_path, "merge-base", "--is-ancestor", "HEAD", ref), { nothrow: true });
  return { ref, commits: log.stdout.split("\n").filter(Boolean), stat: stat.stdout.trimEnd(), fastForward: ff.exitCode === 0 };
}
