import { afterEach, describe, expect, it } from 'vitest';
import { ApiError } from '../src/api';
import { setLanguage } from '../src/i18n';
import { errorText } from '../src/state';

afterEach(() => setLanguage('en'));

describe('errorText', () => {
  it('says the node\'s refusals in Russian', () => {
    setLanguage('ru');
    expect(errorText(new ApiError(404, 'not_found', 'no such discussion'))).toBe('Не найдено или недоступно вам.');
    expect(errorText(new ApiError(403, 'forbidden', 'only the owner may rename'))).toBe('Не разрешено: only the owner may rename');
    expect(errorText(new ApiError(403, 'forbidden', ''))).toBe('У вас нет прав на это действие.');
    expect(errorText(new ApiError(409, 'conflict', 'exists'))).toBe('Такое уже есть.');
    expect(errorText(new ApiError(503, 'unavailable', 'stopping'))).toBe('Сервер занят или перезапускается. Повторите чуть позже.');
    expect(errorText(new ApiError(200, 'bad_response', 'Expected a user'))).toBe(
      'Сервер прислал ответ, который эта страница не понимает. Обновите страницу.',
    );
    expect(errorText(new ApiError(0, 'network', 'Failed to fetch'))).toBe('Нет связи с сервером. Проверьте подключение.');
  });

  it('names the HTTP status instead of the browser\'s English status text', () => {
    setLanguage('ru');
    expect(errorText(new ApiError(502, 'http_502', 'Bad Gateway'))).toBe('Что-то пошло не так (HTTP 502).');
    setLanguage('en');
    expect(errorText(new ApiError(502, 'http_502', 'Bad Gateway'))).toBe('Something went wrong (HTTP 502).');
  });

  it('keeps the node\'s own words for anything else', () => {
    expect(errorText(new ApiError(500, 'internal', 'disk full'))).toBe('disk full');
    expect(errorText(new Error('plain'))).toBe('plain');
  });
});
