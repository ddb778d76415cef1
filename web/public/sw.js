// Veche's service worker: shows the node's Web Push notifications (the payload
// of docs/protocol.md, "Push notifications"), opens the discussion on click,
// and closes the notifications of a discussion the page says was read.
/* eslint-env serviceworker */
self.addEventListener('install', () => self.skipWaiting());
self.addEventListener('activate', (event) => event.waitUntil(self.clients.claim()));

self.addEventListener('push', (event) => {
  let p = {};
  try {
    p = event.data ? event.data.json() : {};
  } catch {
    p = {};
  }
  if (p.type !== 'message') return;
  const count = Number(p.count) > 1 ? ` (${p.count})` : '';
  const who = p.author_name || String(p.author || '').split('@')[0];
  const body = p.text ? `${who}: ${p.text}` : who;
  event.waitUntil(
    self.registration.showNotification(`${p.title || who}${count}`, {
      body,
      tag: p.discussion,
      renotify: true,
      data: { discussion: p.discussion, message_id: p.message_id },
    }),
  );
});

self.addEventListener('notificationclick', (event) => {
  event.notification.close();
  const discussion = event.notification.data && event.notification.data.discussion;
  event.waitUntil(
    self.clients.matchAll({ type: 'window', includeUncontrolled: true }).then((list) => {
      const client = list.find((c) => new URL(c.url).origin === self.location.origin);
      if (client) {
        client.postMessage({ source: 'veche-sw', type: 'open', discussion });
        return client.focus();
      }
      return self.clients.openWindow(`/#d=${encodeURIComponent(discussion || '')}`);
    }),
  );
});

self.addEventListener('message', (event) => {
  const m = event.data || {};
  if (m.type !== 'read' || typeof m.discussion !== 'string') return;
  event.waitUntil(
    self.registration.getNotifications({ tag: m.discussion }).then((list) => list.forEach((n) => n.close())),
  );
});
