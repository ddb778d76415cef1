// Drafts per user and discussion, in this browser's localStorage.

function key(user: string, discussion: string): string {
  return `veche.draft.${user}.${discussion}`;
}

export function loadDraft(user: string, discussion: string): string {
  try {
    return localStorage.getItem(key(user, discussion)) ?? '';
  } catch {
    return '';
  }
}

export function saveDraft(user: string, discussion: string, text: string): void {
  try {
    if (text === '') localStorage.removeItem(key(user, discussion));
    else localStorage.setItem(key(user, discussion), text);
  } catch {
    // Storage full or disabled: the draft lives only in the composer.
  }
}
