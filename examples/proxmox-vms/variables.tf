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

variable "name_prefix" {
  type    = string
  default = "talos-"
}

variable "control_planes" {
  type    = number
  default = 3
}

variable "workers" {
  type    = number
  default = 2
}

variable "subnet" {
  type    = string
  default = "10.0.0.0/24"
}

variable "first_host" {
  description = "Host number of the first node in the subnet."
  type        = number
  default     = 11
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

variable "disk_gb" {
  type    = number
  default = 20
}
