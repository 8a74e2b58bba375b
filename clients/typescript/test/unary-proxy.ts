// A gRPC proxy that forwards Inventory's unary calls and nothing else.
//
// It stands for a server (or a gateway in front of one) that does not carry
// `Stream`: calls to it get UNIMPLEMENTED there, which is what the client's
// fall-back to unary calls is for. Statuses pass through with their
// trailers, so typed errors keep their details.
import * as grpc from "@grpc/grpc-js";
import { OPERATIONS } from "../src/operations";

const bytes = (b: Buffer) => b;
const methodName = (name: string) => name[0].toUpperCase() + name.slice(1);

export class UnaryOnlyProxy {
  forwarded = 0;
  /** Requests seen, as bytes, in order (retries included). */
  readonly seen: Buffer[] = [];
  /** Statuses to answer instead of forwarding, one per request, first in
   * first out: [code, grpc-retry-pushback-ms or undefined]. */
  faults: Array<[grpc.status, string | undefined]> = [];
  private readonly server = new grpc.Server();
  private readonly upstream: grpc.Client;

  constructor(target: string) {
    this.upstream = new grpc.Client(target, grpc.credentials.createInsecure());
  }

  async start(): Promise<string> {
    const definition: Record<string, grpc.MethodDefinition<Buffer, Buffer>> = {};
    const handlers: grpc.UntypedServiceImplementation = {};
    for (const name of Object.keys(OPERATIONS)) {
      const path = `/stockraft.v1.Inventory/${methodName(name)}`;
      definition[name] = {
        path, requestStream: false, responseStream: false,
        requestSerialize: bytes, requestDeserialize: bytes, responseSerialize: bytes, responseDeserialize: bytes,
      };
      handlers[name] = (call: grpc.ServerUnaryCall<Buffer, Buffer>, callback: grpc.sendUnaryData<Buffer>) => {
        this.seen.push(call.request);
        const fault = this.faults.shift();
        if (fault) {
          const metadata = new grpc.Metadata();
          if (fault[1] !== undefined) metadata.set("grpc-retry-pushback-ms", fault[1]);
          callback({ code: fault[0], details: "a fault injected by the test proxy", metadata });
          return;
        }
        this.forwarded++;
        this.upstream.makeUnaryRequest(path, bytes, bytes, call.request, call.metadata, { deadline: call.getDeadline() },
          (error, answer) => (error ? callback({ ...error, metadata: error.metadata }) : callback(null, answer)));
      };
    }
    this.server.addService(definition, handlers);
    const port = await new Promise<number>((resolve, reject) =>
      this.server.bindAsync("127.0.0.1:0", grpc.ServerCredentials.createInsecure(), (e, p) => (e ? reject(e) : resolve(p))));
    return `127.0.0.1:${port}`;
  }

  stop(): void {
    this.server.forceShutdown();
    this.upstream.close();
  }
}
