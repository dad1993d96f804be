// The admin API client every tool uses (CLI, web shell, tests): one connection to qvmd's socket
// and one method per RPC, derived from the service definition ts-proto generates from
// admin.proto, so an RPC added there needs no edit here. Unary calls take the request message and
// return a promise that rejects with QvmError; streams are grpc-js streams whose errors the
// caller turns into QvmError with errorOf().
import { Client, credentials, Metadata, type ClientDuplexStream, type ClientReadableStream } from "@grpc/grpc-js";
import { QvmError } from "./contracts/index.js";
import { QvmAdminService } from "./gen/qvm/admin/v1/admin.js";
import { fromGrpcError } from "./grpc-status.js";
import { adminSocketPath } from "./paths.js";

type Definition = typeof QvmAdminService;
export type AdminMethod = keyof Definition;

/** The part of a generated method descriptor the client uses. */
interface MethodShape<Req, Res> {
  path: string;
  requestStream: boolean;
  responseStream: boolean;
  requestSerialize: (value: Req) => Buffer;
  responseDeserialize: (bytes: Buffer) => Res;
}

// A message without fields is typed `{}`, which any value but null fits (`getDaemonInfo(3000)`
// would compile): such a request is `{}` and nothing else.
type RequestOf<M> = M extends MethodShape<infer Req, unknown> ? (keyof Req extends never ? Record<string, never> : Req) : never;
type ResponseOf<M> = M extends MethodShape<never, infer Res> ? Res : never;

export interface AdminCallOptions {
  /** Give up (DAEMON_UNAVAILABLE) when qvmd has not answered within this; default: no deadline, or DEFAULT_TIMEOUT_MS's. */
  timeoutMs?: number;
}

/** One client method per RPC, by the RPC's shape. (No RPC streams requests only: a client-only stream fails at construction.) */
type CallOf<M> = M extends { requestStream: false; responseStream: false }
  ? (req: RequestOf<M>, opts?: AdminCallOptions) => Promise<ResponseOf<M>>
  : M extends { requestStream: false; responseStream: true }
    ? (req: RequestOf<M>) => ClientReadableStream<ResponseOf<M>>
    : M extends { requestStream: true; responseStream: true }
      ? () => ClientDuplexStream<RequestOf<M>, ResponseOf<M>>
      : never;

export type AdminCalls = { [K in AdminMethod]: CallOf<Definition[K]> };

/** Deadlines of calls that must fail fast: a health probe answers at once or qvmd is in trouble. */
const DEFAULT_TIMEOUT_MS: ReadonlyMap<string, number> = new Map(Object.entries({ getDaemonInfo: 5000 } satisfies Partial<Record<AdminMethod, number>>));

/** Admin replies are small except ListDomains with many domains and big consoles: 16 MiB. */
const MAX_ADMIN_MESSAGE = 16 * 1024 * 1024;

const methods: Readonly<Record<string, MethodShape<never, unknown>>> = QvmAdminService;

/** The names of the unary calls (promises), as opposed to streams and the client's own members. */
export const ADMIN_UNARY_CALLS: ReadonlySet<string> = new Set(
  Object.entries(methods)
    .filter(([, m]) => !m.requestStream && !m.responseStream)
    .map(([name]) => name),
);

function unaryCall<Req, Res>(channel: Client, socketPath: string, name: string, m: MethodShape<Req, Res>) {
  return (req: Req, opts: AdminCallOptions = {}): Promise<Res> =>
    new Promise((resolve, reject) => {
      const timeoutMs = opts.timeoutMs ?? DEFAULT_TIMEOUT_MS.get(name);
      const options = timeoutMs === undefined ? {} : { deadline: Date.now() + timeoutMs };
      channel.makeUnaryRequest(m.path, m.requestSerialize, m.responseDeserialize, req, new Metadata(), options, (err, res) => {
        if (err) reject(fromGrpcError(err, { socketPath, timeoutMs }));
        else if (res === undefined) reject(new QvmError("INTERNAL", `qvmd sent no reply to ${name}`));
        else resolve(res);
      });
    });
}

function serverStream<Req, Res>(channel: Client, m: MethodShape<Req, Res>) {
  return (req: Req): ClientReadableStream<Res> => channel.makeServerStreamRequest(m.path, m.requestSerialize, m.responseDeserialize, req, new Metadata());
}

function duplexStream<Req, Res>(channel: Client, m: MethodShape<Req, Res>) {
  return (): ClientDuplexStream<Req, Res> => channel.makeBidiStreamRequest(m.path, m.requestSerialize, m.responseDeserialize, new Metadata());
}

function bindCalls(channel: Client, socketPath: string): AdminCalls {
  const calls: Record<string, unknown> = {};
  for (const [name, m] of Object.entries(methods)) {
    if (!m.requestStream) calls[name] = m.responseStream ? serverStream(channel, m) : unaryCall(channel, socketPath, name, m);
    else if (m.responseStream) calls[name] = duplexStream(channel, m);
    else throw new Error(`admin RPC ${name} streams requests only, which AdminClient does not support yet`);
  }
  // Each entry was made from the descriptor of the same name, by its shape, as CallOf<> types it;
  // TypeScript cannot follow a mapped type through a loop, so this one assertion says so.
  return calls as AdminCalls;
}

// The calls are made at construction from the service definition; this interface gives the
// class their types (declaration merging).
export interface AdminClient extends AdminCalls {}

export class AdminClient {
  private readonly channel: Client;

  constructor(readonly socketPath: string = adminSocketPath()) {
    this.channel = new Client(`unix:${socketPath}`, credentials.createInsecure(), {
      "grpc.max_receive_message_length": MAX_ADMIN_MESSAGE,
      "grpc.max_send_message_length": MAX_ADMIN_MESSAGE,
      // Fail fast when qvmd is not there instead of retrying for the whole deadline.
      "grpc.enable_retries": 0,
    });
    Object.assign(this, bindCalls(this.channel, socketPath));
  }

  /** The QvmError a stream's "error" event stands for. */
  errorOf(err: unknown): QvmError {
    return fromGrpcError(err, { socketPath: this.socketPath });
  }

  close(): void {
    this.channel.close();
  }
}

export type AdminExecStream = ReturnType<AdminClient["exec"]>;
