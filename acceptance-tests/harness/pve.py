"""fakepve, served for castle's tests and lab.

`LabPve` is fakepve's `FakePve` with the one QEMU call castle needs that fakepve does not model:
disk resize (fakepve answers it but changes nothing). It follows qemu-server's rules: sizes only
grow, `+N` is relative, a cdrom cannot be resized, the call is a task that holds the VM lock.

`ServedPve` runs one on its own event loop in a thread, so a test can inject faults
(`pve.fail`, `flaky_network`, `revoke_tickets`, per-VM timings) while Terraform talks to it.
"""

import asyncio
import os
import threading

from fakepve import FakePve, settle
from fakepve.certs import make_cert
from fakepve.lxc import format_size, parse_size
from fakepve.model import PveError, TaskError
from fakepve.qemu import is_cdrom, join_drive, split_drive

TEMPLATE_ID = 9000
TEMPLATE_NAME = 'talos-nocloud'


class LabPve(FakePve):
    """FakePve plus a modelled `PUT /nodes/{node}/qemu/{vmid}/resize`, and `fail_after`."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.delayed_failures = {}

    def fail_after(self, passes, method, suffix, **rule):
        """fail(method, suffix, **rule) once `passes` matching requests went through unharmed:
        a fault for the second read of a config, not the first."""
        self.delayed_failures[(method, suffix)] = [passes, rule]

    async def _answer(self, request, handler, generic, path_node):
        for key, delayed in list(self.delayed_failures.items()):
            if request.method == key[0] and self._failure_matches(request, generic, key[1]):
                if delayed[0] <= 0:
                    del self.delayed_failures[key]
                    self.fail(key[0], key[1], **delayed[1])
                else:
                    delayed[0] -= 1
        return await super()._answer(request, handler, generic, path_node)

    def _routes_qemu(self):
        return super()._routes_qemu() + [('PUT', '/nodes/{node}/qemu/{vmid}/resize', self._qm_resize)]

    async def _qm_resize(self, v, user):
        node, vmid, disk, text = v['node'], int(v['vmid']), v['disk'], str(v['size'])
        vm = self.find(node, vmid)
        self._check_lock(vm)
        extend = text.startswith('+')
        request = parse_size(text.lstrip('+'))
        if request is None:
            raise PveError(400, 'Parameter verification failed.', {'size': 'invalid size string'})

        def plan():
            value = vm.config.get(disk)
            if value is None:
                raise PveError(500, "disk '{0}' does not exist".format(disk))
            volume, props = split_drive(value)
            if is_cdrom(volume, props):
                raise PveError(500, "you can't resize a cdrom")
            size = parse_size(props.get('size', '0')) or 0
            new = size + request if extend else request
            if new < size:
                raise PveError(500, 'shrinking disks is not supported')
            return volume, props, new
        plan()

        async def body():
            try:
                volume, props, new = plan()
            except PveError as e:
                raise TaskError(e.message) from e
            props['size'] = format_size(new)
            vm.config[disk] = join_drive(volume, props)
        return await self.task(node, 'resize', vmid, user, body, vm=vm)


def add_talos_template(pve, node='pve1', vmid=TEMPLATE_ID, name=TEMPLATE_NAME, disk_gb=4):
    """A Talos nocloud template as people prepare it: one scsi disk, a cloud-init drive, virtio NIC."""
    return pve.add_vm(vmid, name, node=node, template=True, config={
        'scsi0': 'local-lvm:base-{0}-disk-0,size={1}G'.format(vmid, disk_gb),
        'ide2': 'local-lvm:vm-{0}-cloudinit,media=cdrom'.format(vmid),
        'scsihw': 'virtio-scsi-single',
        'net0': 'virtio=BC:24:11:00:90:00,bridge=vmbr0',
        'cores': 1,
        'memory': 2048,
        'ostype': 'l26',
        'serial0': 'socket',
        'boot': 'order=scsi0',
    })


class ServedPve(object):
    """A LabPve on a private event loop in a daemon thread."""

    def __init__(self, tmpdir, host='127.0.0.1', port=0, time_scale=0.0, user='root@pam', password='secret'):
        os.makedirs(str(tmpdir), exist_ok=True)
        self.certfile, self.keyfile, _ = make_cert(str(tmpdir), hosts=(host,))
        self.pve = LabPve(user=user, password=password, host=host, port=port)
        self.pve.time_scale = time_scale
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self._run, name='fakepve', daemon=True)
        self.thread.start()
        self.call(self.pve.start(self.certfile, self.keyfile))

    def _run(self):
        asyncio.set_event_loop(self.loop)
        self.loop.run_forever()

    def call(self, coro, timeout=60):
        """Runs a coroutine on the fake's loop and returns its result."""
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def sync(self, fn, *args, **kwargs):
        """Runs a plain function on the fake's loop (its state is not thread-safe)."""
        async def run():
            return fn(*args, **kwargs)
        return self.call(run())

    @property
    def url(self):
        return self.pve.url

    @property
    def ca_pem(self):
        with open(self.certfile) as f:
            return f.read()

    def vms(self):
        """(vmid, name, node, status, config) of every non-template VM."""
        def snapshot():
            return [(vm.vmid, vm.name, vm.node, vm.status, dict(vm.config))
                    for vm in self.pve.vms if not vm.template]
        return self.sync(snapshot)

    def stop(self):
        try:
            self.call(settle())
            self.call(self.pve.stop())
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join(30)
