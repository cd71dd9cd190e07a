/**
 * A URL with its password masked (`mqtt://user:***@host`), for every log line, message and summary. Parsed as a URL
 * where it is one; a string that is not (a config value with a typo) is masked by pattern, so nothing prints a
 * password either way.
 */
export function redactUrl(url: string): string {
  try {
    const parsed = new URL(url);
    if (parsed.password === "") return url;
    parsed.password = "***";
    return parsed.toString();
  } catch {
    return url.replace(/^([a-z]+:\/\/[^/@:\s]*:)[^/@\s]*@/i, "$1***@");
  }
}
