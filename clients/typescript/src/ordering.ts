// First come, first served per key: one operation in flight per id.
//
// Each call takes a turn on its key; a turn starts when the previous turn on
// that key is finished, and a turn is finished only when its operation can
// no longer be applied (its answer arrived, its stream broke, or it was never
// sent), not when its caller stopped waiting.

export class Turn {
  private resolveFinished!: () => void;
  readonly finished: Promise<void> = new Promise((resolve) => (this.resolveFinished = resolve));
  private done = false;

  constructor(
    private readonly order: KeyedOrder | undefined,
    private readonly key: string | undefined,
    private readonly previous: Promise<void> | undefined,
  ) {}

  /** Until the previous turn on this key is finished. */
  wait(): Promise<void> {
    return this.previous ?? Promise.resolve();
  }

  finish(): void {
    if (this.done) return;
    this.done = true;
    this.resolveFinished();
    if (this.order && this.key !== undefined) this.order.forget(this.key, this.finished);
  }

  /** For a turn given up before its operation was sent: the next turn must
   * still wait for the one before this. */
  finishAfterPrevious(): void {
    if (this.previous === undefined) this.finish();
    else void this.previous.then(() => this.finish());
  }
}

export class KeyedOrder {
  private readonly last = new Map<string, Promise<void>>();

  /** The caller's turn on `key`, behind earlier ones. Synchronous, so turns
   * follow the order calls are made. */
  take(key: string | undefined): Turn {
    if (key === undefined) return new Turn(undefined, undefined, undefined);
    const turn = new Turn(this, key, this.last.get(key));
    this.last.set(key, turn.finished);
    return turn;
  }

  /** Keys are client ids: drop them once idle so the map stays small. */
  forget(key: string, finished: Promise<void>): void {
    if (this.last.get(key) === finished) this.last.delete(key);
  }

  get size(): number {
    return this.last.size;
  }
}
