import {
  to = castle_proxmox_vm.node["cp-1"]
  id = "pve1/105"
}
