variable "cluster_name" {
  type    = string
  default = "home"
}

# --- Proxmox -------------------------------------------------------------------------------

variable "proxmox_endpoint" {
  description = "Proxmox API URL, e.g. https://pve.example:8006."
  type        = string
}

variable "proxmox_api_token" {
  description = "API token USER@REALM!TOKENID=SECRET (or use username/password)."
  type        = string
  default     = null
  sensitive   = true
}

variable "proxmox_username" {
  type    = string
  default = null
}

variable "proxmox_password" {
  type      = string
  default   = null
  sensitive = true
}

variable "proxmox_ca_cert_file" {
  description = "Path of the CA certificate of the Proxmox API (e.g. a copy of /etc/pve/pve-root-ca.pem)."
  type        = string
  default     = null
}

variable "proxmox_node" {
  type    = string
  default = "pve1"
}

variable "template_name" {
  description = "Template made from the Talos nocloud image."
  type        = string
  default     = "talos-nocloud"
}

# --- Machines ------------------------------------------------------------------------------

variable "control_planes" {
  description = "Number of control planes (odd: 3 survive the loss of one)."
  type        = number
  default     = 3
}

variable "workers" {
  type    = number
  default = 2
}

variable "control_plane_cores" {
  type    = number
  default = 2
}

variable "control_plane_memory" {
  type    = number
  default = 4096
}

variable "worker_cores" {
  type    = number
  default = 4
}

variable "worker_memory" {
  type    = number
  default = 8192
}

variable "disk_gb" {
  type    = number
  default = 40
}

# --- Network -------------------------------------------------------------------------------

variable "subnet" {
  type    = string
  default = "10.0.0.0/24"
}

variable "first_host" {
  description = "Host number of cp-1 in the subnet; the other control planes follow."
  type        = number
  default     = 11
}

variable "first_worker_host" {
  description = "Host number of w-1 in the subnet; the other workers follow. Null puts them right after the control planes, so that adding a control plane would move every worker's address: set it if you may scale control planes."
  type        = number
  default     = null
}

variable "vip" {
  description = "Virtual IP of the Kubernetes API, free, in the subnet."
  type        = string
  default     = "10.0.0.10"
}

variable "gateway" {
  type    = string
  default = "10.0.0.1"
}

variable "nameservers" {
  type    = list(string)
  default = ["10.0.0.1"]
}

variable "bridge" {
  type    = string
  default = "vmbr0"
}

variable "vlan" {
  type    = number
  default = null
}

# --- Versions ------------------------------------------------------------------------------

variable "talos_version" {
  type    = string
  default = "v1.12.0"
}

variable "kubernetes_version" {
  description = "Kubernetes release, inside talos_version's window; null means the release's default (v1.35.0 for v1.12)."
  type        = string
  default     = null
}

# --- Infisical -----------------------------------------------------------------------------

variable "infisical_host" {
  type    = string
  default = null
}

variable "infisical_client_id" {
  type    = string
  default = null
}

variable "infisical_client_secret" {
  type      = string
  default   = null
  sensitive = true
}

variable "infisical_project_id" {
  type = string
}

variable "infisical_environment" {
  type    = string
  default = "prod"
}
