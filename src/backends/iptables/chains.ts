/**
 * The chains of a service port whose rules are made when read rather than kept: its KUBE-SEP-
 * chains and the endpoint selection of its KUBE-SVC-/KUBE-SVL- chains (render.ts builds them).
 * Together they are most of a large ruleset's text (~20 MiB at 10k Services × 10 endpoints),
 * needed only when a chain is written whole or compared; every read returns the same rules.
 * @module
 */
import type { PlannedEndpoint } from '../../planner/plan.ts';
import { probability } from './names.ts';
import type { IptablesChain } from './render.ts';

/** What a service port's KUBE-SEP- chains share. */
export interface EndpointShape {
  /** The comment argument and a space, or '' in a large cluster. */
  readonly comment: string;
  /** `-m <proto> -p <proto> ` (with the trailing space). */
  readonly match: string;
  /** ClientIP affinity: the DNAT rule also records the client (`-m recent --set`). */
  readonly affinity: boolean;
  /** The masquerade chain to jump to (KUBE-MARK-MASQ). */
  readonly markMasq: string;
}

/**
 * A KUBE-SEP- chain: the hairpin masquerade and the DNAT of one endpoint. Its rules are made when
 * read (the same text each time), from the endpoint and what its service port's endpoints share:
 * a 10k-Service node holds ~10^5 of these chains, and their text (~20 MiB) is needed only when
 * written whole or compared. Upstream's rules, `writeServiceToEndpointRules`.
 */
export class EndpointChain implements IptablesChain {
  readonly name: string;
  readonly #endpoint: PlannedEndpoint;
  readonly #shape: EndpointShape;
  constructor(name: string, endpoint: PlannedEndpoint, shape: EndpointShape) {
    this.name = name;
    this.#endpoint = endpoint;
    this.#shape = shape;
  }
  get rules(): readonly string[] {
    // Plain concatenation: these strings live only until they are written or compared.
    const { comment: c, match, affinity, markMasq } = this.#shape;
    const ep = this.#endpoint;
    const recent = affinity ? '-m recent --name ' + this.name + ' --set ' : '';
    return [c + '-s ' + ep.ip + ' -j ' + markMasq, c + recent + match + '-j DNAT --to-destination ' + ep.hostPort];
  }
  toJSON(): IptablesChain {
    return { name: this.name, rules: this.rules };
  }
}

/**
 * A KUBE-SVC- or KUBE-SVL- chain: its first rules (the ClusterIP masquerade) as written, then the
 * endpoint selection, made when read like {@link EndpointChain}'s: ClientIP affinity checks, then
 * each endpoint with probability 1/(n-i) of what is left (upstream `writeServiceToEndpointRules`).
 */
export class SelectionChain implements IptablesChain {
  readonly name: string;
  readonly #head: readonly string[];
  readonly #seps: readonly string[];
  readonly #comments: readonly string[] | undefined;
  readonly #affinitySeconds: number | undefined;
  /**
   * @param head the rules written before the selection
   * @param seps the KUBE-SEP- chain of each endpoint, in selection order
   * @param comments each endpoint's `-m comment` argument (made and checked by the caller), or none
   * @param affinitySeconds the ClientIP affinity timeout, if the Service has one
   */
  constructor(name: string, head: readonly string[], seps: readonly string[], comments: readonly string[] | undefined, affinitySeconds: number | undefined) {
    this.name = name;
    this.#head = head;
    this.#seps = seps;
    this.#comments = comments;
    this.#affinitySeconds = affinitySeconds;
  }
  get ruleCount(): number {
    return this.#head.length + this.#seps.length * (this.#affinitySeconds === undefined ? 1 : 2);
  }
  get rules(): readonly string[] {
    // Plain concatenation: these strings live only until they are written or compared.
    const seps = this.#seps;
    const comments = this.#comments;
    const out = this.#head.slice();
    const c = (i: number) => (comments === undefined ? '' : comments[i] + ' ');
    if (this.#affinitySeconds !== undefined) {
      const check = ' --rcheck --seconds ' + this.#affinitySeconds + ' --reap -j ';
      for (let i = 0; i < seps.length; i++) out.push(c(i) + '-m recent --name ' + seps[i] + check + seps[i]);
    }
    const n = seps.length;
    for (let i = 0; i < n; i++) out.push(c(i) + (i < n - 1 ? '-m statistic --mode random --probability ' + probability(n - i) + ' -j ' : '-j ') + seps[i]);
    return out;
  }
  toJSON(): IptablesChain {
    return { name: this.name, rules: this.rules };
  }
}
