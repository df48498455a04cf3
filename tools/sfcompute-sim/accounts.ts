/**
 * Accounts and money. Balance = credits − debits; standing buy orders hold their limit price
 * ("reserved … for open buy orders", reference §4.2), so available = balance − holds. Amounts are
 * integer cents. The ledger keeps every movement for inspection.
 */
import { SimError } from "./errors";

export interface AccountOptions {
  id?: string;
  token: string;
  /** Starting credit, cents. */
  balanceCents?: number;
  canBuy?: boolean;
  canSell?: boolean;
  frozen?: boolean;
}

export interface LedgerEntry {
  at: number;
  kind: "credit" | "buy" | "sell" | "fee" | "refund";
  /** Positive adds to the balance. */
  amountCents: number;
  ref: string;
}

export class Account {
  readonly id: string;
  readonly token: string;
  canBuy: boolean;
  canSell: boolean;
  frozen: boolean;
  readonly createdAt: number;
  updatedAt: number;
  private balance = 0;
  private readonly holds = new Map<string, number>();
  readonly ledger: LedgerEntry[] = [];

  constructor(options: AccountOptions & { id: string }, now: number) {
    this.id = options.id;
    this.token = options.token;
    this.canBuy = options.canBuy ?? true;
    this.canSell = options.canSell ?? true;
    this.frozen = options.frozen ?? false;
    this.createdAt = now;
    this.updatedAt = now;
    if (options.balanceCents) this.post(now, "credit", options.balanceCents, "initial");
  }

  get balanceCents(): number {
    return this.balance;
  }

  get heldCents(): number {
    let sum = 0;
    for (const v of this.holds.values()) sum += v;
    return sum;
  }

  get availableCents(): number {
    return this.balance - this.heldCents;
  }

  post(at: number, kind: LedgerEntry["kind"], amountCents: number, ref: string): void {
    if (!Number.isInteger(amountCents)) throw new Error(`amount must be integer cents: ${amountCents}`);
    this.balance += amountCents;
    this.ledger.push({ at, kind, amountCents, ref });
    this.updatedAt = at;
  }

  /** Debits a purchase; refuses (402/400 decided by the caller) when the available balance is short. */
  charge(at: number, amountCents: number, ref: string, releasingHold?: string): void {
    const held = releasingHold ? (this.holds.get(releasingHold) ?? 0) : 0;
    if (this.availableCents + held < amountCents)
      throw new SimError(400, "invalid_request_error", "Insufficient balance");
    if (releasingHold) this.releaseHold(releasingHold, at);
    this.post(at, "buy", -amountCents, ref);
  }

  placeHold(ref: string, amountCents: number, at: number): void {
    this.holds.set(ref, amountCents);
    this.updatedAt = at;
  }

  releaseHold(ref: string, at: number): void {
    if (this.holds.delete(ref)) this.updatedAt = at;
  }
}
