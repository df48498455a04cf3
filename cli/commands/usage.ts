/** `scalar usage [--month YYYY-MM]` (a month's GPU time and its cost) and `scalar invoices ls`. */
import { type Invoice, ok, type Usage } from "../api/client";
import { type CommandSpec, PAGE_OPTIONS, pageQuery, stringOption } from "../args";
import { type Context, printJson, printPage } from "../context";
import { EXIT, UsageError } from "../errors";
import { table } from "../output";

const dollars = (cents: number) => `$${(cents / 100).toFixed(2)}`;
const gpuHours = (seconds: number) => (seconds / 3600).toFixed(2);

export function usageTable(usage: Usage): string {
  return table(
    ["TIER", "GPU", "STATE", "GPU-HOURS", "PER GPU-HOUR", "AMOUNT"],
    usage.lines.map((l) => [
      l.tier,
      l.gpu_model,
      l.state,
      gpuHours(l.gpu_seconds),
      dollars(l.cents_per_gpu_hour),
      dollars(l.amount_cents),
    ]),
  );
}

export const usage: CommandSpec<Context> = {
  words: ["usage"],
  summary: "a month's GPU time and what it costs, per tier and GPU model (needs billing:read)",
  usage: "[--month YYYY-MM]",
  positionals: { min: 0, max: 0 },
  options: {
    month: { type: "string", value: "YYYY-MM", description: "a calendar month in UTC (default: this one)" },
  },
  examples: ["scalar usage", "scalar usage --month 2026-10 --json"],
  async run(ctx, { values }) {
    const month = stringOption(values, "month");
    if (month !== undefined && !/^\d{4}-(0[1-9]|1[0-2])$/.test(month)) {
      throw new UsageError(`--month takes a month as YYYY-MM, such as 2026-11, not \`${month}\``);
    }
    const conn = ctx.connection();
    const result = await ok(conn, conn.api.GET("/v1/usage", { params: { query: month ? { month } : {} } }));
    if (ctx.json) {
      printJson(ctx, result);
      return EXIT.ok;
    }
    if (result.lines.length > 0) ctx.io.stdout(usageTable(result));
    const running = result.lines.some((l) => l.state === "running");
    ctx.io.stdout(
      `${result.month}: ${dollars(result.total_cents)} for ${gpuHours(result.total_gpu_seconds)} GPU-hours${
        running ? ` (running work counted up to ${result.as_of})` : ""
      }\n`,
    );
    return EXIT.ok;
  },
};

function invoicesTable(rows: Invoice[]): string {
  return table(
    ["ID", "MONTH", "STATUS", "TOTAL", "NUMBER", "PAY AT"],
    rows.map((i) => [i.id, i.month, i.status, dollars(i.total_cents), i.number ?? "-", i.hosted_invoice_url ?? "-"]),
  );
}

export const invoicesLs: CommandSpec<Context> = {
  words: ["invoices", "ls"],
  summary: "the account's monthly invoices, newest first (needs billing:read)",
  usage: "[--limit N] [--cursor C]",
  positionals: { min: 0, max: 0 },
  options: { ...PAGE_OPTIONS },
  examples: ["scalar invoices ls", "scalar invoices ls --json"],
  async run(ctx, { values }) {
    const conn = ctx.connection();
    const page = await ok(conn, conn.api.GET("/v1/invoices", { params: { query: pageQuery(values) } }));
    printPage(ctx, page, { command: invoicesLs, values, none: "no invoices yet", table: invoicesTable });
    return EXIT.ok;
  },
};
