// SSH to a VM with its pinned host key: the known_hosts line, the ssh argv, and the managed block in ~/.ssh/config.
import { existsSync, lstatSync, readFileSync, realpathSync } from "node:fs";
import { homedir } from "node:os";
import { dirname, join } from "node:path";
import type { Vm } from "./config/model.ts";
import { ipv4ToInt } from "./validate.ts";
import { AivmError, EXIT } from "./errors.ts";
import type { Runner } from "./run.ts";
import { log } from "./log.ts";
import { cachedIp, vmFiles } from "./vm/files.ts";
import { aliasAdvice, checkAlias } from "./ssh-alias.ts";

export function knownHostsFile(vm: Vm): string {
  return join(vm.dir, "known_hosts");
}

/** Where `aivm vm wait` records the VM's address. */
export function ipFile(vm: Vm): string {
  return vmFiles(vm).ipCache;
}

/** The last address `aivm vm wait` saw, or null when there is none (or it is not an IPv4 address: readIpFile says which). */
export function knownIp(vm: Vm): string | null {
  return cachedIp(vm);
}

function checkIp(ip: string): string {
  if (ipv4ToInt(ip) === undefined) throw new Error(`${JSON.stringify(ip)} is not an IPv4 address`);
  return ip;
}

// eslint-disable-next-line no-control-regex
const CONTROL = /[\x00-\x1f\x7f]/;

/** A path as ssh reads it after its own %-token expansion (`%` must be doubled). */
function sshPath(path: string): string {
  if (CONTROL.test(path)) throw new Error(`path ${JSON.stringify(path)} contains control characters`);
  if (path.includes("${")) throw new Error(`path ${JSON.stringify(path)} contains "\${", which ssh expands as an environment variable`);
  if (!path.startsWith("/")) throw new Error(`path ${JSON.stringify(path)} is not absolute`);
  return path.replaceAll("%", "%%");
}

/** A path as an ssh_config argument: double-quoted (with \" and \\ escapes) unless it is plain. */
function sshConfigPath(path: string): string {
  const p = sshPath(path);
  return /^[A-Za-z0-9_\/.,:=@+-]+$/.test(p) ? p : `"${p.replace(/[\\"]/g, (c) => "\\" + c)}"`;
}

/** The known_hosts line that pins the guest's host key under HostKeyAlias = the VM name (comment dropped). */
export function knownHostsLine(vm: Vm, hostPublicKey: string): string {
  const m = /^(ssh-ed25519|ssh-rsa|ecdsa-sha2-nistp(?:256|384|521)) ([A-Za-z0-9+/]+={0,2})(?:\s.*)?$/.exec(hostPublicKey.trim());
  if (!m || CONTROL.test(hostPublicKey.trim())) throw new Error("host public key is not an OpenSSH public key line");
  return `${vm.name} ${m[1]} ${m[2]}`;
}

/** The options every connection to a VM uses: its identity only, its pinned host key only. */
function pinnedOptions(vm: Vm): string[] {
  return [
    "-o", "IdentitiesOnly=yes",
    "-o", `UserKnownHostsFile=${sshConfigPath(knownHostsFile(vm))}`,
    "-o", "StrictHostKeyChecking=yes",
    "-o", `HostKeyAlias=${vm.name}`,
  ];
}

/**
 * ssh to the VM, ignoring the user's ssh config (-F /dev/null), with the VM's identity only and its pinned host key only.
 * `command` is passed like ssh passes it: its words are joined with spaces and run by the guest user's shell.
 */
export function sshArgv(vm: Vm, ip: string, o: { tty?: boolean; command?: string[]; batch?: boolean; connectTimeoutS?: number } = {}): string[] {
  // IdentityFile as an option, not -i: ssh checks a -i path literally but %-expands it later, so a path with % breaks
  const argv = ["ssh", "-F", "/dev/null", "-o", `IdentityFile=${sshConfigPath(vm.paths.sshIdentity)}`, ...pinnedOptions(vm)];
  if (o.batch) argv.push("-o", "BatchMode=yes");
  if (o.connectTimeoutS !== undefined) {
    if (!Number.isInteger(o.connectTimeoutS) || o.connectTimeoutS < 1) throw new Error(`connect timeout ${o.connectTimeoutS} is not a positive integer`);
    argv.push("-o", `ConnectTimeout=${o.connectTimeoutS}`);
  }
  if (o.tty === true) argv.push("-t");
  else if (o.tty === false) argv.push("-T");
  argv.push(`${vm.user}@${checkIp(ip)}`);
  if (o.command?.length) argv.push("--", ...o.command);
  return argv;
}

