import type { ComponentChildren } from 'preact';
import { useEffect, useRef } from 'preact/hooks';
import { t } from '../i18n';

/**
 * A modal `<dialog>` (`showModal`: the page behind is inert, so focus stays inside) with a title and a
 * close button; Escape closes it, and focus returns to the opener.
 */
export function Modal({ id, title, class: cls, onClose, children }: { id: string; title: string; class?: string; onClose(): void; children: ComponentChildren }) {
  const dialog = useRef<HTMLDialogElement>(null);
  // Who had focus before the dialog: taken at the first render, before any child's effect moves focus inside.
  const opener = useRef(typeof document === 'undefined' ? null : (document.activeElement as HTMLElement | null));
  const gone = useRef(false);
  useEffect(() => {
    const el = dialog.current;
    if (el && !el.open) {
      if (typeof el.showModal === 'function') el.showModal();
      else el.setAttribute('open', '');
    }
    return () => {
      // Close before giving focus back: while the modal is open, the page behind it is inert.
      gone.current = true;
      if (el?.open) el.close();
      opener.current?.focus?.();
    };
  }, []);
  return (
    <dialog
      ref={dialog}
      class={`modal ${cls ?? ''}`}
      aria-labelledby={`${id}-title`}
      onClose={() => {
        if (!gone.current) onClose();
      }}
      onCancel={(e) => {
        e.preventDefault();
        onClose();
      }}
      onKeyDown={(e) => {
        // Escape closes at once, also from a search field (which would only clear itself first),
        // unless something inside used it (a completion list closing).
        if (e.key === 'Escape' && !e.defaultPrevented && !e.isComposing) {
          e.preventDefault();
          onClose();
        }
      }}
    >
      <div class="dialog-head">
        <h2 id={`${id}-title`}>{title}</h2>
        <button type="button" class="close" onClick={onClose}>
          {t('sessions.close')}
        </button>
      </div>
      {children}
    </dialog>
  );
}
