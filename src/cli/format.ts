/**
 * Text forms of the operator commands' answers (`explain`, `list`), for a person: short lines,
 * aligned columns, no JSON noise. Pure: data in, text out (the JSON forms are the data itself).
 * @module
 */
import type { PolicyExplanation } from '../planner/policyexplain.ts';
import type { PolicyListRow } from '../planner/list.ts';
import { KIND_TEXT, type Explanation } from '../planner/explain.ts';
import type { ListRow, WeightedEndpoint } from '../planner/list.ts';
import { groupDrift, type DriftItem } from '../backends/drift.ts';
import type { IPFamily } from '../state/ip.ts';

/** Pads the columns of `rows` to their widest cell (the last column is not padded). */
export function columns(rows: readonly (readonly string[])[], gap = '  '): string[] {
  const widths: number[] = [];
  for (const r of rows) r.forEach((cell, i) => (widths[i] = Math.max(widths[i] ?? 0, cell.length)));
  return rows.map((r) =>
    r
      .map((cell, i) => (i === r.length - 1 ? cell : cell.padEnd(widths[i]!)))
      .join(gap)
      .trimEnd(),
  );
}

const percent = (p: number) => `${Number((p * 100).toFixed(1))}%`;

/** `kproxy explain`'s text form. */
export function formatExplanation(e: Explanation): string {
  const lines: string[] = [`${e.destination} from ${e.source.description}`];
  const field: string[][] = [];
  const verdict: Record<Explanation['verdict'], string> = { DNAT: 'DNAT', REJECT: 'REJECT', DROP: 'DROP', NO_MATCH: 'no match' };
  field.push(['verdict', `${verdict[e.verdict]}: ${e.reason}`]);
  if (e.service) field.push(['service', `${e.service.name} ${e.service.protocol}, by its ${KIND_TEXT[e.service.matchedAs]}`]);
  if (e.firewall)
    field.push(['firewall', `loadBalancerSourceRanges ${e.firewall.ranges.join(', ') || '(other family only)'}: ${e.firewall.allowed ? `allowed by ${e.firewall.by}` : 'source outside, dropped'}`]);
  if (e.endpointSet) field.push(['endpoints', `${e.endpointSet.set} set: ${e.endpointSet.why.join('; ')}`]);
  const table = e.endpoints.map((ep) => [
    `${ep.address.includes(':') ? `[${ep.address}]` : ep.address}:${ep.port}`,
    ep.node ?? '-',
    ep.zone ?? '-',
    ep.ready ? 'ready' : ep.terminating ? 'terminating' : 'not ready',
    percent(ep.probability),
    ep.hairpin ? 'hairpin' : '',
  ]);
  if (e.affinityTimeoutSeconds !== undefined) field.push(['affinity', `ClientIP, ${e.affinityTimeoutSeconds} s`]);
  if (e.masquerade) field.push(['masquerade', `${e.masquerade.masquerade ? 'yes' : 'no'}: ${e.masquerade.why}`]);
  for (const u of e.unusedEndpoints) field.push(['not used', `${u.address.includes(':') ? `[${u.address}]` : u.address}:${u.port} (${u.node ?? 'no node'}): ${u.reason}`]);
  for (const n of e.notes) field.push(['note', n]);
  const aligned = columns(field);
  // The endpoint table goes right after the `endpoints` line.
  const at = field.findIndex((f) => f[0] === 'endpoints');
  const indent = ' '.repeat(Math.max(...field.map((f) => f[0]!.length)) + 2);
  const epLines = columns(table).map((l) => indent + l);
  lines.push(...aligned.slice(0, at + 1), ...(at >= 0 ? epLines : []), ...aligned.slice(at + 1));
  lines.push('', 'steps');
  e.steps.forEach((s, i) => lines.push(`  ${String(i + 1).padStart(2)}  ${s.decision}`, `      ${s.rule}`));
  return `${lines.join('\n')}\n`;
}

function endpointsText(list: readonly WeightedEndpoint[] | undefined, wide: boolean): string {
  if (list === undefined) return '';
  if (list.length === 0) return '(none)';
  const shown = wide ? list : list.slice(0, 3);
  const text = shown.map((e) => `${e.endpoint} ${percent(e.weight)}`).join(', ');
  return list.length > shown.length ? `${text}, +${list.length - shown.length} more` : text;
}