export function beginMarker(vmName: string): string {
  return `# >>> aivm:${vmName} >>>`;
}

/**
 * Appended to the begin marker when aivm had to add a line break before its block (the file did not end with one),
 * so that removing the block gives back the original bytes.
 */
export const ADDED_EOL_NOTE = " (aivm added the line break above)";

export function endMarker(vmName: string): string {
  return `# <<< aivm:${vmName} <<<`;
}

/** A note in place of the HostName line, for printing a VM whose address is not known yet. */
export const NO_IP_NOTE = "# HostName: no IP known yet (run `aivm vm wait`)";

/** The managed Host block for a VM (ends with a newline). `ip` null: the HostName line is a note instead (print only). */
export function renderSshBlock(vm: Vm, ip: string | null): string {
  return [
    beginMarker(vm.name),
    `Host ${vm.name}`,
    ip === null ? `  ${NO_IP_NOTE}` : `  HostName ${checkIp(ip)}`,
    `  User ${vm.user}`,
    `  IdentityFile ${sshConfigPath(vm.paths.sshIdentity)}`,
    `  IdentitiesOnly yes`,
    `  UserKnownHostsFile ${sshConfigPath(knownHostsFile(vm))}`,
    `  StrictHostKeyChecking yes`,
    `  HostKeyAlias ${vm.name}`,
    endMarker(vm.name),
    "",
  ].join("\n");
}

interface Range {
  start: number;
  end: number;
  eol: string;
  /** the begin marker carries ADDED_EOL_NOTE */
  addedEol: boolean;
}

/** The byte ranges of a VM's managed blocks (begin marker line through end marker line and its line break). */
function findBlocks(text: string, vmName: string): Range[] {
  const begin = beginMarker(vmName);
  const end = endMarker(vmName);
  const ranges: Range[] = [];
  let open: { start: number; eol: string; addedEol: boolean } | null = null;
  let pos = 0;
  while (pos < text.length) {
    const nl = text.indexOf("\n", pos);
    const next = nl < 0 ? text.length : nl + 1;
    const raw = text.slice(pos, nl < 0 ? text.length : nl);
    const line = raw.endsWith("\r") ? raw.slice(0, -1) : raw;
    if (line === begin || line === begin + ADDED_EOL_NOTE) {
      if (open) throw new AivmError("ssh config", `a second "${begin}" line before the block's end marker`, EXIT.FAILED, "fix the file by hand");
      open = { start: pos, eol: raw.endsWith("\r") ? "\r\n" : "\n", addedEol: line !== begin };
    } else if (line === end) {
      if (!open) throw new AivmError("ssh config", `"${end}" without its begin marker`, EXIT.FAILED, "fix the file by hand");
      ranges.push({ start: open.start, end: next, eol: open.eol, addedEol: open.addedEol });
      open = null;
    }
    pos = next;
  }
  if (open) throw new AivmError("ssh config", `"${begin}" has no end marker "${end}"`, EXIT.FAILED, "fix the file by hand");
  return ranges;
}

function withEol(block: string, eol: string): string {
  const lines = block.replace(/\r?\n$/, "").split(/\r?\n/);
  return lines.join(eol) + eol;
}

/**
 * Put `block` in place of the VM's managed block (the first one; duplicates are dropped), or append it.
 * Everything outside the block stays byte-for-byte; a file without a final line break gets one before an appended block.
 */
export function upsertBlock(text: string, vmName: string, block: string): string {
  const lines = block.replace(/\r?\n$/, "").split(/\r?\n/);
  if (lines[0] !== beginMarker(vmName) || lines[lines.length - 1] !== endMarker(vmName)) {
    throw new Error(`the block for ${vmName} must start with "${beginMarker(vmName)}" and end with "${endMarker(vmName)}"`);
  }
  const ranges = findBlocks(text, vmName);
  const noted = (b: string) => b.replace(beginMarker(vmName), beginMarker(vmName) + ADDED_EOL_NOTE);
  if (ranges.length === 0) {
    const eol = text.includes("\r\n") ? "\r\n" : "\n";
    if (text === "" || text.endsWith("\n")) return text + withEol(block, eol);
    return text + eol + withEol(noted(block), eol);
  }
  let result = "";
  let pos = 0;
  ranges.forEach((r, i) => {
    result += text.slice(pos, r.start) + (i === 0 ? withEol(r.addedEol ? noted(block) : block, r.eol) : "");
    pos = r.end;
  });
  return result + text.slice(pos);
}

