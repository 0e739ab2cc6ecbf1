"""A terraform.tfstate emptied by a killed run (Terraform's local backend truncates the file before
it writes the new snapshot), on the flagship example with one control plane and one worker.

The next apply takes the escrowed secrets and adopts the VMs terraform.tfstate.backup lists
instead of cloning them again (a `-replace`, which only the state can carry out, is refused); a
destroy, which would see nothing and leave everything running, is refused with the command that
puts the backup back.
"""

import os
import shutil
import time

import pytest

from harness.flagship import Flagship

pytestmark = pytest.mark.acceptance


def empty_the_state_file(tf):
    """What a kill between Terraform's truncate and write leaves: the backup holds the state as
    the killed run found it, the state file is empty."""
    state = os.path.join(tf.workdir, 'terraform.tfstate')
    shutil.copyfile(state, state + '.backup')
    open(state, 'w').close()
    # Emptied by that earlier run, not by the next command's own rewrites.
    earlier = time.time() - 60
    os.utime(state, (earlier, earlier))


def test_an_emptied_state_file_adopts_the_vms_on_apply_and_a_destroy_is_refused_until_it_is_restored(tmp_path):
    lab = Flagship(tmp_path, time_scale=0.2)
    try:
        lab.edit('control_planes = 1\nworkers = 1\n', 'scale.auto.tfvars')
        lab.tf.apply(timeout=900)
        vms = lab.proxmox_vms()
        before = lab.tf.resources()

        empty_the_state_file(lab.tf)
        # A replacement asked for now would need the old VM's state to delete it: refused.
        replace = ' '.join(lab.tf.plan('-replace=castle_proxmox_vm.node["cp-1"]', expect_fail=True).split())
        assert 'castle cannot create VM home-cp-1 in its place: this command asks for a replacement' in replace, replace
        assert 'cp terraform.tfstate.backup terraform.tfstate terraform apply' in replace, replace
        out = ' '.join(lab.tf.apply(timeout=900).split())
        assert 'Adopted the cluster secrets escrowed in Infisical' in out, out
        assert out.count('a killed run emptied the state file, and its backup lists this VM') == 2, out
        # The same VMs, none cloned beside them, the same identity; the cluster converged.
        assert lab.proxmox_vms() == vms
        after = lab.tf.resources()
        for address, values in before.items():
            if address.startswith('castle_proxmox_vm.'):
                assert after[address]['id'] == values['id'], address
        assert after['castle_talos_secrets.this']['id'] == before['castle_talos_secrets.this']['id']
        lab.assert_cluster(1, 1)

        # A destroy over an emptied state file would destroy nothing and say so: refused, with
        # the command that puts the backup back; nothing is deleted.
        empty_the_state_file(lab.tf)
        refused = ' '.join(lab.tf.destroy(expect_fail=True).split())
        assert 'The state file was emptied by a killed run' in refused, refused
        assert 'terraform.tfstate.backup holds %d castle resources' % len(before) in refused, refused
        assert 'cp terraform.tfstate.backup terraform.tfstate terraform destroy' in refused, refused
        assert 'The state file was emptied' in lab.tf.plan('-destroy', expect_fail=True)
        assert lab.proxmox_vms() == vms

        shutil.copyfile(os.path.join(lab.tf.workdir, 'terraform.tfstate.backup'),
                        os.path.join(lab.tf.workdir, 'terraform.tfstate'))
        lab.tf.destroy()
        assert lab.proxmox_vms() == {}
    finally:
        lab.stop()
