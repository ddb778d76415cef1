import { describe, expect, it } from 'vitest';
import { applyEvents, applyHistory, emptyTimeline, type Timeline } from '../src/chat/reducer';
import { D, ev, msg, posted } from './chat-fixtures';

function loaded(cursor: number, messages = [msg(1, 'one')]): Timeline {
  return { ...emptyTimeline(D), messages, cursor, oldest: 1, more: false, loaded: true };
}

describe('applyEvents', () => {
  it('applies events in seq order, whatever order they came in', () => {
    const { timeline, gap } = applyEvents(loaded(1), [posted(3, 'three'), posted(2, 'two')]);
    expect(gap).toBe(false);
    expect(timeline.cursor).toBe(3);
    expect(timeline.messages.map((m) => m.text)).toEqual(['one', 'two', 'three']);
  });

  it('ignores events at or below the cursor (replays, duplicates)', () => {
    const start = loaded(2, [msg(1, 'one'), msg(2, 'two')]);
    const { timeline, gap } = applyEvents(start, [posted(2, 'two again'), ev(1, { type: 'message_deleted', message_id: 'm1@hq' })]);
    expect(gap).toBe(false);
    expect(timeline).toBe(start);
  });

  it('stops at a gap and reports it, applying nothing beyond it', () => {
    const { timeline, gap } = applyEvents(loaded(1), [posted(2, 'two'), posted(4, 'four'), posted(5, 'five')]);
    expect(gap).toBe(true);
    expect(timeline.cursor).toBe(2);
    expect(timeline.messages.map((m) => m.text)).toEqual(['one', 'two']);
    // What sync then returns fills the gap and the rest applies.
    const filled = applyEvents(timeline, [posted(3, 'three'), posted(4, 'four'), posted(5, 'five')]);
    expect(filled.gap).toBe(false);
    expect(filled.timeline.messages.map((m) => m.seq)).toEqual([1, 2, 3, 4, 5]);
  });

  it('ignores events of other discussions', () => {
    const start = loaded(1);
    const { timeline, gap } = applyEvents(start, [ev(9, { type: 'title_changed', title: 'x' }, 'anna@hq', 'other@hq')]);
    expect(gap).toBe(false);
    expect(timeline).toBe(start);
  });

  it('edits set the text, version and edited time', () => {
    const { timeline } = applyEvents(loaded(1), [ev(2, { type: 'message_edited', message_id: 'm1@hq', text: 'uno', version: 2 })]);
    expect(timeline.messages[0]).toMatchObject({ text: 'uno', version: 2, edited_at: 1765000002000 });
  });

  it('deletes leave a tombstone without text, data, buttons or reactions', () => {
    const start = loaded(1, [
      msg(1, 'secret', { data: { a: 1 }, actions: [{ id: 'ok', label: 'OK' }], reactions: [{ emoji: '👍', users: ['b@hq'] }] }),
    ]);
    const { timeline } = applyEvents(start, [ev(2, { type: 'message_deleted', message_id: 'm1@hq' })]);
    const m = timeline.messages[0];
    expect(m.deleted).toBe(true);
    expect(m.text).toBeUndefined();
    expect(m.data).toBeUndefined();
    expect(m.actions).toEqual([]);
    expect(m.reactions).toEqual([]);
    // A later edit event of the deleted message changes nothing.
    const after = applyEvents(timeline, [ev(3, { type: 'message_edited', message_id: 'm1@hq', version: 2 })]).timeline;
    expect(after.messages[0].text).toBeUndefined();
    expect(after.cursor).toBe(3);
  });

  it('reactions add and remove the actor, once each', () => {
    const add = (seq: number, actor: string, emoji = '👍') => ev(seq, { type: 'reaction_added', message_id: 'm1@hq', emoji }, actor);
    let { timeline } = applyEvents(loaded(1), [add(2, 'boris@hq'), add(3, 'carol@hq'), add(4, 'boris@hq'), add(5, 'boris@hq', '🎉')]);
    expect(timeline.messages[0].reactions).toEqual([
      { emoji: '👍', users: ['boris@hq', 'carol@hq'] },
      { emoji: '🎉', users: ['boris@hq'] },
    ]);
    ({ timeline } = applyEvents(timeline, [
      ev(6, { type: 'reaction_removed', message_id: 'm1@hq', emoji: '🎉' }, 'boris@hq'),
      ev(7, { type: 'reaction_removed', message_id: 'm1@hq', emoji: '👍' }, 'carol@hq'),
    ]));
    expect(timeline.messages[0].reactions).toEqual([{ emoji: '👍', users: ['boris@hq'] }]);
  });

  it('changes to messages not loaded move the cursor and nothing else', () => {
    const { timeline, gap } = applyEvents(loaded(1), [ev(2, { type: 'message_deleted', message_id: 'gone@hq' })]);
    expect(gap).toBe(false);
    expect(timeline.cursor).toBe(2);
    expect(timeline.messages.map((m) => m.text)).toEqual(['one']);
  });
});

describe('applyHistory', () => {
  it('takes the first page: messages in their current state, the cursor at its newest event', () => {
    const page = {
      events: [posted(8, 'eight', { text: 'eight, edited', version: 2 }), posted(9, 'nine'), ev(10, { type: 'message_edited', message_id: 'm8@hq', text: 'eight, edited', version: 2 })],
      more: true,
    };
    const tl = applyHistory(emptyTimeline(D), page);
    expect(tl).toMatchObject({ loaded: true, cursor: 10, oldest: 8, more: true });
    expect(tl.messages.map((m) => [m.seq, m.text])).toEqual([
      [8, 'eight, edited'],
      [9, 'nine'],
    ]);
  });

  it('prepends older pages without moving the cursor; loaded messages win', () => {
    let tl = applyHistory(emptyTimeline(D), { events: [posted(5, 'five'), posted(6, 'six')], more: true });
    tl = applyEvents(tl, [ev(7, { type: 'message_edited', message_id: 'm5@hq', text: 'five, live', version: 2 })]).timeline;
    tl = applyHistory(tl, { events: [posted(3, 'three'), posted(4, 'four'), posted(5, 'five, stale')], more: false });
    expect(tl).toMatchObject({ cursor: 7, oldest: 3, more: false });
    expect(tl.messages.map((m) => m.text)).toEqual(['three', 'four', 'five, live', 'six']);
  });
});
