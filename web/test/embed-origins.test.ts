import { describe, expect, it } from 'vitest';
import {
  acceptsMessage,
  hostTarget,
  isAllowed,
  originOf,
  parseEmbedPath,
  parseHostCommand,
  tokenFromFragment,
} from '../src/embed/origins';

const ALLOWED = ['http://localhost:5173', 'https://erp.corp.example'];
const TOKEN = `vemb_${'ab'.repeat(32)}`;

describe('origin checks', () => {
  it('normalizes only http and https URLs', () => {
    expect(originOf('https://ERP.corp.example:443/forms/1?x#y')).toBe('https://erp.corp.example');
    expect(originOf('http://127.0.0.1:8080/a')).toBe('http://127.0.0.1:8080');
    expect(originOf('javascript:alert(1)')).toBeNull();
    expect(originOf('file:///etc/passwd')).toBeNull();
    expect(originOf('')).toBeNull();
    expect(originOf(null)).toBeNull();
    expect(originOf('not a url')).toBeNull();
  });

  it('allows exact origins only', () => {
    expect(isAllowed('https://erp.corp.example', ALLOWED)).toBe(true);
    expect(isAllowed('https://erp.corp.example.evil.test', ALLOWED)).toBe(false);
    expect(isAllowed('https://evil.test', ALLOWED)).toBe(false);
    expect(isAllowed('http://erp.corp.example', ALLOWED)).toBe(false);
    expect(isAllowed('https://erp.corp.example/', ALLOWED)).toBe(false);
    expect(isAllowed('null', [...ALLOWED, 'null'])).toBe(false);
    expect(isAllowed('*', [...ALLOWED, '*'])).toBe(false);
    expect(isAllowed(undefined, ALLOWED)).toBe(false);
  });

  it('posts to the framing page only when it is allowed', () => {
    expect(hostTarget(true, 'http://localhost:5173', null, ALLOWED)).toBe('http://localhost:5173');
    expect(hostTarget(true, 'http://localhost:9999', null, ALLOWED)).toBeNull();
    // Where the browser does not tell the ancestor, the referrer's origin is checked.
    expect(hostTarget(true, undefined, 'https://erp.corp.example/invoice/1', ALLOWED)).toBe('https://erp.corp.example');
    expect(hostTarget(true, undefined, 'https://evil.test/', ALLOWED)).toBeNull();
    expect(hostTarget(true, undefined, '', ALLOWED)).toBeNull();
    // Not framed (1C's HTML field loads the page top-level): nobody to post to.
    expect(hostTarget(false, 'http://localhost:5173', null, ALLOWED)).toBeNull();
  });

  it('takes messages from the parent at an allowed origin only', () => {
    expect(acceptsMessage('https://erp.corp.example', true, ALLOWED)).toBe(true);
    expect(acceptsMessage('https://erp.corp.example', false, ALLOWED)).toBe(false);
    expect(acceptsMessage('https://evil.test', true, ALLOWED)).toBe(false);
  });
});

describe('the page address', () => {
  it('names the object', () => {
    expect(parseEmbedPath('/embed/object/erp/invoice/INV-1')).toEqual({ app: 'erp', type: 'invoice', id: 'INV-1' });
    expect(parseEmbedPath('/embed/object/erp/invoice/%D0%A1%D1%87%D1%91%D1%82%201')).toEqual({
      app: 'erp',
      type: 'invoice',
      id: 'Счёт 1',
    });
    expect(parseEmbedPath('/embed/object/erp/invoice')).toBeNull();
    expect(parseEmbedPath('/embed/object/erp/invoice/1/2')).toBeNull();
    expect(parseEmbedPath('/d/x')).toBeNull();
  });

  it('takes the token from the fragment only in its exact form', () => {
    expect(tokenFromFragment(`#t=${TOKEN}`)).toBe(TOKEN);
    expect(tokenFromFragment(`#x=1&t=${TOKEN}`)).toBe(TOKEN);
    expect(tokenFromFragment('#t=vemb_short')).toBeNull();
    expect(tokenFromFragment('')).toBeNull();
  });

  it('reads host commands of protocol v1 only', () => {
    expect(parseHostCommand({ source: 'veche-host', v: 1, type: 'token', token: TOKEN })).toEqual({ type: 'token', token: TOKEN });
    expect(parseHostCommand({ source: 'veche-host', v: 1, type: 'focus' })).toEqual({ type: 'focus' });
    expect(parseHostCommand({ source: 'veche-host', v: 2, type: 'focus' })).toBeNull();
    expect(parseHostCommand({ source: 'other', v: 1, type: 'focus' })).toBeNull();
    expect(parseHostCommand({ source: 'veche-host', v: 1, type: 'token', token: 'x' })).toBeNull();
    expect(parseHostCommand('focus')).toBeNull();
  });
});
