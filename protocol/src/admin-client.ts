// The admin API client every tool uses (CLI, web shell, tests): one connection to qvmd's socket,
// unary calls as promises that reject with QvmError, streams as grpc-js duplex objects.
import { credentials, Metadata, type ClientDuplexStream, type ClientReadableStream, type ServiceError } from "@grpc/grpc-js";
import * as admin from "./gen/qvm/admin/v1/admin.js";
import { fromGrpcError } from "./grpc-status.js";
import { adminSocketPath } from "./paths.js";

export type AdminExecStream = ClientDuplexStream<admin.ExecRequest, admin.ExecResponse>;

type Unary<Req, Res> = (req: Req, md: Metadata, opts: object, cb: (err: ServiceError | null, res: Res) => void) => unknown;

/** Admin replies are small except ListDomains with many domains and big consoles: 16 MiB. */
const MAX_ADMIN_MESSAGE = 16 * 1024 * 1024;

export class AdminClient {
  private readonly client: admin.QvmAdminClient;

  constructor(readonly socketPath: string = adminSocketPath()) {
    this.client = new admin.QvmAdminClient(`unix:${socketPath}`, credentials.createInsecure(), {
      "grpc.max_receive_message_length": MAX_ADMIN_MESSAGE,
      "grpc.max_send_message_length": MAX_ADMIN_MESSAGE,
      // Fail fast when qvmd is not there instead of retrying for the whole deadline.
      "grpc.enable_retries": 0,
    });
  }

  private call<Req, Res>(method: Unary<Req, Res>, req: Req, timeoutMs?: number): Promise<Res> {
    return new Promise((resolve, reject) => {
      const opts = timeoutMs ? { deadline: Date.now() + timeoutMs } : {};
      // grpc-js overloads: (request, metadata, options, callback).
      method.call(this.client, req, new Metadata(), opts, (err, res) => (err ? reject(fromGrpcError(err, this.socketPath)) : resolve(res)));
    });
  }

  getDaemonInfo = (timeoutMs = 5000) => this.call<admin.GetDaemonInfoRequest, admin.GetDaemonInfoResponse>(this.client.getDaemonInfo as never, {}, timeoutMs);
  listDomains = () => this.call<admin.ListDomainsRequest, admin.ListDomainsResponse>(this.client.listDomains as never, {});
  getDomain = (name: string) => this.call<admin.GetDomainRequest, admin.GetDomainResponse>(this.client.getDomain as never, { name });
  createDomain = (req: admin.CreateDomainRequest) => this.call<admin.CreateDomainRequest, admin.CreateDomainResponse>(this.client.createDomain as never, req);
  cloneDomain = (source: string, name: string) => this.call<admin.CloneDomainRequest, admin.CloneDomainResponse>(this.client.cloneDomain as never, { source, name });
  removeDomain = (name: string) => this.call<admin.RemoveDomainRequest, admin.RemoveDomainResponse>(this.client.removeDomain as never, { name });

  listProperties = (domain: string) => this.call<admin.ListPropertiesRequest, admin.ListPropertiesResponse>(this.client.listProperties as never, { domain });
  getProperty = (domain: string, name: string) => this.call<admin.GetPropertyRequest, admin.GetPropertyResponse>(this.client.getProperty as never, { domain, name });
  setProperty = (domain: string, name: string, value: string) =>
    this.call<admin.SetPropertyRequest, admin.SetPropertyResponse>(this.client.setProperty as never, { domain, name, value });
  resetProperty = (domain: string, name: string) => this.call<admin.ResetPropertyRequest, admin.ResetPropertyResponse>(this.client.resetProperty as never, { domain, name });

  listFeatures = (domain: string) => this.call<admin.ListFeaturesRequest, admin.ListFeaturesResponse>(this.client.listFeatures as never, { domain });
  setFeature = (domain: string, name: string, value: string) => this.call<admin.SetFeatureRequest, admin.SetFeatureResponse>(this.client.setFeature as never, { domain, name, value });
  removeFeature = (domain: string, name: string) => this.call<admin.RemoveFeatureRequest, admin.RemoveFeatureResponse>(this.client.removeFeature as never, { domain, name });
  listTags = (domain: string) => this.call<admin.ListTagsRequest, admin.ListTagsResponse>(this.client.listTags as never, { domain });
  addTag = (domain: string, tag: string) => this.call<admin.AddTagRequest, admin.AddTagResponse>(this.client.addTag as never, { domain, tag });
  removeTag = (domain: string, tag: string) => this.call<admin.RemoveTagRequest, admin.RemoveTagResponse>(this.client.removeTag as never, { domain, tag });

  startDomain = (name: string) => this.call<admin.StartDomainRequest, admin.StartDomainResponse>(this.client.startDomain as never, { name });
  shutdownDomain = (req: admin.ShutdownDomainRequest) => this.call<admin.ShutdownDomainRequest, admin.ShutdownDomainResponse>(this.client.shutdownDomain as never, req);
  killDomain = (name: string) => this.call<admin.KillDomainRequest, admin.KillDomainResponse>(this.client.killDomain as never, { name });
  pauseDomain = (name: string) => this.call<admin.PauseDomainRequest, admin.PauseDomainResponse>(this.client.pauseDomain as never, { name });
  unpauseDomain = (name: string) => this.call<admin.UnpauseDomainRequest, admin.UnpauseDomainResponse>(this.client.unpauseDomain as never, { name });

  importTemplates = () => this.call<admin.ImportTemplatesRequest, admin.ImportTemplatesResponse>(this.client.importTemplates as never, {});
  listVolumes = (domain: string) => this.call<admin.ListVolumesRequest, admin.ListVolumesResponse>(this.client.listVolumes as never, { domain });
  revertVolume = (req: admin.RevertVolumeRequest) => this.call<admin.RevertVolumeRequest, admin.RevertVolumeResponse>(this.client.revertVolume as never, req);
  configVolume = (req: admin.ConfigVolumeRequest) => this.call<admin.ConfigVolumeRequest, admin.ConfigVolumeResponse>(this.client.configVolume as never, req);
  resizeVolume = (req: admin.ResizeVolumeRequest) => this.call<admin.ResizeVolumeRequest, admin.ResizeVolumeResponse>(this.client.resizeVolume as never, req);
  checkPolicy = (req: admin.CheckPolicyRequest) => this.call<admin.CheckPolicyRequest, admin.CheckPolicyResponse>(this.client.checkPolicy as never, req);

  /** Registers an ask prompt: questions arrive on the stream; write answers by id. */
  askPrompt(): ClientDuplexStream<admin.AskAnswer, admin.AskQuestion> {
    return this.client.askPrompt();
  }

  /** A duplex stream; write `start` first. Stream errors are grpc-js errors: map them with fromGrpcError. */
  exec(): AdminExecStream {
    return this.client.exec();
  }

  console(): ClientDuplexStream<admin.ConsoleRequest, admin.ConsoleResponse> {
    return this.client.console();
  }

  watchEvents(domain = ""): ClientReadableStream<admin.Event> {
    return this.client.watchEvents({ domain });
  }

  close(): void {
    this.client.close();
  }
}
