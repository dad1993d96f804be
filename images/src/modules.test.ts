import { describe, expect, it } from "vitest";
import { loadOrder, moduleName, parseModulesDep } from "./modules.js";

const DEP = `kernel/fs/ext4/ext4.ko: kernel/lib/crc16.ko kernel/fs/mbcache.ko kernel/fs/jbd2/jbd2.ko
kernel/fs/jbd2/jbd2.ko:
kernel/fs/mbcache.ko:
kernel/lib/crc16.ko:
kernel/drivers/virtio/virtio_ring.ko:
kernel/drivers/virtio/virtio.ko: kernel/drivers/virtio/virtio_ring.ko
kernel/drivers/virtio/virtio_mmio.ko: kernel/drivers/virtio/virtio.ko kernel/drivers/virtio/virtio_ring.ko
kernel/drivers/block/virtio_blk.ko: kernel/drivers/virtio/virtio.ko kernel/drivers/virtio/virtio_ring.ko
kernel/net/vmw_vsock/vsock.ko:
kernel/net/vmw_vsock/vmw_vsock_virtio_transport_common.ko: kernel/net/vmw_vsock/vsock.ko
kernel/net/vmw_vsock/vmw_vsock_virtio_transport.ko: kernel/net/vmw_vsock/vmw_vsock_virtio_transport_common.ko kernel/net/vmw_vsock/vsock.ko kernel/drivers/virtio/virtio.ko kernel/drivers/virtio/virtio_ring.ko
kernel/crypto/crc32c-generic.ko.xz:
`;

describe("module load order", () => {
  const dep = parseModulesDep(DEP);

  it("puts every module after its dependencies, each once", () => {
    const { order, missing } = loadOrder(dep, ["virtio_mmio", "virtio_blk", "vmw_vsock_virtio_transport", "ext4"]);
    expect(missing).toEqual([]);
    expect(new Set(order).size).toBe(order.length);
    const pos = (m: string) => order.findIndex((p) => moduleName(p) === m);
    expect(pos("virtio_ring")).toBeLessThan(pos("virtio"));
    expect(pos("virtio")).toBeLessThan(pos("virtio_mmio"));
    expect(pos("vsock")).toBeLessThan(pos("vmw_vsock_virtio_transport_common"));
    expect(pos("vmw_vsock_virtio_transport_common")).toBeLessThan(pos("vmw_vsock_virtio_transport"));
    for (const d of ["crc16", "mbcache", "jbd2"]) expect(pos(d)).toBeLessThan(pos("ext4"));
  });

  it("treats - and _ alike and keeps compressed names", () => {
    expect(loadOrder(dep, ["crc32c-generic"]).order).toEqual(["kernel/crypto/crc32c-generic.ko.xz"]);
  });

  it("reports modules it does not know instead of skipping them silently", () => {
    expect(loadOrder(dep, ["virtio_blk", "no_such_mod"]).missing).toEqual(["no_such_mod"]);
  });

  it("detects dependency loops", () => {
    const loop = parseModulesDep("a.ko: b.ko\nb.ko: a.ko\n");
    expect(() => loadOrder(loop, ["a"])).toThrow(/loop/);
  });
});
