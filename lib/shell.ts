// Quoting for a POSIX shell: what --dry-run prints must run as pasted, byte for byte.

const SAFE = /^[A-Za-z0-9_\/.,:=@%+-]+$/;

/** Quote one argument for a POSIX shell so that a copy-paste runs exactly this argv. */
export function shellQuote(arg: string): string {
  if (arg !== "" && SAFE.test(arg)) return arg;
  return `'${arg.replaceAll("'", `'\\''`)}'`;
}

export function shellJoin(argv: string[]): string {
  return argv.map(shellQuote).join(" ");
}

export function heredoc(content: string): string {
  let tag = "AIVM_EOF";
  while (content.split("\n").includes(tag)) tag += "_";
  const body = content.endsWith("\n") ? content : content + "\n";
  return `<<'${tag}'\n${body}${tag}`;
}

/**
 * A here-document whose text is literal except for the marks, which become shell expansions (`$(...)`, `$ip`):
 * for printed text that must read, when it runs, something an earlier printed command makes (a generated key).
 */
export function heredocWith(content: string, marks: Record<string, string>): string {
  const esc = (s: string) => s.replace(/[\\$`]/g, (c) => "\\" + c);
  let text = esc(content);
  for (const [mark, expr] of Object.entries(marks)) text = text.split(esc(mark)).join(expr);
  let tag = "AIVM_EOF";
  while (text.split("\n").includes(tag)) tag += "_";
  return `<<${tag}\n${text.endsWith("\n") ? text : text + "\n"}${tag}`;
}
