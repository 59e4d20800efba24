// `share sync` for git mode: --push host commits to the guest's clone; --pull fetches the guest's branches into
// refs/aivm/<vm>/* only, shows what would be merged (commits, files changed), and moves the host's branch
// (fast-forward only) after consent (--yes, or a terminal). The host's git reads nothing of the guest's repository but
// the objects and refs git-upload-pack sends.
import type { AttachmentDoc, Vm } from "../config/model.ts";
import { AivmError, EXIT, UsageError } from "../errors.ts";
import { currentBranch, gitFetchArgv, gitMergeArgv, gitPushArgv, gitTopLevel, pullPreview } from "../git.ts";
import { log } from "../log.ts";
import { printable } from "../render.ts";
import type { Runner } from "../run.ts";
import { shellQuote } from "../shell.ts";
import { findAttachment, hostDir } from "../share/input.ts";
import { defaultSshConfigFile } from "../ssh-config.ts";

export interface SyncResult { att: AttachmentDoc; branch: string; moved: boolean; commits: number }

export async function syncFolder(runner: Runner, vm: Vm, dir: string, direction: "push" | "pull"): Promise<SyncResult> {
  const d = hostDir("share sync", dir);
  const top = await gitTopLevel(runner, d).catch(() => d);
  const att = findAttachment(vm, top) ?? findAttachment(vm, d);
  if (!att) throw new UsageError("share sync", `${top} is not attached to ${vm.name}`, `attach it: aivm share attach --mode git ${top}`);
  if (att.mode !== "git") throw new UsageError("share sync", `${att.host_path} is attached in ${att.mode} mode: it is live already; sync is for --mode git`);
  const branch = await currentBranch(runner, att.host_path);
  // git's ssh finds the VM's alias in the ssh config aivm wrote (ssh itself reads the passwd home, not $HOME)
  const env = { GIT_SSH_COMMAND: `ssh -F ${shellQuote(defaultSshConfigFile())}` };
  if (direction === "push") {
    await runner.exec(gitPushArgv(vm, att, branch), { what: "share sync --push", env });
    return { att, branch, moved: true, commits: 0 };
  }
  await runner.exec(gitFetchArgv(vm, att), { what: "share sync --pull", env });
  if (runner.dryRun) {
    await runner.exec(gitMergeArgv(vm, att, branch));
    return { att, branch, moved: false, commits: 0 };
  }
  const p = await pullPreview(runner, vm, att, branch);
  if (!p.commits.length) {
    log.info(`${att.host_path}: the guest's ${branch} has nothing the host's lacks (${p.ref})`);
    return { att, branch, moved: false, commits: 0 };
  }
  if (!p.fastForward) {
    throw new AivmError("share sync --pull", `${branch} and the guest's ${branch} have diverged: not a fast-forward; nothing was merged`, EXIT.FAILED, `inspect it with \`git log ${p.ref}\`, then merge it yourself`);
  }
  // commit subjects and file names come from the guest: shown without control characters
  log.info([`the guest's ${branch} (${p.ref}) adds ${p.commits.length} commit(s):`, ...p.commits.map((c) => `  ${printable(c)}`), ...printable(p.stat).split("\n").map((l) => `  ${l}`)].join("\n"));
  if (!(await runner.confirm("share sync --pull", `Fast-forward ${branch} in ${att.host_path} to these ${p.commits.length} commit(s) from ${vm.name}?`))) {
    throw new AivmError("share sync --pull", "not approved; the guest's commits stay in " + p.ref, EXIT.FAILED);
  }
  await runner.exec(gitMergeArgv(vm, att, branch), { what: "share sync --pull" });
  return { att, branch, moved: true, commits: p.commits.length };
}
