// How the dashboard writes numbers, sizes, ranges, times and durations.
// Pure functions, no DOM: tested by format.test.js under `node --test`.

const UNITS = ['B', 'KiB', 'MiB', 'GiB', 'TiB', 'PiB'];

/** "1.50" -> "1.5", "2.00" -> "2", "100" -> "100". */
export function trimZeros(str) {
  return str.includes('.') ? str.replace(/\.?0+$/, '') : str;
}

/** 4096 -> "4 KiB", 1536 -> "1.5 KiB", 100 -> "100 B". */
export function fmtBytes(n) {
  if (n === undefined || n === null || !Number.isFinite(n)) return '—';
  let v = Math.abs(n);
  let u = 0;
  while (v >= 1024 && u < UNITS.length - 1) { v /= 1024; u++; }
  const sign = n < 0 ? '-' : '';
  if (u === 0) return `${sign}${Math.round(v)} B`;
  const digits = v >= 100 || Number.isInteger(v) ? 0 : v >= 10 ? 1 : 2;
  return `${sign}${trimZeros(v.toFixed(digits))} ${UNITS[u]}`;
}

export function fmtRate(bytesPerSec) {
  return `${fmtBytes(bytesPerSec)}/s`;
}

/** 9999 -> "9999", 12345 -> "12.3k", 2500000 -> "2.5M". */
export function fmtCount(n) {
  if (n === undefined || n === null || !Number.isFinite(n)) return '—';
  if (Math.abs(n) < 10000) return String(Math.round(n));
  const k = ['', 'k', 'M', 'G', 'T'];
  let v = n;
  let i = 0;
  while (Math.abs(v) >= 1000 && i < k.length - 1) { v /= 1000; i++; }
  return `${trimZeros(v.toFixed(v >= 100 ? 0 : 1))}${k[i]}`;
}

/** Operations a second: one decimal below 10. */
export function fmtOps(n) {
  if (!Number.isFinite(n)) return '—';
  if (n === 0) return '0';
  if (n < 10) return trimZeros(n.toFixed(1));
  return fmtCount(n);
}

/** 1234567 -> "1,234,567"; not a number -> "". */
export function fmtExact(n) {
  return Number.isFinite(n) ? n.toLocaleString('en-US') : '';
}

/**
 * "bytes 1049576..1049676 (100 B)": the exact bytes, the end exclusive, as
 * an operator gives them to dd or qemu-io, and their size; exactRange()
 * says the same with separators and the last byte, for titles.
 */
export function fmtRange(offset, bytes) {
  if (!Number.isFinite(offset)) return '';
  if (!Number.isFinite(bytes)) return `byte ${offset}`;
  return `bytes ${offset}..${offset + bytes} (${fmtBytes(bytes)})`;
}

export function exactRange(offset, bytes) {
  if (!Number.isFinite(offset)) return '';
  if (!Number.isFinite(bytes) || bytes <= 0) return `byte ${fmtExact(offset)}`;
  return `bytes ${fmtExact(offset)}–${fmtExact(offset + bytes - 1)} (${fmtExact(bytes)} bytes)`;
}

export const pad = (n, w = 2) => String(n).padStart(w, '0');

/** "14:03:07" today, with the date on other days (local time). */
export function fmtTime(ms, now = Date.now()) {
  if (!Number.isFinite(ms)) return '—';
  const d = new Date(ms);
  const hms = `${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}`;
  if (d.toDateString() === new Date(now).toDateString()) return hms;
  return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())} ${hms}`;
}

/** "2024-05-01 14:03:07.123 +02:00" (local time). */
export function fmtFullTime(ms) {
  if (!Number.isFinite(ms)) return '';
  const d = new Date(ms);
  const off = -d.getTimezoneOffset();
  const tz = `${off >= 0 ? '+' : '-'}${pad(Math.floor(Math.abs(off) / 60))}:${pad(Math.abs(off) % 60)}`;
  return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())} ` +
    `${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}.${pad(d.getMilliseconds(), 3)} ${tz}`;
}

/** "12 s ago", "3 min ago", "5 h ago", "2 d ago". */
export function fmtAgo(ms, now = Date.now()) {
  const sec = Math.max(0, Math.round((now - ms) / 1000));
  if (sec < 60) return `${sec} s ago`;
  const min = Math.floor(sec / 60);
  if (min < 60) return `${min} min ago`;
  const hr = Math.floor(min / 60);
  if (hr < 48) return `${hr} h ago`;
  return `${Math.floor(hr / 24)} d ago`;
}

/** 75 -> "1 min 15 s". */
export function fmtDuration(sec) {
  if (!Number.isFinite(sec) || sec < 0) return '';
  const t = Math.round(sec);
  if (t < 60) return `${t} s`;
  const m = Math.floor(t / 60);
  if (m < 60) return `${m} min ${pad(t % 60)} s`;
  const hr = Math.floor(m / 60);
  if (hr < 48) return `${hr} h ${pad(m % 60)} min`;
  return `${Math.floor(hr / 24)} d ${hr % 24} h`;
}

/** A latency in nanoseconds: 250000 -> "250 µs", 1500000 -> "1.5 ms", 2e9 -> "2 s". */
export function fmtLatency(ns) {
  if (ns === undefined || ns === null || !Number.isFinite(ns)) return '\u2014';
  const units = [[1e9, 's'], [1e6, 'ms'], [1e3, '\u00b5s']];
  for (const [scale, unit] of units) {
    if (Math.abs(ns) >= scale) {
      const v = ns / scale;
      return `${trimZeros(v.toFixed(v >= 100 ? 0 : v >= 10 ? 1 : 2))} ${unit}`;
    }
  }
  return `${Math.round(ns)} ns`;
}

/** A chart's span: "60 s", "2.5 min". */
export function fmtSpan(ms) {
  const sec = Math.round(ms / 1000);
  if (sec < 120) return `${sec} s`;
  return `${trimZeros((sec / 60).toFixed(1))} min`;
}

/** done of total as a percentage in 0..=100 (0 when total is unknown). */
export function pct(done, total) {
  if (!(total > 0) || !Number.isFinite(done)) return 0;
  return Math.max(0, Math.min(100, (done / total) * 100));
}

/** 0.5 -> "0.5%", 42.7 -> "42%": a job shows 100% only when done. */
export function fmtPct(p) {
  return p > 0 && p < 1 ? `${p.toFixed(1)}%` : `${Math.floor(p)}%`;
}

/** "1 replica", "2 replicas". */
export function plural(n, word) {
  return `${n} ${word}${n === 1 ? '' : 's'}`;
}

/** "scrub #3 + repair". */
export function jobName(kind, id, repair) {
  return `${kind || 'job'} #${id}${repair ? ' + repair' : ''}`;
}

/** The children with bytes above 0, sorted by name: [[child, bytes]]. */
export function lostBytes(mm) {
  return Object.entries(mm || {}).filter(([, b]) => b > 0)
    .sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
}

/** {"c": 4096} -> "c lost 4 KiB" (sorted by child name). */
export function mismatchText(mm) {
  return lostBytes(mm).map(([c, b]) => `${c} lost ${fmtBytes(b)}`).join(', ');
}
