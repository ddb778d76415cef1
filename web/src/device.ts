// This browser's identity towards the node: a device id made once and kept
// in localStorage, and a readable device name taken from the user agent.

export const DEVICE_KEY = 'veche.device';
const DEVICE_ID_RE = /^[A-Za-z0-9._-]{1,64}$/;

export function isValidDeviceId(id: unknown): id is string {
  return typeof id === 'string' && DEVICE_ID_RE.test(id);
}

/** `web-` and 16 random lowercase hex digits. */
export function newDeviceId(): string {
  const bytes = new Uint8Array(8);
  crypto.getRandomValues(bytes);
  let hex = '';
  for (const b of bytes) hex += b.toString(16).padStart(2, '0');
  return `web-${hex}`;
}

let memoryId: string | null = null;

/** The stored device id, made and stored on first use (kept in memory if storage is off). */
export function deviceId(storage: Storage | null = safeLocalStorage()): string {
  try {
    const stored = storage?.getItem(DEVICE_KEY);
    if (isValidDeviceId(stored)) return stored;
  } catch {
    // Storage is disabled: fall through to the in-memory id.
  }
  memoryId ??= newDeviceId();
  try {
    storage?.setItem(DEVICE_KEY, memoryId);
  } catch {
    // Storage is full or disabled: this tab keeps the id in memory.
  }
  return memoryId;
}

function safeLocalStorage(): Storage | null {
  try {
    return typeof localStorage === 'undefined' ? null : localStorage;
  } catch {
    return null;
  }
}

/** A short name such as "Chrome on Linux", at most 64 characters. */
export function deviceName(ua: string = typeof navigator === 'undefined' ? '' : navigator.userAgent): string {
  const browser =
    /\bEdg(e|A|iOS)?\//.test(ua) ? 'Edge'
    : /\b(OPR|Opera)\//.test(ua) ? 'Opera'
    : /\bYaBrowser\//.test(ua) ? 'Yandex Browser'
    : /\b(Firefox|FxiOS)\//.test(ua) ? 'Firefox'
    : /\bChromium\//.test(ua) ? 'Chromium'
    : /\b(HeadlessChrome|Chrome|CriOS)\//.test(ua) ? 'Chrome'
    : /\bSafari\//.test(ua) && /\bVersion\//.test(ua) ? 'Safari'
    : /\bAppleWebKit\//.test(ua) ? 'WebKit'
    : 'Browser';
  const os =
    /\bWindows\b/.test(ua) ? 'Windows'
    : /\bAndroid\b/.test(ua) ? 'Android'
    : /\b(iPhone|iPad|iPod)\b/.test(ua) ? 'iOS'
    : /\bMac OS X\b|\bMacintosh\b/.test(ua) ? 'macOS'
    : /\bCrOS\b/.test(ua) ? 'ChromeOS'
    : /\bLinux\b|\bX11\b/.test(ua) ? 'Linux'
    : '';
  return (os ? `${browser} on ${os}` : browser).slice(0, 64);
}
