terraform {
  required_providers {
    castle = {
      source  = "castle-lab/castle"
      version = "~> 0.1"
    }
  }
}

provider "castle" {
  proxmox {
    endpoint    = "https://pve.example:8006"
    api_token   = var.proxmox_api_token # terraform@pve!castle=<secret>
    ca_cert_pem = file(var.proxmox_ca_cert_file)
  }

  # Or leave the block empty and set INFISICAL_UNIVERSAL_AUTH_CLIENT_ID and
  # INFISICAL_UNIVERSAL_AUTH_CLIENT_SECRET.
  infisical {
    client_id     = var.infisical_client_id
    client_secret = var.infisical_client_secret
  }
}

variable "proxmox_api_token" {
  type      = string
  sensitive = true
}

variable "proxmox_ca_cert_file" {
  description = "A copy of /etc/pve/pve-root-ca.pem."
  type        = string
}

variable "infisical_client_id" {
  type = string
}

variable "infisical_client_secret" {
  type      = string
  sensitive = true
}
