/**
 * Label selectors (`metav1.LabelSelector`) as NetworkPolicy uses them: `matchLabels` and
 * `matchExpressions` (In, NotIn, Exists, DoesNotExist), ANDed; an empty selector selects
 * everything. Semantics of k8s.io/apimachinery/pkg/labels (`selector.go`): `NotIn` also selects
 * objects without the key. Validation follows `ValidateLabelSelector` (a qualified key, label
 * values, `values` non-empty for In/NotIn and empty for Exists/DoesNotExist).
 * @module
 */
import * as v from './validate.ts';

/** Labels as the state keeps them: a plain key → value object without a prototype. */
export type Labels = Readonly<Record<string, string>>;

/** One `matchExpressions` requirement. */
export interface LabelRequirement {
  readonly key: string;
  readonly operator: 'In' | 'NotIn' | 'Exists' | 'DoesNotExist';
  /** Sorted, each once. */
  readonly values: readonly string[];
}

/** A validated label selector: every requirement must hold. */
export interface LabelSelector {
  /** `matchLabels` as requirements `key = value`, sorted by key. */
  readonly matchLabels: readonly (readonly [string, string])[];
  readonly matchExpressions: readonly LabelRequirement[];
}

/** The selector that selects everything (`{}`). */
export const EVERYTHING: LabelSelector = { matchLabels: [], matchExpressions: [] };

const NAME = /^([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]$/;
const PREFIX = /^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$/;

/** A qualified name (label key): `[prefix/]name`, the prefix a DNS subdomain, the name ≤63. */
export function labelKey(value: unknown, field: string): string {
  if (typeof value === 'string') {
    const slash = value.indexOf('/');
    const prefix = slash < 0 ? undefined : value.slice(0, slash);
    const name = slash < 0 ? value : value.slice(slash + 1);
    if ((prefix === undefined || (prefix.length <= 253 && PREFIX.test(prefix))) && name.length <= 63 && NAME.test(name)) return value;
  }
  throw new v.FieldError(field, `must be a label key ([prefix/]name, the name at most 63 of [A-Za-z0-9._-]), got ${v.show(value)}`);
}

/**
 * Validated labels of an object (`metadata.labels`), as a prototype-less object.
 * @throws FieldError naming the first bad key or value
 */
export function labels(value: unknown, field: string): Labels {
  const raw = v.record(value, field);
  const keys = Object.keys(raw);
  if (keys.length > v.MAX_LIST) throw new v.FieldError(field, `has ${keys.length} labels, more than ${v.MAX_LIST}`);
  const out: Record<string, string> = Object.create(null) as Record<string, string>;
  for (const k of keys) out[labelKey(k, `${field} key`)] = v.labelValue(raw[k], `${field}["${k}"]`);
  return out;
}

/**
 * A `metav1.LabelSelector`; absent or null is the empty selector (selects everything), as a
 * NetworkPolicy's `podSelector: {}`.
 * @throws FieldError naming the bad part
 */
export function labelSelector(value: unknown, field: string): LabelSelector {
  const raw = v.record(value, field);
  for (const k of Object.keys(raw)) if (k !== 'matchLabels' && k !== 'matchExpressions') throw new v.FieldError(`${field}.${k}`, 'is not a field of a label selector');
  const ml = labels(raw.matchLabels, `${field}.matchLabels`);
  const matchLabels = Object.keys(ml)
    .sort()
    .map((k) => [k, ml[k]!] as const);
  const matchExpressions = v.list(raw.matchExpressions, `${field}.matchExpressions`).map((item, i): LabelRequirement => {
    const at = `${field}.matchExpressions[${i}]`;
    const r = v.record(item, at);
    const key = labelKey(r.key, `${at}.key`);
    const operator = r.operator;
    if (operator !== 'In' && operator !== 'NotIn' && operator !== 'Exists' && operator !== 'DoesNotExist')
      throw new v.FieldError(`${at}.operator`, `must be In, NotIn, Exists or DoesNotExist, got ${v.show(operator)}`);
    const values = v.list(r.values, `${at}.values`).map((x, j) => v.labelValue(x, `${at}.values[${j}]`));
    if ((operator === 'In' || operator === 'NotIn') && values.length === 0) throw new v.FieldError(`${at}.values`, `must be non-empty for ${operator}`);
    if ((operator === 'Exists' || operator === 'DoesNotExist') && values.length > 0) throw new v.FieldError(`${at}.values`, `must be empty for ${operator}`);
    return { key, operator, values: [...new Set(values)].sort() };
  });
  matchExpressions.sort((a, b) => (a.key < b.key ? -1 : a.key > b.key ? 1 : a.operator < b.operator ? -1 : a.operator > b.operator ? 1 : 0));
  return { matchLabels, matchExpressions };
}

/** Whether `selector` selects an object with `labels`. */
export function selects(selector: LabelSelector, labels: Labels): boolean {
  for (const [k, val] of selector.matchLabels) if (labels[k] !== val) return false;
  for (const r of selector.matchExpressions) {
    const has = Object.hasOwn(labels, r.key);
    switch (r.operator) {
      case 'In':
        if (!has || !r.values.includes(labels[r.key]!)) return false;
        break;
      case 'NotIn':
        if (has && r.values.includes(labels[r.key]!)) return false;
        break;
      case 'Exists':
        if (!has) return false;
        break;
      case 'DoesNotExist':
        if (has) return false;
        break;
    }
  }
  return true;
}

/** The selector in kubectl's string form (`app=web,tier in (a,b),!x`), canonical: equal selectors give equal text. */
export function selectorText(selector: LabelSelector): string {
  const parts = selector.matchLabels.map(([k, val]) => `${k}=${val}`);
  for (const r of selector.matchExpressions) {
    if (r.operator === 'Exists') parts.push(r.key);
    else if (r.operator === 'DoesNotExist') parts.push(`!${r.key}`);
    else parts.push(`${r.key} ${r.operator === 'In' ? 'in' : 'notin'} (${r.values.join(',')})`);
  }
  return parts.length === 0 ? '{}' : parts.join(',');
}
