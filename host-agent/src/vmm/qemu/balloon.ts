// Giving a guest's free memory back to the host: a virtio-balloon device with free page reporting.
//
// The guest's virtio_balloon driver (loaded by udev from the modules volume) reports free blocks
// of 2 MiB and up (page_reporting_order 9) about two seconds after they are freed; QEMU punches
// them out of the guest RAM memfd (fallocate PUNCH_HOLE), which frees them for QEMU and for
// vhost-device-vsock's mapping of the same memfd alike. Measured under TCG (QEMU 7.2, memfd
// share=on, vhost-user-vsock; docs/memory.md): 200 MiB written to a tmpfs in a 400 MiB domain and
// removed gave 150-160 MiB back within 5 s; QEMU 7.2 does not turn discarding off for vhost-user
// (it does for VFIO, whose pinned RAM then simply stays, as without the device).
//
// Without a balancer nothing ever inflates the balloon: the device only carries the reports.
// QMP `balloon` (inflate, as Qubes' qmemman does to idle domains) was measured to work on the
// same setup and is what a later balancer would use; deflate-on-oom lets a guest take back
// ballooned pages before its OOM killer runs, so an inflate yields to the guest's own need.
//
// The device costs one virtio-mmio transport: sys-net's 14 nics, 3 disks and vsock make 19 of
// microvm's 24 with it (seen in the guest).

/** The balloon, on microvm's virtio-mmio bus. */
export const BALLOON_DEVICE = "virtio-balloon-device,id=balloon,free-page-reporting=on,deflate-on-oom=on";

/** `-device` arguments that put the balloon in a VM. */
export function balloonArgs(): string[] {
  return ["-device", BALLOON_DEVICE];
}
