# The lab (make demo / castle-lab): fakepve on loopback with public test credentials.
proxmox_endpoint     = "https://127.0.0.2:8006"
proxmox_username     = "root@pam"
proxmox_password     = "secret"
proxmox_ca_cert_file = "../../.lab/pve-ca.pem"
subnet               = "127.0.0.0/24"
first_host           = 211
gateway              = "127.0.0.1"
nameservers          = ["127.0.0.1"]
disk_gb              = 10
