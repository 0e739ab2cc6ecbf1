variable "roles" {
  description = "Role of each node, by name: controlplane or worker."
  type        = map(string)
  default = {
    cp-1 = "controlplane"
    cp-2 = "controlplane"
    cp-3 = "controlplane"
    w-1  = "worker"
    w-2  = "worker"
  }
}

variable "cluster_name" {
  description = "Cluster name (kubeconfig and talosconfig context)."
  type        = string
  default     = "home"
}

variable "addresses" {
  description = "Static address with prefix of each node of local.roles, as the machine booted, e.g. { cp-1 = \"10.0.0.11/24\" }."
  type        = map(string)
}

variable "install_disks" {
  description = "Disk Talos installs to, for nodes where it is not /dev/sda."
  type        = map(string)
  default     = {}
}

variable "vip" {
  description = "Virtual IP the control planes share for the Kubernetes API, in their subnet."
  type        = string
}

variable "gateway" {
  description = "Default gateway of the nodes."
  type        = string
}

variable "nameservers" {
  description = "DNS servers of the nodes."
  type        = list(string)
  default     = []
}

variable "talos_version" {
  description = "The Talos release the machines booted, e.g. v1.12.0."
  type        = string
  default     = "v1.12.0"
}

variable "kubernetes_version" {
  description = "Kubernetes version."
  type        = string
  default     = "v1.33.2"
}

variable "extensions" {
  description = "Official system extensions (these two are what Longhorn needs)."
  type        = list(string)
  default     = ["siderolabs/iscsi-tools", "siderolabs/util-linux-tools"]
}

variable "create_timeout" {
  description = "How long creating the cluster may take (installs, reboots, bootstrap, health)."
  type        = string
  default     = "20m"
}
