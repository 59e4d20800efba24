// Every virsh call: the argv, the one place that maps an unreachable libvirtd to exit 69, and the state
// questions aivm asks libvirt (domain state and UUID, network state).
import type { ExecOptions, Result, Runner } from "../run.ts";
import { AivmError, lastLine, UnavailableError } from "../errors.ts";
import { parseKeyValues } from "./parse.ts";

export function virshArgv(uri: string, ...args: string[]): string[] {
  return ["virsh", "-q", "-c", uri, ...args];
}

export const UNREACHABLE = /failed to connect to the hypervisor|Failed to connect socket|Cannot recv data|no connection driver available/i;

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
    throw new AivmError(opts.what ?? `virsh ${args[0]}`, lastLine(r.stderr) || `exited ${r.exitCode}`);
  }
  return r;
}

export const NO_DOMAIN = /failed to get domain|domain not found|no domain with matching/i;

export type DomainState = "running" | "paused" | "shut off" | "crashed" | "pmsuspended" | "in shutdown" | "absent" | (string & {});

export async function domainState(runner: Runner, uri: string, name: string): Promise<DomainState> {
  const r = await virshRead(runner, uri, ["domstate", name]);
  if (r.exitCode === 0) return r.stdout.trim().split("\n")[0]!.trim();
  if (NO_DOMAIN.test(r.stderr)) return "absent";
  throw new AivmError(`virsh domstate ${name}`, lastLine(r.stderr) || `exited ${r.exitCode}`);
}

/** The domain's UUID, or null when libvirt has no such domain. */
export async function domainUuid(runner: Runner, uri: string, name: string): Promise<string | null> {
  const r = await virshRead(runner, uri, ["domuuid", name]);
  if (r.exitCode === 0 && r.stdout.trim()) return r.stdout.trim();
  if (r.exitCode === 0 || NO_DOMAIN.test(r.stderr)) return null;
  throw new AivmError(`virsh domuuid ${name}`, lastLine(r.stderr) || `exited ${r.exitCode}`);
}

/** Domain states in which the guest is running. */
export const RUNNING = new Set(["running", "idle", "blocked", "no state"]);

/** Domain states in which the domain is active (has a qemu process), running or not. */
export const ACTIVE = new Set([...RUNNING, "paused", "pmsuspended", "in shutdown"]);

export interface NetState {
  defined: boolean;
  active: boolean;
  persistent: boolean;
  autostart: boolean;
  /** the bridge libvirt reports (net-info), when defined */
  bridge?: string;
}

const ABSENT: NetState = { defined: false, active: false, persistent: false, autostart: false };

const NOT_FOUND = /network not found|no network with matching name/i;

export async function networkState(runner: Runner, uri: string, name: string): Promise<NetState> {
  const r = await virshRead(runner, uri, ["net-info", name]);
  if (r.exitCode !== 0) {
    if (NOT_FOUND.test(r.stderr)) return { ...ABSENT };
    throw new AivmError(`virsh net-info ${name}`, lastLine(r.stderr) || `exited ${r.exitCode}`);
  }
  const kv = parseKeyValues(r.stdout);
  return {
    defined: true,
    active: kv.active === "yes",
    persistent: kv.persistent === "yes",
    autostart: kv.autostart === "yes",
    bridge: kv.bridge || undefined,
  };
}
