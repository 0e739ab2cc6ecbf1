# The lab (castle-lab up / make demo): every service on loopback with public test credentials.
proxmox_endpoint     = "https://127.0.0.2:8006"
proxmox_username     = "root@pam"
proxmox_password     = "secret"
proxmox_ca_cert_file = "../../.lab/pve-ca.pem"

subnet     = "127.0.0.0/24"
first_host = 211
# Workers from .221 on: control planes can be added (.214, ...) without moving a worker.
first_worker_host = 221
vip               = "127.0.0.210"
gateway           = "127.0.0.1"
nameservers       = ["127.0.0.1"]
disk_gb           = 10

infisical_host          = "http://127.0.0.3:8200"
infisical_client_id     = "castle-lab-client"
infisical_client_secret = "castle-lab-secret"
infisical_project_id    = "castle-lab-project"
infisical_environment   = "dev"
