output "nodes" {
  description = "Every node: role, VMID, address."
  value = {
    for name, vm in castle_proxmox_vm.node : name => {
      role    = contains(keys(local.control_planes), name) ? "controlplane" : "worker"
      vm_id   = vm.vm_id
      address = vm.ipv4_address
    }
  }
}

output "endpoint" {
  description = "The Kubernetes API behind the VIP."
  value       = castle_talos_cluster.this.endpoint
}

output "kubeconfig_path" {
  description = "The admin kubeconfig, written with mode 0600: kubectl --kubeconfig <path> get nodes"
  value       = castle_talos_cluster.this.kubeconfig_file
}

output "kubeconfig" {
  description = "Admin kubeconfig (also in the file at kubeconfig_path)."
  value       = castle_talos_cluster.this.kubeconfig
  sensitive   = true
}

output "talosconfig" {
  description = "talosconfig for talosctl."
  value       = castle_talos_cluster.this.talosconfig
  sensitive   = true
}

output "infisical_secret" {
  description = "Where the kubeconfig lives in Infisical."
  value       = castle_kubeconfig_secret.this.id
}
