// Web Push through the service worker: subscribe with the node's VAPID key
// (`push_config`) and register the subscription (`register_push`); the node
// then pushes when none of this user's connections is active.
import * as api from '../api';
import { t } from '../i18n';

const KEY = 'veche.push';

export function pushSupported(): boolean {
  return typeof navigator !== 'undefined' && 'serviceWorker' in navigator && typeof PushManager !== 'undefined' && isSecureContext;
}

/** base64url → bytes (the `applicationServerKey`). */
export function base64UrlBytes(s: string): Uint8Array<ArrayBuffer> {
  const b64 = s.replace(/-/g, '+').replace(/_/g, '/') + '='.repeat((4 - (s.length % 4)) % 4);
  const bin = atob(b64);
  const out = new Uint8Array(bin.length);
  for (let i = 0; i < bin.length; i++) out[i] = bin.charCodeAt(i);
  return out;
}

/** The service worker, registered once per page (it also receives the clicks). */
export function registerWorker(onOpen: (discussion: string) => void): void {
  if (!pushSupported()) return;
  navigator.serviceWorker.register('/sw.js').catch(() => {});
  navigator.serviceWorker.addEventListener('message', (e) => {
    const m = e.data as { source?: string; type?: string; discussion?: string };
    if (m?.source === 'veche-sw' && m.type === 'open' && typeof m.discussion === 'string') onOpen(m.discussion);
  });
}

/** Closes the push notifications of a discussion just read. */
export function closeRead(discussion: string): void {
  if (!pushSupported()) return;
  navigator.serviceWorker.controller?.postMessage({ type: 'read', discussion });
}

export function pushEnabled(): boolean {
  try {
    return !!localStorage.getItem(KEY);
  } catch {
    return false;
  }
}

/** Subscribes this browser and registers the endpoint with the node. Ask from a click (permission). */
export async function enablePush(): Promise<void> {
  if (!pushSupported()) throw new Error(t('notify.unsupported'));
  if (Notification.permission !== 'granted' && (await Notification.requestPermission()) !== 'granted') {
    throw new Error(t('notify.denied'));
  }
  const reg = await navigator.serviceWorker.register('/sw.js');
  await navigator.serviceWorker.ready;
  const config = await api.rpc<{ vapid_public_key: string }>({ method: 'push_config' }, 'push_config');
  const sub =
    (await reg.pushManager.getSubscription()) ??
    (await reg.pushManager.subscribe({ userVisibleOnly: true, applicationServerKey: base64UrlBytes(config.vapid_public_key) }));
  const json = sub.toJSON();
  const r = await api.rpc<{ id: string }>(
    { method: 'register_push', target: { kind: 'web_push', endpoint: json.endpoint, p256dh: json.keys?.p256dh, auth: json.keys?.auth } },
    'push_registered',
  );
  localStorage.setItem(KEY, r.id);
}

export async function disablePush(): Promise<void> {
  const id = localStorage.getItem(KEY);
  localStorage.removeItem(KEY);
  if (id) await api.rpc({ method: 'unregister_push', id }, 'done').catch(() => {});
  const reg = await navigator.serviceWorker.getRegistration();
  await (await reg?.pushManager.getSubscription())?.unsubscribe();
}
