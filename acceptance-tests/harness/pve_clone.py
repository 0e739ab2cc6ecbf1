"""A clone in progress as real PVE shows it, and the node task list's filters that find it.

fakepve writes the new VM's whole config (name, notes) when `POST .../clone` is answered. PVE
does not (qemu-server `src/PVE/API2/Qemu.pm` clone_vm, 9.2.6):
- the `qmclone` worker first writes a temporary config file, `# qmclone temporary file` and
  `lock: clone`, which `GET .../config` reads back as `lock: clone` and the description
  ` qmclone temporary file\\n` (`src/PVE/QemuServer.pm` parse_vm_config: comment lines are the
  description); the name, notes and the rest are written only when the worker has cloned the
  drives (after each drive, in key order; fakepve copies a cloud-init drive as a CD-ROM, so the
  lab's template has one drive to clone and the temporary file lasts the whole copy, as it does
  on PVE for a template whose first drive is its disk). A cross-node clone's config stays on
  the template's node until the end (fakepve already does that);
- `status/current` and the node's VM list name such a VM `VM <vmid>` (`src/PVE/QemuServer.pm`
  vmstatus), and `/cluster/resources` shows what pvestatd last broadcast (pve-manager
  `PVE/API2Tools.pm` extract_vm_stats; `PVE/Service/pvestatd.pm` broadcasts every 10 s): the
  lab lists a clone as `VM <vmid>` while it runs and for those 10 PVE seconds after its task
  ended; only `lock` and `tags` come from the config (`PVE/API2/Cluster.pm` resources).

The node task list (pve-manager `PVE/API2/Tasks.pm` node_tasks) takes `source=active` (the
tasks still in the node's active list, running ones with status `RUNNING`; pve-common
`src/PVE/RESTEnvironment.pm` fork_worker puts a task there before the request is answered),
`typefilter` (the task type) and `userfilter` (a case-insensitive match inside the user);
fakepve ignores the three.

`slow_clones(secs)` makes every clone's copy take `secs` PVE seconds (a full clone of a large
disk), so a test can kill Terraform while a clone task runs.
"""

import asyncio
import hashlib
import json

from fakepve.server import USER, ok, params

# PVE seconds between two pvestatd broadcasts (pve-manager PVE/Service/pvestatd.pm $updatetime).
PVESTATD_SECS = 10
# What GET .../config answers for the temporary file of a clone in progress.
PLACEHOLDER = {'lock': 'clone', 'description': ' qmclone temporary file\n'}


class CloneInProgress(object):
    """Mixin of LabPve: a clone's temporary config, its listed name, the active task list."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        # VMIDs whose clone worker has not written their config yet.
        self.clone_placeholders = set()
        # VMID -> loop time until which /cluster/resources still shows the clone's old name.
        self.listed_as_placeholder = {}
        # PVE seconds every clone's copy takes.
        self.clone_secs = 0
        # PVE seconds before /cluster/resources shows a new clone's name: pvestatd's period, or
        # longer when pvestatd hangs (on a storage that does not answer, say).
        self.pvestatd_secs = PVESTATD_SECS

    def slow_clones(self, secs):
        """Every clone's copy takes `secs` PVE seconds from now on (0: as fast as fakepve)."""
        self.clone_secs = secs

    def slow_pvestatd(self, secs):
        """/cluster/resources shows each clone's name only `secs` PVE seconds after it ended."""
        self.pvestatd_secs = secs

    def _clone_in_progress(self, vm, body):
        """The clone worker's body, showing the temporary file until it is done."""
        self.clone_placeholders.add(vm.vmid)

        async def worker():
            try:
                await self.pause(self.clone_secs)
                return await body()
            finally:
                self.clone_placeholders.discard(vm.vmid)
                self.listed_as_placeholder[vm.vmid] = \
                    asyncio.get_running_loop().time() + self.pvestatd_secs * self.time_scale
        return worker

    def _listed_as_placeholder(self, vmid):
        if vmid in self.clone_placeholders:
            return True
        until = self.listed_as_placeholder.get(vmid)
        return until is not None and asyncio.get_running_loop().time() < until

    async def _config_get(self, request):
        vm = self._vm(request, 'VM.Audit')
        if vm.vmid not in self.clone_placeholders:
            return await super()._config_get(request)
        digest = hashlib.sha1(json.dumps(PLACEHOLDER, sort_keys=True).encode()).hexdigest()
        return ok(dict(PLACEHOLDER, digest=digest))

    def _vm_status(self, vm, listing=False):
        data = super()._vm_status(vm, listing)
        if vm.vmid in self.clone_placeholders:
            data['name'] = 'VM {0}'.format(vm.vmid)
            data.pop('tags', None)
        return data

    async def _resources(self, request):
        response = await super()._resources(request)
        data = json.loads(response.text)['data']
        for item in data:
            if item.get('type') != 'qemu' or not self._listed_as_placeholder(item['vmid']):
                continue
            item['name'] = 'VM {0}'.format(item['vmid'])
            if item['vmid'] in self.clone_placeholders:
                item.pop('tags', None)
        return ok(data)

    async def _task_list(self, request):
        p = await params(request)
        source = p.get('source') or 'archive'
        if source == 'active':
            node, user = request.match_info['node'], request[USER]
            audit = self.allowed(user, '/nodes/' + node, 'Sys.Audit')
            data = [dict(self._task_view(t, True), status='RUNNING') for t in self.tasklog
                    if t['node'] == node and t['status'] == 'running'
                    and (audit or self._task_owner(user, t))]
        else:
            data = json.loads((await super()._task_list(request)).text)['data']
        vmid, kind, who = p.get('vmid'), p.get('typefilter'), (p.get('userfilter') or '').lower()
        return ok([t for t in data if (not kind or t['type'] == kind) and who in t['user'].lower()
                   and (vmid in (None, '') or t['id'] == str(vmid))])
