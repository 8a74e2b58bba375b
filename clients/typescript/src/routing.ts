// Which member to call: the leader, found through the gRPC health service.
//
// Every member reports `stockraft.v1.Inventory` SERVING once it is ready, and
// only the current leader reports `stockraft.v1.Leader` SERVING. Calls go to
// the leader when one is known (a follower forwards writes too, one hop
// slower, so any ready member is the next best), and the choice is made
// again after a call fails with UNAVAILABLE.
import { Channel, ChannelCredentials, Metadata } from "@grpc/grpc-js";
import { HealthCheckResponse_ServingStatus, HealthClient } from "./gen/health/v1/health";

export const LEADER_SERVICE = "stockraft.v1.Leader";
export const READY_SERVICE = "stockraft.v1.Inventory";
/** A probe of a member that does not answer this fast is not worth waiting on. */
const PROBE_TIMEOUT_MS = 1000;

/** The leader; else a ready member; else the address after `avoid` (a call
 * there waits for a leader on the server side). */
export function choose(addresses: string[], leader: Map<string, boolean>, ready: Map<string, boolean>,
                       avoid?: string): string {
  const found = addresses.find((a) => leader.get(a));
  if (found) return found;
  const candidate = addresses.find((a) => ready.get(a) && a !== avoid);
  if (candidate) return candidate;
  const index = avoid === undefined ? -1 : addresses.indexOf(avoid);
  return addresses[(index + 1) % addresses.length];
}

export class Router {
  private current?: string;
  private probing?: Promise<string>;
  private readonly health: Map<string, HealthClient>;

  /** `channels`: one per address, shared with the Inventory clients. */
  constructor(readonly addresses: string[], channels: Map<string, Channel>, credentials: ChannelCredentials) {
    this.health = new Map(addresses.map((a) =>
      [a, new HealthClient(a, credentials, { channelOverride: channels.get(a) })]));
    if (addresses.length === 1) this.current = addresses[0];
  }

  async target(): Promise<string> {
    return this.current ?? this.rediscover(undefined);
  }

  /** Choose again after `failed` let a call down; one probe round at a time,
   * and none when another caller has already moved on. */
  async rediscover(failed: string | undefined): Promise<string> {
    if (this.addresses.length === 1) return this.addresses[0];
    if (this.current !== undefined && this.current !== failed) return this.current;
    this.probing ??= (async () => {
      const [leader, ready] = await Promise.all([this.probe(LEADER_SERVICE), this.probe(READY_SERVICE)]);
      this.current = choose(this.addresses, leader, ready, failed);
      return this.current;
    })().finally(() => (this.probing = undefined));
    return this.probing;
  }

  private async probe(service: string): Promise<Map<string, boolean>> {
    const one = (client: HealthClient) =>
      new Promise<boolean>((resolve) => {
        client.check({ service }, new Metadata(), { deadline: Date.now() + PROBE_TIMEOUT_MS }, (error, answer) =>
          // Down, or a server that does not know the service name: no.
          resolve(!error && answer.status === HealthCheckResponse_ServingStatus.SERVING));
      });
    const answers = await Promise.all([...this.health.values()].map(one));
    return new Map([...this.health.keys()].map((a, i) => [a, answers[i]]));
  }

  close(): void {
    for (const client of this.health.values()) client.close();
  }
}
