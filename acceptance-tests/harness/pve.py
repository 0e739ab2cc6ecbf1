"""fakepve, served for castle's tests and lab.

`LabPve` is fakepve's `FakePve` (a PVE 9) made to answer as the Proxmox clusters people run:
- disk resize is modelled (fakepve answers it but changes nothing), with qemu-server's rules:
  sizes only grow, `+N` is relative, a cdrom cannot be resized, the call is a task that holds
  the VM lock;
- `answer_style = '8.3'` answers errors as PVE 8.0-8.3 do: the text only in the HTTP reason
  phrase, the body `{"data":null}` (plus `errors`);
- `fail_in_task` makes a request start a task that fails, as PVE's lock timeouts and VMID
  clashes do (they are raised inside the worker, not by the request);
- `GET .../config` applies pending changes unless `current=1`, task logs say their `total`,
  `nextid` keeps to the datacenter's `next-id` range, `/cluster/options` shows it;
- `revoke_tickets_after` expires every login ticket in the middle of a run, and `answers`
  records each request's status, so a test can check what the lab saw;
- a running task can be stopped (`DELETE .../tasks/{upid}`; a stopped clone leaves nothing),
  and an HA resource removed (`DELETE /cluster/ha/resources/vm:N`, Sys.Console on /);
- a clone in progress shows PVE's temporary config, no name and no notes, and the node task
  list filters running tasks by type and user (`harness/pve_clone.py`).

`ServedPve` runs one on its own event loop in a thread, so a test can inject faults
(`pve.fail`, `flaky_network`, `revoke_tickets`, per-VM timings) while Terraform talks to it.
"""

import asyncio
import json
import os
import threading

from aiohttp import web

from fakepve import FakePve, settle
from fakepve.certs import make_cert
from fakepve.lxc import format_size, parse_size
from fakepve.model import PveError, TaskError
from fakepve.qemu import drives_of, is_cdrom, join_drive, split_drive
from fakepve.server import USER, ok, params

from harness.pve_clone import CloneInProgress

TEMPLATE_ID = 9000
TEMPLATE_NAME = 'talos-nocloud'


