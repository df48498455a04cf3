/** `scalar --help`, `scalar jobs --help`, `scalar jobs run --help`: rendered from the command table. */
import { type CommandSpec, GLOBAL_OPTIONS, type Options } from "./args";

function optionLines(options: Options): string[] {
  const entries = Object.entries(options).map(([name, o]) => {
    const flag = `${o.short ? `-${o.short}, ` : "    "}--${name}${o.type === "string" ? ` ${o.value ?? "VALUE"}` : ""}`;
    return [flag, o.description] as const;
  });
  const width = Math.max(0, ...entries.map(([f]) => f.length));
  return entries.map(([f, d]) => `  ${f.padEnd(width)}  ${d}`);
}

function commandList(commands: CommandSpec<unknown>[]): string[] {
  const names = commands.map((c) => `scalar ${c.words.join(" ")}`);
  const width = Math.max(...names.map((n) => n.length));
  return commands.map((c, i) => `  ${(names[i] as string).padEnd(width)}  ${c.summary}`);
}

export function renderHelp(commands: CommandSpec<unknown>[], words: string[], version: string): string {
  const command = commands.find((c) => c.words.join(" ") === words.join(" "));
  if (command) {
    return [
      `${command.summary}`,
      "",
      `usage: scalar ${command.words.join(" ")} ${command.usage}`.trimEnd(),
      ...(Object.keys(command.options).length ? ["", "options:", ...optionLines(command.options)] : []),
      "",
      "global options:",
      ...optionLines(GLOBAL_OPTIONS),
      "",
      "examples:",
      ...command.examples.map((e) => `  ${e}`),
      "",
    ].join("\n");
  }
  const group = commands.filter((c) => c.words[0] === words[0]);
  if (words.length > 0 && group.length > 0) {
    return [
      `usage: scalar ${words[0]} <command> [options]`,
      "",
      "commands:",
      ...commandList(group),
      "",
      `\`scalar ${words[0]} <command> --help\` for its options.`,
      "",
    ].join("\n");
  }
  return [
    `scalar ${version}: the command line of Scalar, a serverless GPU cloud`,
    "",
    "usage: scalar <command> [options]",
    "",
    "commands:",
    ...commandList(commands),
    "",
    "global options:",
    ...optionLines(GLOBAL_OPTIONS),
    "",
    "Credentials: --api-url/--api-key, else SCALAR_API_URL/SCALAR_API_KEY, else the nearest",
    ".scalar/credentials.json (written by `npm start`), else ~/.config/scalar/credentials.json",
    "(written by `scalar login`; $XDG_CONFIG_HOME is honoured). Docs: docs/cli.md.",
    "",
  ].join("\n");
}
