// Whether a new message rings, shows a desktop notification, or neither: the
// discussion's level (as the node applies it to push), mute, my DND, and
// whether I am looking at it already. Pure, no IO.
import type { DiscussionKind, NotificationLevel, PresenceChoice } from '../api';

export interface NotifyInput {
  kind: DiscussionKind;
  level: NotificationLevel;
  mutedUntil?: number;
  now: number;
  /** The message mentions me, or replies to a message of mine. */
  mention: boolean;
  own: boolean;
  choice: PresenceChoice;
  /** The tab is visible and focused. */
  focused: boolean;
  /** The discussion is the one open on screen. */
  open: boolean;
  /** My preferences: the chime, and desktop notifications (with the browser's permission). */
  soundOn: boolean;
  desktopOn: boolean;
  /** When the chime last played (ms), for at most one per 2 s. */
  lastSoundAt: number;
}

export interface Decision {
  sound: boolean;
  desktop: boolean;
}

export const SOUND_GAP_MS = 2000;
const NOTHING: Decision = { sound: false, desktop: false };

/** Whether the level lets this message through: `default` is every message in dialogs and object discussions, mentions in groups. */
export function levelAllows(kind: DiscussionKind, level: NotificationLevel, mention: boolean): boolean {
  switch (level) {
    case 'none':
      return false;
    case 'all':
      return true;
    case 'mentions':
      return mention;
    default:
      return kind === 'group' ? mention : true;
  }
}

export function decide(i: NotifyInput): Decision {
  if (i.own) return NOTHING;
  if (i.mutedUntil !== undefined && i.mutedUntil > i.now) return NOTHING;
  if (!levelAllows(i.kind, i.level, i.mention)) return NOTHING;
  if (i.choice === 'dnd') return NOTHING;
  if (i.focused && i.open) return NOTHING;
  return {
    sound: i.soundOn && i.now - i.lastSoundAt >= SOUND_GAP_MS,
    desktop: i.desktopOn && !i.focused,
  };
}
