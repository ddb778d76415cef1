import { beforeEach, describe, expect, it } from 'vitest';
import { DEVICE_KEY, deviceId, deviceName, isValidDeviceId, newDeviceId } from '../src/device';

describe('device id', () => {
  beforeEach(() => localStorage.clear());

  it('is web- and 16 hex digits, and valid', () => {
    for (let i = 0; i < 50; i++) {
      const id = newDeviceId();
      expect(id).toMatch(/^web-[0-9a-f]{16}$/);
      expect(isValidDeviceId(id)).toBe(true);
    }
    expect(newDeviceId()).not.toBe(newDeviceId());
  });

  it('validates the node\'s rule: A-Z a-z 0-9 . _ -, 1 to 64 long', () => {
    expect(isValidDeviceId('a')).toBe(true);
    expect(isValidDeviceId('A.b_c-9')).toBe(true);
    expect(isValidDeviceId('x'.repeat(64))).toBe(true);
    expect(isValidDeviceId('x'.repeat(65))).toBe(false);
    expect(isValidDeviceId('')).toBe(false);
    expect(isValidDeviceId('web id')).toBe(false);
    expect(isValidDeviceId('устройство')).toBe(false);
    expect(isValidDeviceId('a/b')).toBe(false);
    expect(isValidDeviceId(null)).toBe(false);
  });

  it('is made once and kept in localStorage', () => {
    const id = deviceId();
    expect(isValidDeviceId(id)).toBe(true);
    expect(localStorage.getItem(DEVICE_KEY)).toBe(id);
    expect(deviceId()).toBe(id);
  });

  it('keeps a valid stored id and replaces an invalid one', () => {
    localStorage.setItem(DEVICE_KEY, 'web-0123456789abcdef');
    expect(deviceId()).toBe('web-0123456789abcdef');
    localStorage.setItem(DEVICE_KEY, 'not valid!');
    const id = deviceId();
    expect(id).toMatch(/^web-[0-9a-f]{16}$/);
    expect(localStorage.getItem(DEVICE_KEY)).toBe(id);
  });

  it('works without storage', () => {
    const broken = {
      getItem() {
        throw new Error('denied');
      },
      setItem() {
        throw new Error('denied');
      },
    } as unknown as Storage;
    const id = deviceId(broken);
    expect(isValidDeviceId(id)).toBe(true);
    expect(deviceId(broken)).toBe(id);
    expect(isValidDeviceId(deviceId(null))).toBe(true);
  });
});

describe('device name', () => {
  const cases: Array<[string, string]> = [
    ['Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/156.0.0.0 Safari/537.36', 'Chrome on Linux'],
    ['Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) HeadlessChrome/156.0.0.0 Safari/537.36', 'Chrome on Linux'],
    ['Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/140.0.0.0 Safari/537.36 Edg/140.0.0.0', 'Edge on Windows'],
    ['Mozilla/5.0 (Windows NT 10.0; Win64; x64; rv:140.0) Gecko/20100101 Firefox/140.0', 'Firefox on Windows'],
    ['Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/18.0 Safari/605.1.15', 'Safari on macOS'],
    ['Mozilla/5.0 (iPhone; CPU iPhone OS 18_0 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/18.0 Mobile/15E148 Safari/604.1', 'Safari on iOS'],
    ['Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/140.0.0.0 Mobile Safari/537.36', 'Chrome on Android'],
    ['Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/138.0.0.0 YaBrowser/25.8.0.0 Safari/537.36', 'Yandex Browser on Windows'],
    ['Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/140.0.0.0 Safari/537.36 OPR/124.0.0.0', 'Opera on Windows'],
    ['Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/605.1.15 (KHTML, like Gecko)', 'WebKit on Windows'],
    ['', 'Browser'],
  ];
  for (const [ua, name] of cases) {
    it(`names ${name}`, () => expect(deviceName(ua)).toBe(name));
  }

  it('is at most 64 characters', () => {
    expect(deviceName('x'.repeat(500)).length).toBeLessThanOrEqual(64);
  });
});
