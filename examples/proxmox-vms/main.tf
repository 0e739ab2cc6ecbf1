# Five Talos-ready VMs (3 control planes, 2 workers) cloned from one template, with static
# addresses written to cloud-init, created in parallel.

terraform {
  required_providers {
    castle = {
      source = "castle-lab/castle"
    }
  }
}

provider "castle" {
  proxmox {
    endpoint    = var.proxmox_endpoint
    api_token   = var.proxmox_api_token
    username    = var.proxmox_username
    password    = var.proxmox_password
    ca_cert_pem = var.proxmox_ca_cert_file == null ? null : file(var.proxmox_ca_cert_file)
  }
}

locals {
  control_planes = { for i in range(var.control_planes) : "cp-${i + 1}" => cidrhost(var.subnet, var.first_host + i) }
  workers        = { for i in range(var.workers) : "w-${i + 1}" => cidrhost(var.subnet, var.first_host + var.control_planes + i) }
  nodes          = merge(local.control_planes, local.workers)
}

resource "castle_proxmox_vm" "node" {
  for_each = local.nodes

  node = var.proxmox_node
  name = "${var.name_prefix}${each.key}"

  clone {
    template_name = var.template_name
  }

  cores  = contains(keys(local.control_planes), each.key) ? 2 : 4
  memory = contains(keys(local.control_planes), each.key) ? 4096 : 8192

  disk {
    slot    = "scsi0"
    size_gb = var.disk_gb
  }

  network {
    bridge = var.bridge
  }

  ipv4 {
    address = "${each.value}/${split("/", var.subnet)[1]}"
    gateway = var.gateway
  }
  nameservers = var.nameservers

  tags = ["talos", contains(keys(local.control_planes), each.key) ? "controlplane" : "worker"]
}

output "nodes" {
  description = "Name, VMID and address of every VM."
  value = {
    for k, vm in castle_proxmox_vm.node : k => {
      vm_id   = vm.vm_id
      address = vm.ipv4_address
      mac     = vm.mac_address
    }
  }
}
