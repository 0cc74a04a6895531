/**
 * node:util parseArgs's errors, in one short line for `tool: <problem>; try "tool --help"`. Its own
 * messages span several lines (printed escaped as \x0a) and advise quoting tricks, which point a user who
 * mistyped an option in the wrong direction.
 */
export function argumentProblem(err: unknown): string {
  const message = err instanceof Error ? err.message : String(err);
  const code = (err as { code?: unknown } | null)?.code;
  // Node names the option first, in single quotes: '--retries', '--retries <value>', '-x'.
  const name = /'(-{1,2}[^'\s]*)/.exec(message)?.[1];
  if (name === undefined) return message.split('\n')[0] ?? message;
  if (code === 'ERR_PARSE_ARGS_UNKNOWN_OPTION') return `unknown option '${name}'`;
  if (code === 'ERR_PARSE_ARGS_INVALID_OPTION_VALUE') {
    if (message.includes('does not take an argument')) return `option '${name}' takes no value`;
    // "ambiguous": the next word starts with '-', as in --retries -1.
    if (message.includes('ambiguous')) return `option '${name}' needs a value (for one that starts with "-", write ${name}=VALUE)`;
    return `option '${name}' needs a value`;
  }
  return message.split('\n')[0] ?? message;
}
