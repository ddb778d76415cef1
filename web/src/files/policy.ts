// The node's file policy (`file_policy`), checked in the browser before a byte
// moves, so the user learns at once which rule refuses a file. The node checks
// again (and recognises the type from the content); this is only the early word.
import type { DiscussionKind } from '../api';
import { formatNumber, t, type Key } from '../i18n';

export interface FilePolicy {
  enabled: boolean;
  discussion_kinds: string[];
  max_size: number;
  allowed_types: string[];
  blocked_types: string[];
  blocked_extensions: string[];
  quota: number;
  used: number;
  retention_days: number;
}

/** A file the user picked: what the browser tells before reading it. */
export interface Candidate {
  name: string;
  size: number;
  /** The browser's guess from the name; may be empty. */
  type: string;
}

/** Why a file is refused: the node's rule name (`files.max_size_mb`, …) and its limit where there is one. */
export interface Refusal {
  rule: string;
  limit?: string;
}

/** `image/*` matches `image/png`; `*` or `*\/*` match everything. */
export function typeMatches(pattern: string, type: string): boolean {
  const p = pattern.trim().toLowerCase();
  const t = type.trim().toLowerCase();
  if (p === '*' || p === '*/*') return true;
  if (p.endsWith('/*')) return t.startsWith(p.slice(0, -1));
  return p === t;
}

export function extensionOf(name: string): string {
  const dot = name.lastIndexOf('.');
  return dot > 0 && dot < name.length - 1 ? name.slice(dot + 1).toLowerCase() : '';
}

/**
 * The first rule that refuses the file, in the node's order, or null.
 * `pending` is what this batch already takes of the quota.
 */
export function checkFile(policy: FilePolicy, kind: DiscussionKind, file: Candidate, pending = 0): Refusal | null {
  if (!policy.enabled) return { rule: 'files.enabled' };
  if (policy.discussion_kinds.length > 0 && !policy.discussion_kinds.includes(kind)) {
    return { rule: 'files.discussion_kinds', limit: policy.discussion_kinds.join(', ') };
  }
  if (policy.max_size > 0 && file.size > policy.max_size) return { rule: 'files.max_size_mb', limit: formatSize(policy.max_size) };
  const ext = extensionOf(file.name);
  if (ext && policy.blocked_extensions.some((b) => b.toLowerCase().replace(/^\./, '') === ext)) {
    return { rule: 'files.blocked_extensions', limit: ext };
  }
  if (policy.quota > 0 && policy.used + pending + file.size > policy.quota) {
    return { rule: 'files.quota_mb', limit: formatSize(policy.quota) };
  }
  if (file.type) {
    if (policy.blocked_types.some((p) => typeMatches(p, file.type))) return { rule: 'files.blocked_types', limit: file.type };
    if (policy.allowed_types.length > 0 && !policy.allowed_types.some((p) => typeMatches(p, file.type))) {
      return { rule: 'files.allowed_types', limit: file.type };
    }
  }
  return null;
}

/** Bytes for people: `512 B`, `1.5 KB`, `20 MB` (binary units, one decimal below 10), in the UI's language (`1,5 КБ`). */
export function formatSize(bytes: number): string {
  if (bytes < 1024) return t('size.b', { n: formatNumber(bytes, 0) });
  const units = ['size.kb', 'size.mb', 'size.gb', 'size.tb'] as const;
  let v = bytes / 1024;
  let u = 0;
  while (v >= 1024 && u < units.length - 1) {
    v /= 1024;
    u += 1;
  }
  return t(units[u], { n: formatNumber(v < 10 ? Math.round(v * 10) / 10 : Math.round(v), 1) });
}

/** The sentence for a policy refusal, naming the rule. */
export function refusalText(name: string, r: Refusal): string {
  const known: Record<string, Key> = {
    'files.enabled': 'files.rule.enabled',
    'files.discussion_kinds': 'files.rule.discussion_kinds',
    'files.max_size_mb': 'files.rule.max_size',
    'files.blocked_extensions': 'files.rule.blocked_extensions',
    'files.quota_mb': 'files.rule.quota',
    'files.blocked_types': 'files.rule.blocked_types',
    'files.allowed_types': 'files.rule.allowed_types',
  };
  const why = known[r.rule] ? t(known[r.rule], { limit: r.limit ?? '' }) : t('files.rule.other');
  return t('files.refused', { name, why, rule: r.rule });
}
