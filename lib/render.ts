// Templates (embedded in the binary via text imports) and escaping for each output format.

/** Escape a value for XML text or a quoted attribute. Control characters other than tab/newline are refused. */
export function escapeXml(v: string | number): string {
  const s = String(v);
  // eslint-disable-next-line no-control-regex
  if (/[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]/.test(s)) throw new Error(`value ${JSON.stringify(s)} contains control characters that XML cannot carry`);
  return s.replace(/&/g, "&amp;").replace(/</g, "&lt;").replace(/>/g, "&gt;").replace(/"/g, "&quot;").replace(/'/g, "&apos;");
}

/**
 * Fill `{{name}}` (escaped with `escape`) and `{{{name}}}` (inserted raw: an already rendered fragment).
 * A placeholder with no value is an error, so a template and its caller cannot drift apart silently.
 */
export function fill(template: string, vars: Record<string, string | number>, escape: (v: string | number) => string): string {
  return template.replace(/\{\{\{(\w+)\}\}\}|\{\{(\w+)\}\}/g, (_m, raw: string | undefined, esc: string | undefined) => {
    const key = (raw ?? esc)!;
    if (!(key in vars)) throw new Error(`template placeholder {{${key}}} has no value`);
    return raw ? String(vars[key]) : escape(vars[key]!);
  });
}

export function renderXml(template: string, vars: Record<string, string | number>): string {
  return fill(template, vars, escapeXml);
}

/** Drop lines that became blank after optional fragments rendered empty. */
export function tidy(text: string): string {
  return text.replace(/\n[ \t]*\n(?=[ \t]*\n)/g, "\n").replace(/^[ \t]+\n/gm, "");
}

/** A double-quoted nftables string: nft has no escapes, so refuse quotes, backslashes and control characters. */
export function nftString(s: string): string {
  // eslint-disable-next-line no-control-regex
  if (/["\\\x00-\x1f\x7f]/.test(s)) throw new Error(`value ${JSON.stringify(s)} cannot be written into an nftables file`);
  return `"${s}"`;
}

/** YAML from an object: never pasted strings. */
export function toYaml(value: unknown): string {
  return Bun.YAML.stringify(value, null, 2) + "\n";
}

/**
 * Text that came from a guest (commit subjects, lease host names, cloud-init errors, console output) as it may reach
 * the user's terminal: control characters (escape sequences that could rewrite the screen or the terminal's title
 * and clipboard) shown as \xNN; newlines and tabs kept.
 */
export function printable(s: string): string {
  // eslint-disable-next-line no-control-regex
  return s.replace(/[\x00-\x08\x0b-\x1f\x7f\x80-\x9f]/g, (c) => `\\x${c.charCodeAt(0).toString(16).padStart(2, "0")}`);
}