/** `kproxy list`'s text form; `wide` lists every endpoint (text shows the first three). */
export function formatList(rows: readonly ListRow[], wide: boolean): string {
  const table: string[][] = [['SERVICE PORT', 'PROTO', 'FRONTENDS', 'POLICY (int/ext)', 'FLAGS', 'ENDPOINTS']];
  for (const r of rows) {
    const f = r.frontends;
    const frontends = [f.clusterIP, ...f.externalIPs.map((x) => `${x} ext`), ...f.loadBalancerIPs.map((x) => `${x} lb`), ...(f.nodePort ? [`*:${f.nodePort} np`] : [])].join(', ');
    const sameSets = r.externalEndpoints === undefined || endpointsText(r.externalEndpoints, true) === endpointsText(r.internalEndpoints, true);
    const endpoints = sameSets ? endpointsText(r.internalEndpoints, wide) : `int: ${endpointsText(r.internalEndpoints, wide)}; ext: ${endpointsText(r.externalEndpoints, wide)}`;
    table.push([r.name, r.protocol, frontends, `${r.internalTrafficPolicy}/${r.externalTrafficPolicy ?? '-'}`, r.flags.join(',') || '-', endpoints]);
  }
  return `${columns(table).join('\n')}\n`;
}

/** What `kproxy verify` found in one family. */
export interface FamilyDrift {
  /** The family of a Service table; undefined for the NetworkPolicy table (inet: both). */
  readonly family: IPFamily | undefined;
  readonly mode: string;
  readonly items: readonly DriftItem[];
}

/** `kproxy verify`'s text form: per family, per service port, one line per difference. */
export function formatDrift(reports: readonly FamilyDrift[]): string {
  const lines: string[] = [];
  for (const r of reports) {
    const what = r.family === undefined ? `NetworkPolicy table (${r.mode})` : `IPv${r.family} ${r.mode}`;
    if (r.items.length === 0) {
      lines.push(`${what}: no drift`);
      continue;
    }
    const groups = groupDrift(r.items);
    lines.push(`${what}: ${r.items.length} difference(s) in ${groups.length} place(s)`);
    for (const [servicePort, items] of groups) {
      lines.push(`  ${servicePort ?? "kproxy's own chains and jumps"}`);
      // What the kernel holds may have been written by anyone: no control characters reach the terminal.
      const safe = (text: string) => text.replace(/\p{Cc}/gu, (c) => `\\x${c.charCodeAt(0).toString(16).padStart(2, '0')}`);
      const rows = items.map((i) => [`    ${i.change} ${i.object}`, safe(`${i.table} ${i.name}`), safe(i.detail ?? '')]);
      lines.push(...columns(rows));
    }
  }
  return `${lines.join('\n')}\n`;
}

/** `explain --network-policy`'s section: per final destination, each direction's decision. */
export function formatPolicyExplanations(list: readonly PolicyExplanation[]): string {
  const lines = ['', 'NetworkPolicy'];
  for (const x of list) {
    const dst = x.destination.includes(':') ? `[${x.destination}]` : x.destination;
    lines.push(`  ${x.source} -> ${dst}:${x.port} ${x.protocol}: ${x.allowed ? 'allowed' : 'DENIED (dropped by the policy table)'}`);
    const rows = x.directions.map((d) => [`    ${d.direction} of ${d.pod}`, d.reason, d.chain ? `(chain ${d.chain})` : '']);
    lines.push(...columns(rows));
    for (const n of x.notes) lines.push(`    note: ${n}`);
  }
  return `${lines.join('\n')}\n`;
}

/** `list --policies`: each local pod, its isolation per direction, and what each rule allows. */
export function formatPolicyList(rows: readonly PolicyListRow[]): string {
  const lines: string[] = [];
  for (const r of rows) {
    lines.push(`${r.pod}  ${r.addresses.join(' ')}`);
    for (const d of [r.ingress, r.egress]) {
      if (!d.isolated) {
        lines.push(`  ${d.direction.padEnd(8)} not isolated: everything passes`);
        continue;
      }
      lines.push(`  ${d.direction.padEnd(8)} isolated by ${d.policies.join(', ')}${d.rules.length === 0 ? ': nothing allowed' : ''}`);
      for (const rule of d.rules) lines.push(`           ${rule.policy} rule ${rule.index}: ${d.direction === 'ingress' ? 'from' : 'to'} ${rule.peers}; ${rule.ports}`);
    }
  }
  if (rows.length === 0) lines.push('no pods with addresses on this node');
  return `${lines.join('\n')}\n`;
}
