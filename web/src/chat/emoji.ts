// The emoji data, served by the node at `/emoji/{lang}.json` (made at build
// time from emoji-picker-element-data) and fetched only when first needed.
import { signal } from '@preact/signals';
import type { EmojiEntry } from './complete';
import type { Lang } from '../i18n';

export const emojiData = signal<EmojiEntry[] | null>(null);
let loading: Promise<void> | null = null;

/** Starts loading once; `emojiData` fills in when it arrives. */
export function loadEmoji(lang: Lang): Promise<void> {
  loading ??= fetch(`/emoji/${lang}.json`, { credentials: 'same-origin' })
    .then((r) => (r.ok ? r.json() : Promise.reject(new Error(`HTTP ${r.status}`))))
    .then((data: unknown) => {
      if (Array.isArray(data)) emojiData.value = data as EmojiEntry[];
    })
    .catch(() => {
      loading = null; // try again next time
    });
  return loading;
}
