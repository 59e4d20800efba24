// virsh argv builders and the one place that maps "cannot reach libvirtd" to exit 69.
import { AivmError, UnavailableError } from "./errors.ts";
import type { ExecOptions, Result, Runner } from "./run.ts";

export function virshArgv(uri: string, ...args: string[]): string[] {
  return ["virsh", "-q", "-c", uri, ...args];
}

const UNREACHABLE = /failed to connect to the hypervisor|Failed to connect socket|Cannot recv data|no connection driver available/i;

function check(uri: string, r: Result): Result {
  if (r.exitCode !== 0 && UNREACHABLE.test(r.stderr)) {
    const sock = /socket to '([^']+)'/.exec(r.stderr)?.[1];
    throw new UnavailableError("libvirt", `cannot reach libvirtd at ${uri}${sock ? ` (socket ${sock})` : ""}`, "start libvirtd (and virtlogd), or set [defaults.paths] libvirt_uri; `aivm doctor` checks the host");
  }
  return r;
}

/** A virsh call that only reads. Never throws on a non-zero exit except for an unreachable libvirtd. */
export async function virshRead(runner: Runner, uri: string, args: string[], opts: ExecOptions = {}): Promise<Result> {
  return check(uri, await runner.read(virshArgv(uri, ...args), { ...opts, nothrow: true }));
}

/** A virsh call that changes something (printed under --dry-run). Throws on failure. */
export async function virshExec(runner: Runner, uri: string, args: string[], opts: ExecOptions = {}): Promise<Result> {
  const r = check(uri, await runner.exec(virshArgv(uri, ...args), { ...opts, nothrow: true }));
  if (r.exitCode !== 0 && !opts.nothrow && !(opts.okCodes ?? [0]).includes(r.exitCode)) {
    throw new AivmError(opts.what ?? `virsh ${args[0]}`, r.stderr.trim().split("\n").pop()?.replace(/^error:\s*/, "") || `exited ${r.exitCode}`);
  }
  return r;
}
