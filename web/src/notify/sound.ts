// The notification chime, made with Web Audio: two soft sine notes, so there
// is no sound file to license or ship.
let ctx: AudioContext | null = null;

/** Plays the chime; resolves false when the browser would not (no Web Audio, autoplay refused). */
export function chime(volume = 0.2): boolean {
  const AC = (globalThis as { AudioContext?: typeof AudioContext }).AudioContext;
  if (!AC) return false;
  try {
    ctx ??= new AC();
    if (ctx.state === 'suspended') void ctx.resume().catch(() => {});
    const start = ctx.currentTime + 0.01;
    for (const [freq, at] of [
      [880, 0],
      [1318.5, 0.12],
    ] as const) {
      const osc = ctx.createOscillator();
      const gain = ctx.createGain();
      osc.type = 'sine';
      osc.frequency.value = freq;
      gain.gain.setValueAtTime(0, start + at);
      gain.gain.linearRampToValueAtTime(volume, start + at + 0.02);
      gain.gain.exponentialRampToValueAtTime(0.0001, start + at + 0.45);
      osc.connect(gain).connect(ctx.destination);
      osc.start(start + at);
      osc.stop(start + at + 0.5);
    }
    return true;
  } catch {
    return false;
  }
}

/** Browsers allow audio only after a user gesture: unlock on the first one. */
export function unlockAudioOnGesture(): void {
  const once = () => {
    removeEventListener('pointerdown', once);
    removeEventListener('keydown', once);
    const AC = (globalThis as { AudioContext?: typeof AudioContext }).AudioContext;
    if (!AC) return;
    try {
      ctx ??= new AC();
      void ctx.resume().catch(() => {});
    } catch {
      // No audio here.
    }
  };
  addEventListener('pointerdown', once);
  addEventListener('keydown', once);
}
