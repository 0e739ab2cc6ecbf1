# A VM is imported by <node>/<vmid>.
terraform import 'castle_proxmox_vm.node["cp-1"]' pve1/105
