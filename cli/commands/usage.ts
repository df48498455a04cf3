/** `scalar usage [--month YYYY-MM]` (a month's GPU time and its cost), `scalar invoices ls` and `invoices get`. */
import { type Invoice, ok, type Usage } from "../api/client";
import { type CommandSpec, PAGE_OPTIONS, pageQuery, stringOption } from "../args";
import { type Context, printJson, printPage } from "../context";
import { EXIT, UsageError } from "../errors";
import { keyValues, table } from "../output";

const dollars = (cents: number) => `$${(cents / 100).toFixed(2)}`;
const gpuHours = (seconds: number) => (seconds / 3600).toFixed(2);

type Line = Invoice["lines"][number] & { state?: string };

/** Rated lines, as `usage` and `invoices get` show them (a STATE column when the lines have one). */
function linesTable(lines: Line[], withState: boolean): string {
  return table(
    ["TIER", "GPU", ...(withState ? ["STATE"] : []), "GPU-HOURS", "PER GPU-HOUR", "AMOUNT"],
    lines.map((l) => [
      l.tier,
      l.gpu_model,
      ...(withState ? [l.state ?? "-"] : []),
      gpuHours(l.gpu_seconds),
      dollars(l.cents_per_gpu_hour),
      dollars(l.amount_cents),
    ]),
  );
}

export function usageTable(usage: Usage): string {
  return linesTable(usage.lines, true);
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
    const paging = pageQuery(values);
    const conn = ctx.connection();
    const page = await ok(conn, conn.api.GET("/v1/invoices", { params: { query: paging } }));
    printPage(ctx, page, { command: invoicesLs, values, none: "no invoices yet", table: invoicesTable });
    return EXIT.ok;
  },
};

/** One invoice: its state in Stripe, collection so far, and its lines. */
export function invoiceDetails(i: Invoice): string {
  const attempts =
    i.payment_attempts > 0
      ? `${i.payment_attempts}${i.payment_error ? ` (last: ${i.payment_error})` : ""}${
          i.next_payment_attempt_at ? `; next ${i.next_payment_attempt_at}` : ""
        }`
      : null;
  const head = keyValues([
    ["id", i.id],
    ["month", i.month],
    ["status", i.status],
    ["number", i.number],
    ["total", `${dollars(i.total_cents)} ${i.currency.toUpperCase()}`],
    ["finalized", i.finalized_at],
    ["paid", i.paid_at],
    ["attempts", attempts],
    ["pay at", i.status === "open" || i.status === "uncollectible" ? i.hosted_invoice_url : null],
  ]);
  return i.lines.length > 0 ? `${head}\n${linesTable(i.lines, false)}` : head;
}

export const invoicesGet: CommandSpec<Context> = {
  words: ["invoices", "get"],
  summary: "show one invoice: status, payment attempts, payment page and its lines (needs billing:read)",
  usage: "ID",
  positionals: { min: 1, max: 1 },
  options: {},
  examples: ["scalar invoices get 5b0e9c8a-2f4d-4d7e-9a51-0c7f3e2b1a90", "scalar invoices get 5b0e9c8a-… --json"],
  async run(ctx, { positionals }) {
    const conn = ctx.connection();
    const id = positionals[0] as string;
    const invoice = await ok(conn, conn.api.GET("/v1/invoices/{id}", { params: { path: { id } } }));
    if (ctx.json) printJson(ctx, invoice);
    else ctx.io.stdout(invoiceDetails(invoice));
    return EXIT.ok;
  },
};