/**
 * Drop the VM's managed block(s); everything else stays byte-for-byte. A line break aivm added before its block (the
 * file had none at its end) goes with it when the block still ends the file, so the original bytes come back.
 */
export function removeBlock(text: string, vmName: string): string {
  let result = "";
  let pos = 0;
  for (const r of findBlocks(text, vmName)) {
    let head = text.slice(pos, r.start);
    if (r.addedEol && r.end === text.length && head.endsWith(r.eol)) head = head.slice(0, -r.eol.length);
    result += head;
    pos = r.end;
  }
  return result + text.slice(pos);
}

export function defaultSshConfigFile(): string {
  return join(process.env.HOME || homedir(), ".ssh", "config");
}

/** The file to write: a symlinked ~/.ssh/config (dotfile managers) is written through, not replaced. */
function target(file: string): string {
  try {
    return lstatSync(file).isSymbolicLink() ? realpathSync(file) : file;
  } catch {
    return file;
  }
}

function readText(file: string): string | null {
  try {
    return readFileSync(file, "utf8");
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === "ENOENT") return null;
    throw new AivmError("ssh config", `cannot read ${file}: ${(e as Error).message}`);
  }
}

/**
 * The mode to write the file with: its own (a 0644 ~/.ssh/config stays 0644), without write bits for group and
 * others (ssh refuses such a file: "Bad owner or permissions"; said when dropped); 0600 for a new file.
 */
export function configMode(runner: Runner, file: string): number {
  const st = runner.host.stat(file);
  if (!st) return 0o600;
  const mode = st.mode & 0o7777;
  if (mode & 0o022) log.warn(`${file} is writable by ${mode & 0o002 ? "others" : "its group"} (mode ${mode.toString(8)}), which ssh refuses: writing it as ${(mode & ~0o022).toString(8)}`);
  return mode & ~0o022;
}

async function writeConfig(runner: Runner, file: string, before: string | null, after: string, question: string): Promise<void> {
  if (!runner.dryRun && !(await runner.confirm("ssh config", question))) {
    throw new AivmError("ssh config", `${file} not changed: not approved`, EXIT.FAILED);
  }
  const dir = dirname(file);
  if (!existsSync(dir)) await runner.exec(["mkdir", "-p", "-m", "700", dir], { what: "ssh config" });
  await runner.writeFile(file, after, configMode(runner, file));
  log.debug(`ssh config: ${file}: ${before === null ? "created" : "updated"}`);
}

/** Write (or refresh) the VM's block in ~/.ssh/config. Nothing is written when the block is already current. */
export async function upsertSshConfig(runner: Runner, vm: Vm, ip: string, file: string = defaultSshConfigFile()): Promise<"written" | "unchanged"> {
  const path = target(file);
  const before = readText(path);
  const after = upsertBlock(before ?? "", vm.name, renderSshBlock(vm, ip));
  const result = after === before ? "unchanged" : "written";
  if (result === "written") await writeConfig(runner, path, before, after, `Write the aivm:${vm.name} Host block (${vm.name} -> ${ip}) into ${path}?`);
  if (!runner.dryRun) {
    const problems = await checkAlias(runner, vm, ip, knownHostsFile(vm), path);
    if (problems.length) log.warn(aliasAdvice(vm, path, problems));
  }
  return result;
}

/** Remove the VM's block from ~/.ssh/config. Nothing is written when there is none. */
export async function removeSshConfig(runner: Runner, vm: Vm, file: string = defaultSshConfigFile()): Promise<"removed" | "unchanged"> {
  const path = target(file);
  const before = readText(path);
  if (before === null) return "unchanged";
  const after = removeBlock(before, vm.name);
  if (after === before) return "unchanged";
  await writeConfig(runner, path, before, after, `Remove the aivm:${vm.name} Host block from ${path}?`);
  return "removed";
}
