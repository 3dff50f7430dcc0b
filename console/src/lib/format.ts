const units: [Intl.RelativeTimeFormatUnit, number][] = [
  ['year', 31536000000], ['month', 2592000000], ['week', 604800000], ['day', 86400000],
  ['hour', 3600000], ['minute', 60000],
];
const relative = new Intl.RelativeTimeFormat(undefined, { numeric: 'auto' });

/** "3 minutes ago", "yesterday", … (`at`: an RFC 3339 time, as the API sends them). */
export function ago(at: string): string {
  const delta = Date.parse(at) - Date.now();
  for (const [unit, size] of units) {
    if (Math.abs(delta) >= size) return relative.format(Math.round(delta / size), unit);
  }
  return 'just now';
}

export function when(at: string): string {
  return new Date(at).toLocaleString();
}

export function bytes(n: number): string {
  if (n < 1024) return `${n} B`;
  if (n < 1024 * 1024) return `${(n / 1024).toFixed(1)} KB`;
  return `${(n / 1024 / 1024).toFixed(1)} MB`;
}