class LabPve(CloneInProgress, FakePve):
    """FakePve answering as real PVE clusters do (see the module docstring)."""

    def __init__(self, *args, answer_style='9', **kwargs):
        super().__init__(*args, **kwargs)
        self.delayed_failures = {}
        self.task_failures = {}
        self.answer_style = answer_style
        # (method, path, status) of every answer, in order.
        self.answers = []
        # Logins that got a ticket.
        self.logins = 0
        self.revoke_after_writes = None
        # datacenter.cfg `next-id: lower=,upper=` (pve-manager PVE/API2/Cluster.pm nextid).
        self.next_id = (100, 1000 * 1000)
        # Enabled image storages that are offline (an NFS server that is down).
        self.offline_storages = set()
        # UPID -> event that stops the task's worker (DELETE /nodes/{node}/tasks/{upid}).
        self.task_stops = {}

    def fail_after(self, passes, method, suffix, **rule):
        """fail(method, suffix, **rule) once `passes` matching requests went through unharmed:
        a fault for the second read of a config, not the first."""
        self.delayed_failures[(method, suffix)] = [passes, rule]

    def fail_in_task(self, method, suffix, message, times=1):
        """The next `times` requests whose path ends with `suffix` start a task that ends in
        `TASK ERROR: message`, as real PVE reports what fails inside its workers: the clone's
        locks (qemu-server src/PVE/API2/Qemu.pm clone_vm: lock_config_full of the new id, the
        template's shared lock, pve-storage's storage lock), resize, start, shutdown, stop and
        destroy (each locks inside its worker)."""
        self.task_failures[(method, suffix)] = [times, message]

    def revoke_tickets_after(self, writes):
        """Forget every login ticket once `writes` more writes (logins aside) were answered: a ticket
        that expires in the middle of one `terraform apply` (PVE tickets live two hours)."""
        self.revoke_after_writes = writes

    def _build_app(self):
        app = super()._build_app()
        # Outermost: sees every answer as the client gets it.
        app.middlewares.insert(0, self._as_real_pve)
        return app

    @web.middleware
    async def _as_real_pve(self, request, handler):
        response = await handler(request)
        self.answers.append((request.method, request.path, response.status))
        if request.path.endswith('/access/ticket') and response.status == 200:
            self.logins += 1
        if request.method != 'GET' and self.revoke_after_writes is not None \
                and not request.path.endswith('/access/ticket'):
            self.revoke_after_writes -= 1
            if self.revoke_after_writes <= 0:
                self.revoke_after_writes = None
                self.revoke_tickets()
        if self.answer_style == '8.3' and response.status >= 400 \
                and getattr(response, 'content_type', None) == 'application/json':
            # pve-http-server before 5.2.0 (libpve-http-server-perl, "fix #6503", commit
            # 9a2112e): the JSON formatter (src/PVE/APIServer/Formatter/Standard.pm) writes
            # `data` and `errors` only; the message is the HTTP reason phrase.
            body = json.loads(response.text)
            out = {'data': None}
            if body.get('errors'):
                out['errors'] = body['errors']
            return web.json_response(out, status=response.status, reason=response.reason)
        return response

    async def _answer(self, request, handler, generic, path_node):
        for key, delayed in list(self.delayed_failures.items()):
            if request.method == key[0] and self._failure_matches(request, generic, key[1]):
                if delayed[0] <= 0:
                    del self.delayed_failures[key]
                    self.fail(key[0], key[1], **delayed[1])
                else:
                    delayed[0] -= 1
        for key, rule in list(self.task_failures.items()):
            if request.method == key[0] and self._failure_matches(request, generic, key[1]):
                rule[0] -= 1
                if rule[0] <= 0:
                    del self.task_failures[key]
                match = generic or self.resolve(request, '/api2/json')
                message = rule[1].format(**dict(await params(request), **match.params))
                return ok(await self._failed_task(request, path_node, message, match))
        return await super()._answer(request, handler, generic, path_node)

    async def _config_get(self, request):
        """qemu-server src/PVE/API2/Qemu.pm vm_config: pending changes applied, unless
        `current=1` asks for the config the VM runs with."""
        response = await super()._config_get(request)
        if (await params(request)).get('current') in ('1', 1, 'true'):
            return response
        vm = self._vm(request)
        data = json.loads(response.text)['data']
        for key, value in vm.pending.items():
            if value is None:
                data.pop(key, None)
            else:
                data[key] = value
        return ok(data)

    async def _task_log(self, request):
        """pve-manager PVE/API2/Tasks.pm read_task_log: lines `start..start+limit` counted from
        the first, and how many there are in `total`."""
        response = await super()._task_log(request)
        body = json.loads(response.text)
        body['total'] = len(self._get_task(request)['log'])
        return web.json_response(body)

    async def _qm_destroy(self, v, user):
        """qemu-server src/PVE/QemuServer.pm destroy_vm: with destroy-unreferenced-disks it
        activates every enabled images storage after freeing the referenced disks, and pve-storage
        src/PVE/Storage.pm activate_storage dies on one that is offline; the config stays."""
        if self.offline_storages and str(v.get('destroy-unreferenced-disks', '0')) in ('1', 'true', 'True'):
            vm = self.find(v['node'], v['vmid'])
            offline = sorted(self.offline_storages)[0]

            async def body():
                raise TaskError("storage '{0}' is not online".format(offline))
            return await self.task(vm.node, 'qmdestroy', vm.vmid, user, body, vm=vm)
        return await super()._qm_destroy(v, user)

    def _require_bridge(self, user, net):
        """SDN.Use on the NIC's bridge (and VLAN): pve-guest-common src/PVE/GuestHelpers.pm
        check_vnet_access / qemu-server src/PVE/QemuServer.pm check_bridge_access, checked by
        clone (for the template's NICs) and by PUT config (the old and the new NIC) since
        qemu-server 9cfd06d9 (PVE 8.0)."""
        _, props = split_drive(str(net))
        bridge = props.get('bridge')
        if not bridge:
            return
        path = '/sdn/zones/localnetwork/' + bridge
        if props.get('tag'):
            path += '/' + str(props['tag'])
        self.require(user, path, 'SDN.Use')

    def _config_priv(self, key):
        """qemu-server src/PVE/API2/Qemu.pm check_vm_modify_config_perm: the cloud-init options
        (ipconfigN, nameserver, searchdomain, ciuser, ...) need VM.Config.Cloudinit (or
        VM.Config.Network), not VM.Config.HWType as fakepve has them."""
        if key in ('nameserver', 'searchdomain', 'ciuser', 'cipassword', 'citype', 'ciupgrade',
                   'sshkeys', 'cicustom') or (key.startswith('ipconfig') and key[8:].isdigit()):
            return 'VM.Config.Cloudinit'
        return super()._config_priv(key)

    async def _qm_clone(self, v, user):
        template = self.find(v['node'], v['vmid'])
        for key, value in sorted(template.config.items()):
            if key.startswith('net') and key[3:].isdigit():
                self._require_bridge(user, value)
        target = v.get('target')
        if target and target != template.node:
            # qemu-server src/PVE/API2/Qemu.pm clone_vm ($check_storage_access_clone): `target`
            # needs every volume of the source, cloud-init drive and ISOs included, on shared
            # storage. local and local-lvm are local to each node, as in PVE.
            for _key, volume, _props in drives_of(template.config):
                storage = volume.split(':')[0]
                if ':' in volume and not self.storages.get(storage, {}).get('shared'):
                    raise PveError(500, "can't clone VM to node '{0}' (VM uses local storage)".format(target))
        return await super()._qm_clone(v, user)

    async def _config_put(self, request):
        changed = [(k, v) for k, v in (await params(request)).items() if k.startswith('net') and k[3:].isdigit()]
        if changed:
            vm = self._vm(request)
            for key, value in changed:
                self._require_bridge(request[USER], value)
                if key in vm.config:
                    self._require_bridge(request[USER], vm.config[key])
        return await super()._config_put(request)

    async def task(self, node, ttype, tid, user, body, vm=None, lock=True, log=()):
        """fakepve's task, stoppable as PVE's workers are: pve-manager PVE/API2/Tasks.pm
        stop_task signals the worker, whose die handler ends it with `interrupted by signal`.
        A clone's failure path then frees the volumes it allocated and removes the new config
        (qemu-server src/PVE/API2/Qemu.pm clone_vm), so a stopped clone leaves nothing."""
        stop = asyncio.Event()
        if ttype == 'qmclone' and vm is not None:
            body = self._clone_in_progress(vm, body)

        async def stoppable():
            work = asyncio.ensure_future(body())
            halt = asyncio.ensure_future(stop.wait())
            await asyncio.wait({work, halt}, return_when=asyncio.FIRST_COMPLETED)
            if work.done():
                halt.cancel()
                return work.result()
            work.cancel()
            try:
                await work
            except BaseException:  # the cancelled worker: its outcome no longer counts
                pass
            if ttype == 'qmclone' and vm is not None:
                self._undo_clone(vm)
            raise TaskError('clone failed: interrupted by signal' if ttype == 'qmclone'
                            else 'interrupted by signal')
        upid = await super().task(node, ttype, tid, user, stoppable, vm=vm, lock=lock, log=log)
        self.task_stops[upid] = stop
        return upid

    def _undo_clone(self, new):
        for _key, volume, _props in drives_of(new.config):
            if 'vm-{0}-'.format(new.vmid) in volume:
                self._qm_free(volume)
        if new in self.vms:
            self.vms.remove(new)

    async def _task_stop(self, v, user):
        """DELETE /nodes/{node}/tasks/{upid} (pve-manager PVE/API2/Tasks.pm stop_task): its
        owner, or Sys.Modify on the node, may stop a running task."""
        task = self.tasks.get(v['upid'])
        if task is None or task['node'] != v['node']:
            raise PveError(500, "unable to parse worker upid '{0}'".format(v['upid']))
        if not self._task_owner(user, task):
            self.require(user, '/nodes/' + task['node'], 'Sys.Modify')
        stop = self.task_stops.get(v['upid'])
        if stop is not None and task['status'] == 'running':
            stop.set()
        return None

    async def _ha_remove(self, v, user):
        """DELETE /cluster/ha/resources/{sid} (pve-ha-manager src/PVE/API2/HA/Resources.pm
        delete): needs Sys.Console on /; the guest leaves HA management in whatever state it is."""
        self.require(user, '/', 'Sys.Console')
        sid = str(v['sid'])
        vmid = int(sid.split(':')[-1])
        vm = next((g for g in self.vms if g.vmid == vmid), None)
        if vm is None or not vm.ha_managed:
            raise PveError(500, "service 'vm:{0}' is not HA managed".format(vmid))
        vm.ha_state = None
        return None

    def _routes_lab_tasks_and_ha(self):
        return [('DELETE', '/nodes/{node}/tasks/{upid}', self._task_stop),
                ('DELETE', '/cluster/ha/resources/{sid}', self._ha_remove)]

    def _routes_cluster(self):
        return [('GET', '/cluster/nextid', self._nextid), ('GET', '/cluster/options', self._options)]

    async def _nextid(self, v, user):
        """pve-manager PVE/API2/Cluster.pm nextid: the first free id in datacenter.cfg's
        `next-id` range, or the asked one if no guest has it (the range is not checked then)."""
        if v.get('vmid') not in (None, ''):
            return await super()._nextid(v, user)
        lower, upper = self.next_id
        taken = set(vm.vmid for vm in self.vms) | set(ct.vmid for ct in self.cts)
        for vmid in range(lower, upper):
            if vmid not in taken:
                return str(vmid)
        raise PveError(500, 'unable to get any free VMID in range [{0}, {1}]'.format(lower, upper))

    async def _options(self, v, user):
        """GET /cluster/options: datacenter.cfg; needs Sys.Audit on / (PVE/API2/Cluster.pm)."""
        self.require(user, '/', 'Sys.Audit')
        lower, upper = self.next_id
        return {'next-id': {'lower': str(lower), 'upper': str(upper)}}

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


def add_talos_template(pve, node='pve1', vmid=TEMPLATE_ID, name=TEMPLATE_NAME, disk_gb=4, disk_size=None,
                       storage='local-lvm'):
    """A Talos nocloud template as people prepare it: one scsi disk, a cloud-init drive, virtio NIC.
    disk_size is the disk's `size=` as PVE wrote it (e.g. `10240M`), else `<disk_gb>G`."""
    return pve.add_vm(vmid, name, node=node, template=True, config={
        'scsi0': '{0}:base-{1}-disk-0,size={2}'.format(storage, vmid, disk_size or '%dG' % disk_gb),
        'ide2': '{0}:vm-{1}-cloudinit,media=cdrom'.format(storage, vmid),
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

    def __init__(self, tmpdir, host='127.0.0.1', port=0, time_scale=0.0, user='root@pam', password='secret',
                 answer_style='9'):
        os.makedirs(str(tmpdir), exist_ok=True)
        self.certfile, self.keyfile, _ = make_cert(str(tmpdir), hosts=(host,))
        self.pve = LabPve(user=user, password=password, host=host, port=port, answer_style=answer_style)
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
